package agent

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// A move of a Service's late clients, step by step: each step is a change
// of what the Service wants (seen some time after the first change), or
// only time passing; after it, what the late clients' clusters of each
// generation are.
func TestLateClientsMoves(t *testing.T) {
	const h = 10 * time.Second
	type step struct {
		at   time.Duration // after the first change was seen
		want *bool         // the Service's policy changed to TLS or not; nil: no change
		gen  int           // the generation late clients' routes name: the first (0, the Service's own names), second, …
		tls  []bool        // each generation's TLS settings, from the first to gen
		held bool          // gen's load assignments are held back
		next time.Duration // when the agent must look again (-1: never)
	}
	on, off := new(bool), new(bool)
	*on = true
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a move is named a lead before the handover, and filled a lag after", []step{
			{at: 0, want: on, gen: 0, tls: []bool{false}, next: h - lateLead},
			{at: h - lateLead - time.Millisecond, gen: 0, tls: []bool{false}, next: h - lateLead},
			{at: h - lateLead, gen: 1, tls: []bool{false, true}, held: true, next: h + lateLag},
			{at: h + lateLag - time.Millisecond, gen: 1, tls: []bool{false, true}, held: true, next: h + lateLag},
			{at: h + lateLag, gen: 1, tls: []bool{true, true}, next: -1},
		}},
		{"permissive → strict on the way moves nothing more", []step{
			{at: 0, want: on, gen: 0, tls: []bool{false}, next: h - lateLead},
			{at: time.Second, want: on, gen: 0, tls: []bool{false}, next: h - lateLead},
			{at: h, gen: 1, tls: []bool{false, true}, held: true, next: h + lateLag},
		}},
		{"turned back before it was named: nothing moves", []step{
			{at: 0, want: on, next: h - lateLead, tls: []bool{false}},
			{at: time.Second, want: off, next: -1, tls: []bool{false}},
			{at: h + lateLag, next: -1, tls: []bool{false}},
		}},
		{"turned back once named, before the servers moved: the fresh clusters get the old settings, filled", []step{
			{at: 0, want: on, tls: []bool{false}, next: h - lateLead},
			{at: h - lateLead, gen: 1, tls: []bool{false, true}, held: true, next: h + lateLag},
			{at: h - lateLead/2, want: off, gen: 1, tls: []bool{false, false}, next: -1},
		}},
		{"turned back after the servers moved: the late clients move back with them, a handover later", []step{
			{at: 0, want: on, tls: []bool{false}, next: h - lateLead},
			{at: h - lateLead, gen: 1, tls: []bool{false, true}, held: true, next: h + lateLag},
			{at: h, want: off, gen: 1, tls: []bool{true, true}, next: 2*h - lateLead},
			{at: 2*h - lateLead, gen: 2, tls: []bool{true, true, false}, held: true, next: 2*h + lateLag},
			{at: 2*h + lateLag, gen: 2, tls: []bool{false, false, false}, next: -1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := discovery.ServiceKey{Namespace: "shop", Name: "cart"}
			a := &Agent{cfg: Config{Handover: h}, store: discovery.NewStore(), dirty: map[discovery.ServiceKey]pending{},
				tlsMoves: map[discovery.ServiceKey]tlsMove{}, lateGens: map[discovery.ServiceKey]uint32{}}
			t0 := time.Now()
			policy := false
			gens := []uint32{0} // as named
			for _, s := range tc.steps {
				now := t0.Add(s.at)
				if s.want != nil {
					a.movedTLS(k, policy, *s.want, now)
					policy = *s.want
				}
				a.dueMoves(now)
				l := a.late(k)
				if g := l.gen; g != gens[len(gens)-1] {
					if g < gens[len(gens)-1] || g < uint32(now.Unix()) {
						t.Fatalf("at %v: generation %d named after %d, at Unix time %d", s.at, g, gens[len(gens)-1], now.Unix())
					}
					gens = append(gens, g)
				}
				if len(gens)-1 != s.gen {
					t.Fatalf("at %v: routes name generation %d (%v), want the %dth", s.at, len(gens)-1, gens, s.gen)
				}
				for i, want := range s.tls {
					if got := l.tls(policy, gens[i]); got != want {
						t.Errorf("at %v: generation %d (%d) has TLS %v, want %v", s.at, i, gens[i], got, want)
					}
				}
				if got := l.withheld(gens[s.gen]); got != s.held {
					t.Errorf("at %v: generation %d held back %v, want %v", s.at, s.gen, got, s.held)
				}
				// What the debug pages say of it.
				v := l.view(policy, h)
				switch {
				case v == nil:
					if len(gens) > 1 || s.next != -1 {
						t.Errorf("at %v: no late clients' view, for a Service that moved", s.at)
					}
				case v.Generation != gens[s.gen] || v.TLS != s.tls[s.gen]:
					t.Errorf("at %v: view %+v, want generation %d, TLS %v", s.at, v, gens[s.gen], s.tls[s.gen])
				case (v.Moving == "filling") != s.held || (v.Moving == "") != (s.next == -1):
					t.Errorf("at %v: view %+v, with its load assignments held back %v, next look %v", s.at, v, s.held, s.next)
				}
				next := time.Duration(-1)
				if due := a.nextMove(); !due.IsZero() {
					next = due.Sub(t0)
				}
				if next != s.next {
					t.Errorf("at %v: next look at %v, want %v", s.at, next, s.next)
				}
			}
		})
	}
}

// What late clients are built during a move of be1 whose fresh generation,
// 2, is TLS and not filled yet (generation 1 was plaintext): their routes
// name generation 2, its cluster has TLS settings and no load assignment;
// generation 1 keeps its settings and endpoints. Other clients' routes name
// the clusters they always did.
func TestLateClientsBuild(t *testing.T) {
	const be1 = "be1.default.svc.cluster.local:80"
	b := testBuilder(t, map[string]string{trust.AnnotationMTLS: "strict"}, nil)
	b.late = func(k discovery.ServiceKey) late {
		if k.Name != "be1" {
			return late{}
		}
		return late{gen: 2, move: tlsMove{old: false, gen: 2}, moving: true}
	}
	key := discovery.ServiceKey{Namespace: "default", Name: "be1"}
	for _, tc := range []struct {
		typ, res string
		want     string
	}{
		{xds.RouteType, be1 + "#late", "route → " + be1 + "!2, retried on unavailable"},
		{xds.RouteType, be1, "route → " + be1},
		{xds.ClusterType, be1 + "!2#mtls#late", "cluster " + be1 + "!2 TLS"},
		{xds.ClusterType, be1 + "!1#mtls#late", "cluster " + be1 + "!1 plaintext"},
		{xds.EndpointType, be1 + "!2", "absent"},
		{xds.EndpointType, be1 + "!1", "p0: 10.0.0.1:80 | p1: 10.0.0.2:80 | p2: 10.0.1.1:80"},
	} {
		r, err := names.ParseResource(tc.res)
		if err != nil {
			t.Fatal(err)
		}
		built := b.build(key, tc.typ, tc.res, portRef{Resource: r, port: 80}).resource
		got := summarize(built)
		switch m := built.(type) {
		case *routev3.RouteConfiguration:
			got = "route → " + strings.Join(routeClusters(m), ", ")
			if p := m.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRetryPolicy(); p != nil {
				got += ", retried on " + p.GetRetryOn()
			}
		case *clusterv3.Cluster:
			got = "cluster " + m.GetName() + " plaintext"
			if m.GetTransportSocket() != nil {
				got = "cluster " + m.GetName() + " TLS"
			}
		}
		if got != tc.want {
			t.Errorf("%s: built %s, want %s", tc.res, got, tc.want)
		}
	}

	// A split's backends, each at its Service's generation; the cluster
	// with no endpoints for unresolved backends has no transport to move.
	// Calls are retried where a backend moves (be1 does), and only there.
	rc := resources.RoutedConfig(be1, []resources.Routed{{Match: mesh.Match{Path: mesh.Path{Kind: mesh.PrefixPath, Value: "/shop.Cart"}}, Clusters: []resources.WeightedCluster{{Name: be1, Weight: 70}, {Name: "be2.default.svc.cluster.local:80", Weight: 30}}}}, resources.LBConfig{}, be1+"|none")
	b.late = func(k discovery.ServiceKey) late {
		if k.Name != "be1" {
			return late{}
		}
		return late{gen: 3, move: tlsMove{old: false, gen: 3}, moving: true}
	}
	b.lateRoute(rc)
	// (A prefix is two routes sharing one action: named once.)
	split := be1 + "!3, be2.default.svc.cluster.local:80, "
	if got, want := strings.Join(routeClusters(rc), ", "), split+split+be1+"|none"; got != want {
		t.Errorf("a late client's split names %s, want %s", got, want)
	}
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	if routes[0].GetRoute().GetRetryPolicy() == nil || routes[len(routes)-1].GetRoute().GetRetryPolicy() != nil {
		t.Errorf("retries on the split %v and on the catch-all %v, want on the split only", routes[0].GetRoute().GetRetryPolicy(), routes[len(routes)-1].GetRoute().GetRetryPolicy())
	}
}

// routeClusters lists the clusters a route configuration names, in order.
func routeClusters(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if c := a.GetCluster(); c != "" {
				out = append(out, c)
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				out = append(out, wc.GetName())
			}
		}
	}
	return out
}
