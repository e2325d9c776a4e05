package agent_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/internal/metricstest"
)

func TestClientsWithDifferentSubsetsOfServicesAreEachServed(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	be2 := w.addService("other", "be2")
	w.startBackend(be1, "be1-pod", "a1")
	w.startBackend(be2, "be2-pod", "a1")
	a := startAgent(t, w)

	onlyBe1 := dial(t, a, "be1:8080")
	onlyBe2 := dial(t, a, "be2.other.svc.cluster.local:grpc")
	bothBe1, bothBe2 := dial(t, a, "be1"), dial(t, a, "be2.other")

	eventually(t, onlyBe1, "be1-pod")
	eventually(t, onlyBe2, "be2-pod")
	eventually(t, bothBe1, "be1-pod")
	eventually(t, bothBe2, "be2-pod")
}

func TestClientSpreadsOverAllBackendsWhenScaledFrom2To10(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	for i := range 2 {
		w.startBackend(be1, fmt.Sprintf("be1-%d", i), "a1")
	}
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "be1-0", "be1-1")

	var want []string
	for i := range 10 {
		if i >= 2 {
			w.startBackend(be1, fmt.Sprintf("be1-%d", i), "a1")
		}
		want = append(want, fmt.Sprintf("be1-%d", i))
	}
	w.write()
	eventually(t, cc, want...)

	// Round robin over equal-weight endpoints: 100 RPCs give each of 10 backends 10.
	for name, n := range hits(cc, 100) {
		if n != 10 {
			t.Errorf("%s got %d of 100 RPCs, want 10 (round robin)", name, n)
		}
	}
}

func TestTrafficMovesTierByTierAndBack(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	local := w.startBackend(be1, "on-a1", "a1")
	zone := w.startBackend(be1, "on-a2", "a2")
	region := w.startBackend(be1, "on-b1", "b1")
	w.startBackend(be1, "on-c1", "c1")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")

	eventually(t, cc, "on-a1")
	w.remove(be1, local)
	w.write()
	eventually(t, cc, "on-a2")
	w.remove(be1, zone)
	w.write()
	eventually(t, cc, "on-b1")
	w.remove(be1, region)
	w.write()
	eventually(t, cc, "on-c1")

	w.startBackend(be1, "on-a1-again", "a1")
	w.write()
	eventually(t, cc, "on-a1-again")
}

func TestClientFailsOverByItselfWhenLocalBackendsDie(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	local := w.startBackend(be1, "on-a1", "a1")
	w.startBackend(be1, "on-a2", "a2")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")

	// The process dies; nothing tells the agent. gRPC's priority policy moves
	// to the zone tier on its own, because the tiers are EDS priorities.
	local.srv.Stop()
	eventually(t, cc, "on-a2")
}

func TestStrictLocalPolicyFailsRatherThanLeaveTheNode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		strict func(*service)
	}{
		{"internalTrafficPolicy Local", func(s *service) { s.Local = true }},
		{"topology annotation without *", func(s *service) {
			s.Annotations = map[string]string{topology.AnnotationTopology: "node"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			be1 := w.addService("default", "be1", tc.strict)
			w.startBackend(be1, "on-a2", "a2")
			a := startAgent(t, w)
			cc := dial(t, a, "be1:8080")
			eventually(t, cc, "ERR Unavailable")

			w.startBackend(be1, "on-a1", "a1")
			w.write()
			eventually(t, cc, "on-a1")
		})
	}
}

func TestPolicyChangeAtRuntimeTakesEffect(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "on-a2", "a2")
	w.startBackend(be1, "on-b1", "b1")
	w.startBackend(be1, "on-c1", "c1")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a2")

	be1.Annotations = map[string]string{topology.AnnotationTopology: "region,*"}
	w.write()
	eventually(t, cc, "on-a2", "on-b1")

	be1.Annotations = nil
	be1.Distribution = "PreferSameNode" // node, zone, *: region is not a tier
	w.write()
	eventually(t, cc, "on-a2")
}

func TestAnnotationTypoFallsBackAndIsCounted(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1", func(s *service) {
		s.Annotations = map[string]string{topology.AnnotationTopology: "node,zoen"}
		s.Distribution = "PreferSameZone"
	})
	w.startBackend(be1, "on-a1", "a1")
	w.startBackend(be1, "on-a2", "a2")
	w.startBackend(be1, "on-c1", "c1")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")

	// The typo is skipped: trafficDistribution PreferSameZone applies.
	eventually(t, cc, "on-a1", "on-a2")
	// Counted once, under its annotation (every annotation has a series, at 0
	// until its first error).
	all, err := metricstest.Sum(a.Registry, "nodexds_annotation_errors_total")
	topo, err2 := metricstest.Sum(a.Registry, "nodexds_annotation_errors_total", topology.AnnotationTopology)
	if err != nil || err2 != nil || all != 1 || topo != 1 {
		t.Errorf("nodexds_annotation_errors_total: %v in all, %v for %s (%v, %v); want 1 and 1", all, topo, topology.AnnotationTopology, err, err2)
	}
}

func TestServiceCreatedAfterTheClientAskedIsServed(t *testing.T) {
	w := newWorld(t)
	a := startAgent(t, w)
	cc := dial(t, a, "late:8080")
	late := w.addService("default", "late")
	w.startBackend(late, "late-pod", "b1")
	w.write()
	eventually(t, cc, "late-pod")
}

func TestDeletedServiceFailsFast(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-pod", "a1")
	a := startAgent(t, w)
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "be1-pod")

	w.services = nil
	w.write()
	eventually(t, cc, "ERR Unavailable")
}

// A listener may be named exactly like the route, cluster and assignment it
// leads to. One client leaving that listener must not unhook the others'
// route, cluster or endpoints (they are subscribed by type).
func TestClientDiallingTheCanonicalNameLeavingBreaksNoOther(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-0", "a1")
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	canonical := dial(t, a, "be1.default.svc.cluster.local:8080")
	short := dial(t, a, "be1:8080")
	eventually(t, canonical, "be1-0")
	eventually(t, short, "be1-0")

	canonical.Close()
	// The agent's loop has taken the leaving in once its listener is gone
	// from what the loop shows.
	within(t, func() string {
		d := servicesPage(t, debug, "service=default/be1")
		if len(d.Services) != 1 || !slices.Equal(d.Services[0].Listeners, []string{"be1:8080"}) {
			return "the canonical listener is still subscribed: " + mustJSON(d)
		}
		return ""
	})
	w.startBackend(be1, "be1-1", "a1") // a change, so everything subscribed is rebuilt
	w.write()
	eventually(t, short, "be1-0", "be1-1")
}
