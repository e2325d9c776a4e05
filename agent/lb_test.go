package agent_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/internal/poll"
)

// hitsWith is hits with request headers.
func hitsWith(cc *grpc.ClientConn, n int, kv ...string) map[string]int {
	out := map[string]int{}
	for range n {
		out[hit(cc, kv...)]++
	}
	return out
}

// eventuallyWith is eventually for RPCs carrying headers kv.
func eventuallyWith(t testing.TB, cc *grpc.ClientConn, kv []string, want ...string) {
	t.Helper()
	eventuallyWithin(t, poll.Timeout, cc, kv, want...)
}

// eventuallyWithin is eventuallyWith with another deadline.
func eventuallyWithin(t testing.TB, timeout time.Duration, cc *grpc.ClientConn, kv []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	var last map[string]int
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		last = batch(10*max(len(want), 2), want, func() string { return hit(cc, kv...) })
		if slices.Equal(keys(last), want) {
			return
		}
	}
	t.Fatalf("RPCs with %v reached %v, want exactly %v", kv, last, want)
}

func pickerWorld(t *testing.T, fallback string) (*world, *service, map[string]*backend) {
	w := newWorld(t)
	be1 := w.addService("default", "be1", func(s *service) {
		s.Annotations = map[string]string{resources.AnnotationEndpointHeader: "x-target-pod"}
		if fallback != "" {
			s.Annotations[resources.AnnotationPickerFallback] = fallback
		}
	})
	be2 := w.addService("default", "be2")
	bs := map[string]*backend{}
	for _, b := range []struct{ name, node string }{{"l1", "a1"}, {"l2", "a1"}, {"z", "a2"}, {"far", "c1"}} {
		bs[b.name] = w.startBackend(be1, b.name, b.node)
	}
	bs["other"] = w.startBackend(be2, "other", "a1")
	return w, be1, bs
}

func TestEndpointPickerRoutesTaggedRequestsToThePickedMember(t *testing.T) {
	w, be1, bs := pickerWorld(t, "")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")

	eventually(t, cc, "l1", "l2")                                         // no header: normal, topology first
	eventuallyWith(t, cc, []string{"x-target-pod", "far"}, "far")         // by pod name, even in another region
	eventuallyWith(t, cc, []string{"x-target-pod", bs["z"].addr}, "z")    // by ip:port
	eventuallyWith(t, cc, []string{"x-target-pod", "nosuch"}, "l1", "l2") // not a member: normal balancing
	eventuallyWith(t, cc, []string{"x-target-pod", "other"}, "l1", "l2")  // another Service's pod is never picked
	eventuallyWith(t, cc, []string{"x-target-pod", bs["other"].addr}, "l1", "l2")

	// Membership follows the Service: once "far" is gone it cannot be picked.
	w.remove(be1, bs["far"])
	w.write()
	eventuallyWith(t, cc, []string{"x-target-pod", "far"}, "l1", "l2")
	for name, n := range hitsWith(cc, 40, "x-target-pod", "z") {
		if name != "z" {
			t.Errorf("%d RPCs picking z went to %s", n, name)
		}
	}
}

func TestEndpointPickerFailClosedRejectsNonMembers(t *testing.T) {
	w, _, _ := pickerWorld(t, "fail")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "l1", "l2")
	eventuallyWith(t, cc, []string{"x-target-pod", "far"}, "far")
	eventuallyWith(t, cc, []string{"x-target-pod", "nosuch"}, "ERR Unavailable")
	eventuallyWith(t, cc, []string{"x-target-pod", "other"}, "ERR Unavailable")
}

func TestPickedEndpointFailingHealthChecksIsNotPicked(t *testing.T) {
	w, _, bs := pickerWorld(t, "")
	a := startAgent(t, w, withHealth(t, fastHealth))
	cc := dial(t, a, "be1:8080")
	eventuallyWith(t, cc, []string{"x-target-pod", "z"}, "z")
	bs["z"].srv.Health.SetServingStatus("", notServing)
	eventuallyWith(t, cc, []string{"x-target-pod", "z"}, "l1", "l2")
	bs["z"].srv.Health.SetServingStatus("", serving)
	eventuallyWith(t, cc, []string{"x-target-pod", "z"}, "z")
}

func TestEndpointPickerIsRefusedAboveTheLimit(t *testing.T) {
	w, _, _ := pickerWorld(t, "")
	a := startAgent(t, w, func(o *serve.Options) { o.MaxPickerEndpoints = 3 })
	cc := dial(t, a, "be1:8080")
	eventuallyWith(t, cc, []string{"x-target-pod", "far"}, "l1", "l2")
	if n := testutil.ToFloat64(a.Metrics.AnnotationErrors.WithLabelValues(resources.AnnotationEndpointHeader)); n != 1 {
		t.Errorf("picker refusal reported %v times, want 1", n)
	}
}

// TestEndpointPickerAt500Endpoints documents the cost of picking in a
// 500-endpoint Service: resource sizes, and a real client's memory.
func TestEndpointPickerAt500Endpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	w := newWorld(t)
	big := w.addService("default", "big", func(s *service) {
		s.Annotations = map[string]string{resources.AnnotationEndpointHeader: "x-target-pod"}
	})
	target := w.startBackend(big, "big-real", "a1")
	// 499 more members that are never connected to successfully: addresses on
	// a closed port, enough to build every route, cluster and assignment.
	for i := range 499 {
		big.Backends = append(big.Backends, &backend{
			Name: fmt.Sprintf("big-%03d", i), Node: "a2", Ready: true,
			addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 200, byte(i%250 + 1)}), uint16(1000+i/250)).String(),
		})
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := startAgent(t, w)
	cc := dial(t, a, "big:8080")
	// The client takes 500 clusters and load assignments in: about a minute
	// under the race detector on a busy machine, hence the longer wait.
	start := time.Now()
	eventuallyWithin(t, 5*poll.Timeout, cc, []string{"x-target-pod", "big-real"}, "big-real")
	t.Logf("a client picking among 500 endpoints was served after %v", time.Since(start).Round(time.Millisecond))
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)

	// What clients receive (the same functions the agent builds with).
	var picks []resources.Pick
	for i := range 500 {
		picks = append(picks, resources.Pick{Values: []string{fmt.Sprintf("big-%03d", i), fmt.Sprintf("10.0.%d.%d:50051", i/250, i%250)}, Cluster: fmt.Sprintf("big.default.svc.cluster.local:8080|endpoint|10.0.%d.%d:50051", i/250, i%250)})
	}
	rds := proto.Size(resources.RouteConfig("big.default.svc.cluster.local:8080", "big.default.svc.cluster.local:8080", resources.DefaultLB, picks, ""))
	cds := proto.Size(resources.Cluster(picks[0].Cluster, resources.DefaultLB))
	t.Logf("500-endpoint picker: RDS %d KiB; per member one cluster (%d B) and one assignment; client+agent heap grew %.1f MiB",
		rds/1024, cds, float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20))
	if rds > 256<<10 {
		t.Errorf("route configuration is %d KiB: too big for 500 endpoints", rds/1024)
	}
	_ = target
}

func TestHashHeaderKeepsAKeyOnOnePodAcrossUnrelatedScaleUps(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1", func(s *service) {
		s.Annotations = map[string]string{resources.AnnotationHashHeader: "x-user"}
	})
	for i := range 4 {
		w.startBackend(be1, fmt.Sprintf("l%d", i), "a1")
	}
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "l0", "l1", "l2", "l3") // no key: hashed at random

	pinned := map[string]string{}
	used := map[string]bool{}
	for i := range 20 {
		user := fmt.Sprintf("user-%d", i)
		got := hitsWith(cc, 20, "x-user", user)
		if len(got) != 1 {
			t.Fatalf("%s went to %v, want one pod", user, got)
		}
		pinned[user] = keys(got)[0]
		used[pinned[user]] = true
	}
	if len(used) < 2 {
		t.Errorf("20 keys all hashed to %v: no spread", used)
	}

	// More pods in the zone tier: this node's ring does not change.
	for i := range 3 {
		w.startBackend(be1, fmt.Sprintf("z%d", i), "a2")
	}
	w.write()
	// The client has the new assignment once it ACKs one holding them.
	c := csds(t, debug)
	within(t, func() string {
		g := csdsConfig(t, c, "test/"+t.Name(), xds.EndpointType, be1Cluster)
		cla := resources.LoadAssignment("", nil, nil)
		if err := g.GetXdsConfig().UnmarshalTo(cla); err != nil || g.GetConfigStatus() != statusv3.ConfigStatus_SYNCED {
			return fmt.Sprintf("EDS %s: %v (%v)", be1Cluster, g.GetConfigStatus(), err)
		}
		if n := len(cla.GetEndpoints()); n != 2 {
			return fmt.Sprintf("the client ACKed %d priorities, want the node's and the zone's", n)
		}
		return ""
	})
	for user, pod := range pinned {
		if got := hitsWith(cc, 10, "x-user", user); len(got) != 1 || got[pod] != 10 {
			t.Errorf("%s moved from %s to %v after an unrelated scale-up", user, pod, got)
		}
	}
}

func TestOutlierDetectionEjectsABackendThatReturnsErrors(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1", func(s *service) {
		s.Annotations = map[string]string{resources.AnnotationOutlier: "failure-percentage=50,failure-percentage-min-hosts=3,failure-percentage-request-volume=5,interval=200ms,base-ejection-time=30s,max-ejection-percent=50"}
	})
	bad := w.startBackend(be1, "bad", "a1")
	w.startBackend(be1, "good1", "a1")
	w.startBackend(be1, "good2", "a1")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "bad", "good1", "good2")

	bad.srv.SetFailing(true)
	eventually(t, cc, "good1", "good2") // no errors: "bad" is ejected
}
