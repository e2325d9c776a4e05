package health

import (
	"testing"
	"time"
)

// A new endpoint's status is Unknown; its first result is taken at face
// value, so a client arriving now is not sent to a server that already says
// NOT_SERVING while a threshold is being reached.
func TestFirstResultCountsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status func(*healthServer)
		want   Status
	}{
		{"a server NOT_SERVING from the start is unhealthy after one Watch message", func(s *healthServer) { s.SetServingStatus("", notServing) }, Unhealthy},
		{"a SERVING server is healthy after one Watch message", func(*healthServer) {}, Healthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startHealthServer(t)
			tc.status(s)
			cfg := testConfig
			cfg.HealthyThreshold, cfg.UnhealthyThreshold = 3, 3
			p := startProber(t, cfg)
			p.Track("be1", []Target{s.Target})
			waitStatus(t, p, s.Target, tc.want)
			if n := p.metric(t, "nodexds_health_checks_total"); n != 1 {
				t.Errorf("%v results counted when the status was set, want the first one alone", n)
			}
		})
	}
}

// What was learned outlives the last client: an endpoint stays checked for
// Linger after no cluster lists it, so a client that comes back is served
// its current status, including a change made while nobody used it.
func TestEndpointStaysCheckedForLingerAfterTheLastClusterLeaves(t *testing.T) {
	s := startHealthServer(t)
	cfg := testConfig
	cfg.Linger = time.Hour
	p := startProber(t, cfg)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)
	p.TakeChanged()

	p.Track("be1", nil)
	if n := p.metric(t, "nodexds_health_lingering_endpoints"); n != 1 {
		t.Fatalf("%v endpoints lingering after the last cluster left, want 1", n)
	}
	s.SetServingStatus("", notServing)
	waitStatus(t, p, s.Target, Unhealthy)
	if got := p.TakeChanged(); len(got) != 0 {
		t.Errorf("clusters %v told of a lingering endpoint's change, want none: nobody lists it", got)
	}

	p.Track("be1", []Target{s.Target})
	if got := p.Status(s.Target); got != Unhealthy {
		t.Errorf("status %v when a cluster lists it again, want UNHEALTHY, learned while it lingered", got)
	}
	if n := p.metric(t, "nodexds_health_lingering_endpoints"); n != 0 {
		t.Errorf("%v endpoints lingering once listed again, want 0", n)
	}
	if accepted, _ := s.lis.counts(); accepted != 1 {
		t.Errorf("%d connections, want the one Watch connection kept throughout", accepted)
	}
}

func TestLingerEnds(t *testing.T) {
	s := startHealthServer(t)
	cfg := testConfig
	cfg.Linger = 50 * time.Millisecond
	p := startProber(t, cfg)
	p.Track("be1", []Target{s.Target})
	waitStatus(t, p, s.Target, Healthy)

	p.Track("be1", nil)
	waitFor(t, "the linger ends and its connection closes", func() bool { _, open := s.lis.counts(); return open == 0 })
	if got := p.Status(s.Target); got != Unknown {
		t.Errorf("status %v after the linger, want UNKNOWN", got)
	}
	for _, m := range []string{"nodexds_health_checked_endpoints", "nodexds_health_lingering_endpoints"} {
		if n := p.metric(t, m); n != 0 {
			t.Errorf("%s = %v after the linger, want 0", m, n)
		}
	}
}

// Lingering endpoints take only what the clusters in use leave of the
// budget: a cluster in use never loses a check to one nobody uses.
func TestLingeringEndpointsYieldTheBudget(t *testing.T) {
	old, used := startHealthServer(t), startHealthServer(t)
	cfg := testConfig
	cfg.Linger, cfg.MaxEndpoints = time.Hour, 1
	p := startProber(t, cfg)
	p.Track("old", []Target{old.Target})
	waitStatus(t, p, old.Target, Healthy)
	p.Track("old", nil)
	if n := p.metric(t, "nodexds_health_lingering_endpoints"); n != 1 {
		t.Fatalf("%v endpoints lingering with room in the budget, want 1", n)
	}

	p.Track("used", []Target{used.Target})
	if got := p.Unchecked("used"); got != nil {
		t.Errorf("endpoints %v of the cluster in use left unchecked, want none", got)
	}
	if n := p.metric(t, "nodexds_health_lingering_endpoints"); n != 0 {
		t.Errorf("%v endpoints lingering in a budget the cluster in use fills, want 0", n)
	}
	waitStatus(t, p, used.Target, Healthy)
	waitFor(t, "the lingering endpoint's connection closes", func() bool { _, open := old.lis.counts(); return open == 0 })
}
