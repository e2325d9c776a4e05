package agent_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/health"
	"github.com/nodexds/nodexds/internal/echo"
	"github.com/nodexds/nodexds/internal/metricstest"
	"github.com/nodexds/nodexds/internal/poll"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// localAndZone is be1 with one backend on this node and one in its zone.
func localAndZone(t *testing.T) (*world, *service, *backend, *backend) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	return w, be1, w.startBackend(be1, "on-a1", "a1"), w.startBackend(be1, "on-a2", "a2")
}

func TestNotServingEndpointIsAvoidedUntilItRecovers(t *testing.T) {
	w, _, local, _ := localAndZone(t)
	a := startAgent(t, w, withHealth(t, fastHealth))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")

	// The pod stays Ready in Kubernetes; only its health service says no.
	local.srv.Health.SetServingStatus("", notServing)
	eventually(t, cc, "on-a2")
	local.srv.Health.SetServingStatus("", serving)
	eventually(t, cc, "on-a1")
}

func TestKilledEndpointIsMarkedUnhealthyAndComesBack(t *testing.T) {
	w, _, local, _ := localAndZone(t)
	a := startAgent(t, w, withHealth(t, fastHealth))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")

	local.srv.Stop()
	eventually(t, cc, "on-a2")
	waitFor(t, "the agent marks the dead endpoint UNHEALTHY", func() bool {
		return metricValue(t, a, "nodexds_health_transitions_total", "unhealthy") >= 1
	})

	lis, err := net.Listen("tcp", local.addr)
	if err != nil {
		t.Fatal(err)
	}
	local.srv = echo.Serve(lis, "on-a1")
	t.Cleanup(local.srv.Stop)
	eventually(t, cc, "on-a1")
}

func TestBlackHoledEndpointCostsOneTimeoutNotAStall(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	local := w.startBackend(be1, "on-a1", "a1")
	w.startBackend(be1, "on-a2", "a2")
	// The local endpoint is reached through a proxy that can swallow
	// traffic without closing anything, like a dropped route.
	hole := startBlackHole(t, local.addr)
	local.addr = hole.addr
	// Only a timeout tells a black hole from a quiet server: a short one, so
	// that the test does not wait for fastHealth's long ones. Its verdict
	// does not depend on it: a busy machine that makes the healthy endpoint
	// miss it only delays the first "on-a1".
	cfg := fastHealth
	cfg.Timeout = time.Second
	a := startAgent(t, w, withHealth(t, cfg))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")

	hole.swallow()
	eventually(t, cc, "on-a2")
}

func TestEveryEndpointFailingIsServedAnywayFailOpen(t *testing.T) {
	w, _, local, zone := localAndZone(t)
	a := startAgent(t, w, withHealth(t, fastHealth))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")

	zone.srv.Health.SetServingStatus("", notServing)
	local.srv.Health.SetServingStatus("", notServing)
	waitFor(t, "fail-open is reported", func() bool { return testutil.ToFloat64(a.Metrics.HealthFailOpen) == 1 })
	// A broken health check must not be an outage: topology still applies.
	eventually(t, cc, "on-a1")

	zone.srv.Health.SetServingStatus("", serving)
	waitFor(t, "fail-open ends", func() bool { return testutil.ToFloat64(a.Metrics.HealthFailOpen) == 0 })
	eventually(t, cc, "on-a2")
}

func TestEndpointWithoutHealthServiceIsTreatedHealthy(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "on-a1", "a1", echo.WithoutHealth())
	a := startAgent(t, w, withHealth(t, fastHealth))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")
	waitFor(t, "the missing health service is reported once", func() bool {
		return metricValue(t, a, "nodexds_health_unimplemented_total") == 1
	})
	eventually(t, cc, "on-a1")
}

func TestHealthCheckOffAnnotationSkipsChecking(t *testing.T) {
	w, be1, local, _ := localAndZone(t)
	be1.Annotations = map[string]string{health.AnnotationCheck: "off"}
	local.srv.Health.SetServingStatus("", notServing)
	a := startAgent(t, w, withHealth(t, fastHealth))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")
	if n := metricValue(t, a, "nodexds_health_checked_endpoints"); n != 0 {
		t.Errorf("%v endpoints tracked, want 0 for a Service with checks off", n)
	}
}

func TestChecksFollowSubscriptions(t *testing.T) {
	w, _, _, _ := localAndZone(t)
	a := startAgent(t, w, withHealth(t, fastHealth))
	if n := metricValue(t, a, "nodexds_health_checked_endpoints"); n != 0 {
		t.Fatalf("%v endpoints checked before any client asked", n)
	}
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")
	waitFor(t, "both endpoints are checked", func() bool { return metricValue(t, a, "nodexds_health_checked_endpoints") == 2 })
	cc.Close()
	waitFor(t, "checks stop when the last client leaves", func() bool { return metricValue(t, a, "nodexds_health_checked_endpoints") == 0 })
}

// metricValue reads a metric from the agent's registry: the sum of its series
// whose label values include labelValues.
func metricValue(t testing.TB, a *testAgent, name string, labelValues ...string) float64 {
	t.Helper()
	v, err := metricstest.Sum(a.Registry, name, labelValues...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitFor waits until cond holds; see poll.Until.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, cond)
}

// blackHole is a TCP proxy that can stop forwarding while keeping every
// connection open.
type blackHole struct {
	addr string
	mu   sync.Mutex
	dead bool
}

func startBlackHole(t *testing.T, target string) *blackHole {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &blackHole{addr: lis.Addr().String()}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); up.Close() })
			go h.pipe(c, up)
			go h.pipe(up, c)
		}
	}()
	return h
}

func (h *blackHole) swallow() { h.mu.Lock(); h.dead = true; h.mu.Unlock() }

func (h *blackHole) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		h.mu.Lock()
		dead := h.dead
		h.mu.Unlock()
		if dead {
			io.Discard.Write(buf[:n])
			continue
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

// BenchmarkHealthFlipToClient is the time from a backend's health service
// flipping (the pod stays Ready) to a real grpc-go client's next RPC going
// where it should: NOT_SERVING → away to the zone tier, SERVING → back.
func BenchmarkHealthFlipToClient(b *testing.B) {
	w := newWorld(b)
	be1 := w.addService("default", "be1")
	local := w.startBackend(be1, "on-a1", "a1")
	w.startBackend(be1, "on-a2", "a2")
	a := startAgent(b, w, withHealth(b, health.DefaultConfig))
	cc := dial(b, a, "be1:8080")
	eventually(b, cc, "on-a1")
	eventually(b, cc, "on-a1") // both tiers' endpoints are checked by now

	var away, back []time.Duration
	until := func(want string) time.Duration {
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			if got := hits(cc, 1); got[want] == 1 {
				return time.Since(start)
			}
		}
		b.Fatalf("RPCs never reached %s", want)
		return 0
	}
	for b.Loop() {
		local.srv.Health.SetServingStatus("", notServing)
		away = append(away, until("on-a2"))
		local.srv.Health.SetServingStatus("", serving)
		back = append(back, until("on-a1"))
	}
	b.StopTimer()
	slicesSort(away)
	slicesSort(back)
	b.ReportMetric(float64(away[len(away)/2].Microseconds()), "p50-away-µs")
	b.ReportMetric(float64(away[len(away)*99/100].Microseconds()), "p99-away-µs")
	b.ReportMetric(float64(back[len(back)/2].Microseconds()), "p50-back-µs")
	b.ReportMetric(float64(back[len(back)*99/100].Microseconds()), "p99-back-µs")
}

// TestSmallServiceFlipsReachItsClientBesideA4000EndpointService: one client
// uses a Service of 4,000 endpoints, another a Service of two. The health
// budget is shared fairly (scaled down to 100 here, within the race
// detector's goroutine limit), so the small Service stays checked however
// far the big one goes beyond the budget: its endpoints are checked, not
// left to what Kubernetes says, and its local endpoint turning NOT_SERVING
// moves its client to the zone's, and back once it serves again. A budget
// the big Service could take all of (the LRU that sharing replaced) leaves
// the small one unchecked, and its flips unseen.
//
// The time a flip takes to reach the client is logged, not asserted: it is
// a latency, measured by BenchmarkHealthFlipToClient and the scale run.
func TestSmallServiceFlipsReachItsClientBesideA4000EndpointService(t *testing.T) {
	if testing.Short() {
		t.Skip("4,000 listeners")
	}
	w := newWorld(t)
	big := w.addService("default", "big")
	shared := w.startBackend(big, "big", "a2")
	for range 3999 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		shared.srv.ServeAlso(lis)
		w.mu.Lock()
		big.Backends = append(big.Backends, &backend{Name: "big", Node: "a2", Ready: true, srv: shared.srv, addr: lis.Addr().String()})
		w.mu.Unlock()
	}
	small := w.addService("default", "small")
	local, _ := w.startBackend(small, "small-a1", "a1"), w.startBackend(small, "small-a2", "a2")
	var debug string
	a := startAgent(t, w, withHealth(t, fastHealth), withDebug(t, &debug))

	// The big Service's client subscribes first, to far more than the
	// budget. A raw stream: a grpc-go client would also connect to all 4,000
	// endpoints, which under the race detector takes the machine.
	big4000 := rawADS(t, a.Addr, "test/big", xds.EndpointType, nil, "big.default.svc.cluster.local:8080")
	go func() { // read its pushes, as a client does
		for {
			if _, err := big4000.Recv(); err != nil {
				return
			}
		}
	}()
	smallClient := dialWith(t, bootstrap.Options{Server: a.Addr}, "small:8080")
	eventually(t, smallClient, "small-a1")
	waitFor(t, "the budget is spent", func() bool {
		n, err := metricstest.Sum(a.Registry, "nodexds_health_checked_endpoints")
		return err == nil && n == float64(fastHealth.MaxEndpoints)
	})

	// With the budget spent, and endpoints of the big Service beyond it,
	// both of the small Service's endpoints are checked (and found healthy).
	within(t, func() string {
		if n := metricValue(t, a, "nodexds_health_unchecked_endpoints"); n == 0 {
			return "no endpoint is beyond the budget"
		}
		var checked []string
		for _, s := range servicesPage(t, debug, "service=default/small").Services {
			for _, p := range s.Priorities {
				for _, e := range p.Endpoints {
					if e.Health == "HEALTHY" && e.Unchecked == "" {
						checked = append(checked, e.Pod)
					}
				}
			}
		}
		if len(checked) != 2 {
			return fmt.Sprintf("the small Service's checked, healthy endpoints are %v, want both", checked)
		}
		return ""
	})

	for _, flip := range []struct {
		status healthpb.HealthCheckResponse_ServingStatus
		want   string
	}{{notServing, "small-a2"}, {serving, "small-a1"}} {
		start := time.Now()
		local.srv.Health.SetServingStatus("", flip.status)
		waitFor(t, fmt.Sprintf("the small Service's client is on %s after its local endpoint turned %v", flip.want, flip.status), func() bool {
			return hits(smallClient, 1)[flip.want] == 1
		})
		t.Logf("%v: the small Service's client on %s after %v", flip.status, flip.want, time.Since(start).Round(time.Millisecond))
	}
}
