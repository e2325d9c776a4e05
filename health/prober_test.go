package health

import (
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestWatchReportsStatusFlipsAndTellsTheCluster(t *testing.T) {
	s := startHealthServer(t)
	p := startProber(t, testConfig)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)
	waitFor(t, "the cluster is told", func() bool { return slices.Equal(p.TakeChanged(), []string{"be1"}) })

	s.SetServingStatus("", notServing)
	waitStatus(t, p, s.Target, Unhealthy)
	if got := p.TakeChanged(); !slices.Equal(got, []string{"be1"}) {
		t.Errorf("changed clusters %v, want [be1]", got)
	}
	s.SetServingStatus("", serving)
	waitStatus(t, p, s.Target, Healthy)
	if n := p.metric(t, "nodexds_health_checks_total", "watch", "ok"); n < 2 {
		t.Errorf("%v SERVING results from Watch, want both pushes (initial and recovery) seen on the stream", n)
	}
	if _, open := s.lis.counts(); open != 1 {
		t.Errorf("%d connections open, want the one Watch connection", open)
	}
}

func TestHealthServiceNameIsAskedFor(t *testing.T) {
	s := startHealthServer(t)
	s.SetServingStatus("be1.v1", notServing) // the whole server ("") stays SERVING
	p := startProber(t, testConfig)
	named := Target{Addr: s.Target.Addr, Service: "be1.v1"}
	p.Track("be1", []Target{named})
	waitStatus(t, p, named, Unhealthy)
	s.SetServingStatus("be1.v1", serving)
	waitStatus(t, p, named, Healthy)
}

// Today's thresholds count every result alike. A Watch push that does not
// reach its threshold is confirmed by Check calls: a status the server
// reverses before the confirmation is not acted on.
func TestWatchResultsHonourThresholds(t *testing.T) {
	t.Run("one NOT_SERVING push that Check does not confirm leaves the endpoint healthy", func(t *testing.T) {
		s := startScriptedServer(t, serving, serving)
		p := startProber(t, testConfig)
		p.Track("be1", []Target{s.Target})
		waitStatus(t, p, s.Target, Healthy)

		s.Push(notServing)
		waitFor(t, "the push is counted as a failure", func() bool { return p.metric(t, "nodexds_health_checks_total", "watch", "fail") == 1 })
		waitFor(t, "a Check confirms or refutes it", func() bool { return p.metric(t, "nodexds_health_checks_total", "check", "ok") >= 1 })
		if n := p.metric(t, "nodexds_health_transitions_total", "unhealthy"); n != 0 {
			t.Errorf("%v transitions to unhealthy after one failed result, want 0 below the threshold of 2", n)
		}
		if got := p.Status(s.Target); got != Healthy {
			t.Errorf("status %v, want HEALTHY", got)
		}
	})
	t.Run("a NOT_SERVING push that Check confirms makes the endpoint unhealthy at the threshold", func(t *testing.T) {
		s := startScriptedServer(t, serving, serving)
		p := startProber(t, testConfig)
		p.Track("be1", []Target{s.Target})
		waitStatus(t, p, s.Target, Healthy)

		s.Answer(notServing)
		s.Push(notServing)
		waitStatus(t, p, s.Target, Unhealthy)
		if w, c := p.metric(t, "nodexds_health_checks_total", "watch", "fail"), p.metric(t, "nodexds_health_checks_total", "check", "fail"); w != 1 || c != 1 {
			t.Errorf("unhealthy after %v Watch and %v Check failures, want 1 and 1 (threshold 2)", w, c)
		}
	})
	t.Run("a SERVING push needs the healthy threshold too", func(t *testing.T) {
		s := startScriptedServer(t, notServing, notServing)
		cfg := testConfig
		cfg.HealthyThreshold = 2
		p := startProber(t, cfg)
		p.Track("be1", []Target{s.Target})
		waitStatus(t, p, s.Target, Unhealthy) // the first result, at face value

		s.Answer(serving)
		s.Push(serving)
		waitStatus(t, p, s.Target, Healthy)
		if n := p.metric(t, "nodexds_health_checks_total", "check", "ok"); n < 1 {
			t.Errorf("healthy after %v Check answers, want the Watch push confirmed by one", n)
		}
	})
}

func TestServerWithoutWatchIsCheckedPeriodically(t *testing.T) {
	s := startHealthServer(t, withoutWatch())
	p := startProber(t, testConfig)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)
	s.SetServingStatus("", notServing)
	waitStatus(t, p, s.Target, Unhealthy)
	s.SetServingStatus("", serving)
	waitStatus(t, p, s.Target, Healthy)
	if n := p.metric(t, "nodexds_health_checks_total", "watch"); n != 0 {
		t.Errorf("%v Watch results from a server without Watch", n)
	}
	if n := p.metric(t, "nodexds_health_unimplemented_total"); n != 0 {
		t.Errorf("a server with Check counted as lacking the health service")
	}
	if accepted, _ := s.lis.counts(); accepted != 1 {
		t.Errorf("%d connections, want Check on the one connection Watch was refused on", accepted)
	}
}

func TestServerWithoutHealthServiceIsHealthyAndReportedOnce(t *testing.T) {
	s := startHealthServer(t, withoutHealth())
	p := startProber(t, testConfig)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)
	waitFor(t, "checking stops and its connection closes", func() bool { _, open := s.lis.counts(); return open == 0 })
	if n := p.metric(t, "nodexds_health_unimplemented_total"); n != 1 {
		t.Errorf("unimplemented counted %v times, want 1", n)
	}
	if accepted, _ := s.lis.counts(); accepted != 1 {
		t.Errorf("%d connections, want 1", accepted)
	}
}

// Only a timeout tells a silent server, or a hung one, from a slow one: the
// two tests below set a short one. Their verdicts cannot suffer from it: the
// server is dead, and a healthy phase a busy machine makes miss it only
// takes longer to pass.

func TestServerThatNeverAnswersIsUnhealthy(t *testing.T) {
	target := startSilentServer(t)
	cfg := testConfig
	cfg.Timeout = 500 * time.Millisecond
	p := startProber(t, cfg)
	p.Track("be1", []Target{target})
	waitStatus(t, p, target, Unhealthy)
	if n := p.metric(t, "nodexds_health_checks_total", "watch", "fail"); n != 1 {
		t.Errorf("%v Watch failures when it became unhealthy, want 1: a new endpoint's first result counts at once", n)
	}
}

func TestServerThatHangsWhileWatchedIsCaughtByLivenessChecks(t *testing.T) {
	s := startHealthServer(t)
	cfg := testConfig
	cfg.LivenessInterval, cfg.Timeout = 50*time.Millisecond, 500*time.Millisecond
	p := startProber(t, cfg)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)
	waitFor(t, "a liveness Check passes", func() bool { return p.metric(t, "nodexds_health_checks_total", "check", "ok") >= 1 })

	s.Hang() // the Watch stream stays open and says nothing
	waitStatus(t, p, s.Target, Unhealthy)
}

func TestKilledServerIsUnhealthyAndRecovers(t *testing.T) {
	s := startHealthServer(t)
	p := startProber(t, testConfig)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)

	s.grpc.Stop()
	waitStatus(t, p, s.Target, Unhealthy)

	lis, err := net.Listen("tcp", s.Target.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	waitStatus(t, p, s.Target, Healthy)
}

func TestUntrackedEndpointIsNoLongerChecked(t *testing.T) {
	s := startHealthServer(t)
	p := startProber(t, testConfig)
	p.Track("be1", []Target{s.Target})
	p.Track("be2", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)
	waitFor(t, "both clusters are told", func() bool { return len(p.TakeChanged()) == 2 })

	p.Track("be1", nil)
	if got := p.Status(s.Target); got != Healthy {
		t.Errorf("status %v while be2 still lists it, want HEALTHY", got)
	}
	p.Track("be2", nil)
	if got := p.Status(s.Target); got != Unknown {
		t.Errorf("status %v after every cluster left, want UNKNOWN", got)
	}
	waitFor(t, "its connection closes", func() bool { _, open := s.lis.counts(); return open == 0 })
	if n := p.metric(t, "nodexds_health_checked_endpoints"); n != 0 {
		t.Errorf("%v endpoints checked, want 0", n)
	}
}
