package mesh

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/nodexds/nodexds/discovery"
)

// manyRoutes is n GRPCRoutes on echo:7070 of the conformance namespace,
// each with one rule of m header matches, created a second apart.
func manyRoutes(t testing.TB, n, m int) *world {
	var docs []string
	for i := range n {
		var matches strings.Builder
		for j := range m {
			fmt.Fprintf(&matches, "    - headers: [{name: x-route, value: \"%d-%d\"}]\n", i, j)
		}
		docs = append(docs, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: r%04d, namespace: %s, creationTimestamp: "2026-01-01T00:%02d:%02dZ"}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 7070}]
  rules:
  - matches:
%s    backendRefs: [{name: echo-v1, port: 7070}]
`, i, ns, i/60%60, i%60, matches.String()))
	}
	return load(t, docs...)
}

// TestManyRulesAreBoundedWholeRoutesFirstCome: 1,000 routes of 10 matches
// each (10,000 rules) on one port: the oldest routes that fit are used
// whole, the rest are left out and their status says why; translating it
// stays small; another Service's routing is unaffected.
func TestManyRulesAreBoundedWholeRoutesFirstCome(t *testing.T) {
	w := manyRoutes(t, 1000, 10)
	w.routes = append(w.routes, load(t, "httproute-weight.yaml").routes...)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := w.table(t, "echo", 7070, ns)
	runtime.ReadMemStats(&after)

	if len(tb.Rules) != MaxRules || len(tb.Used) != MaxRules/10 || len(tb.Dropped) != 1000-MaxRules/10 {
		t.Fatalf("%d rules from %d routes, %d dropped; want %d from %d, %d dropped", len(tb.Rules), len(tb.Used), len(tb.Dropped), MaxRules, MaxRules/10, 1000-MaxRules/10)
	}
	if tb.Used[0].Name != "r0000" || tb.Dropped[0].Name != fmt.Sprintf("r%04d", MaxRules/10) {
		t.Errorf("used from %s, dropped from %s: want the oldest used", tb.Used[0].Name, tb.Dropped[0].Name)
	}
	if got := send(tb, "/x/y", map[string]string{"x-route": "3-7"}); got != "echo-v1:7070*1" {
		t.Errorf("a used route's match went to %s", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("translating 10,000 matches allocated %d MiB", alloc>>20)
	}
	dropped := w.routes[999]
	for _, st := range Status(dropped, w.service, w.grantsOf, w.attached) {
		if st.Accepted.Status || !strings.Contains(st.Accepted.Message, "rules") {
			t.Errorf("a dropped route's status: %+v", st.Accepted)
		}
	}
	if got := send(w.table(t, "echo", 80, ns), "/", nil); got != "echo-v1:8080*70 echo-v2:8080*30" {
		t.Errorf("another port's route went to %s", got)
	}
}

// TestRegularExpressionsClientsWouldRefuseAreRefused: a client that cannot
// compile one regex NACKs the whole configuration, so the route is refused
// here instead; RE2 runs in linear time, so a "catastrophic" pattern for a
// backtracking engine is fine.
func TestRegularExpressionsClientsWouldRefuseAreRefused(t *testing.T) {
	for _, tc := range []struct {
		re      string
		refused bool
	}{
		{`(a+)+$`, false},
		{`[a-z]+\.v[0-9]+`, false},
		{`((((a{100}){100}){100}){100})`, true},
		{`(?P<x>a)\1`, true}, // backreferences are not RE2
		{`a(?=b)`, true},     // nor lookahead
		{strings.Repeat("a", 2000), true},
		{`[`, true},
	} {
		w := load(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: re, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{headers: [{type: RegularExpression, name: x, value: %q}]}]
    backendRefs: [{name: echo-v1, port: 7070}]
`, ns, tc.re))
		p := Refused(w.routes[0])
		if (p != nil) != tc.refused {
			t.Errorf("%.40q: refused %v, want %v", tc.re, p, tc.refused)
		}
		if p != nil && p.Reason != "UnsupportedValue" {
			t.Errorf("%.40q: reason %s", tc.re, p.Reason)
		}
	}
}

func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			w := manyRoutes(b, n, 10)
			k := discovery.ServiceKey{Namespace: ns, Name: "echo"}
			p, _ := w.services[k].PortNumber(7070)
			in := Input{Parent: k, Port: p, Client: ns, Routes: w.attached(k), Service: w.service, Grants: w.grantsOf}
			b.ReportAllocs()
			for b.Loop() {
				Translate(in)
			}
		})
	}
}

// TestWeightsStayWithinWhatGRPCTakes: a file source has no API server to
// enforce the Gateway API's bounds; weights over 1,000,000 are capped and a
// rule of more than 16 backends is refused, so a rule's total stays far
// below gRPC's uint32 limit.
func TestWeightsStayWithinWhatGRPCTakes(t *testing.T) {
	w := load(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: heavy, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules: [{backendRefs: [{name: echo-v1, port: 7070, weight: 2147483647}, {name: echo-v2, port: 7070, weight: 1}]}]
`, ns))
	if got := send(w.table(t, "echo", 7070, ns), "/a/b", nil); got != "echo-v1:7070*1000000 echo-v2:7070*1" {
		t.Errorf("went to %s", got)
	}
	var refs strings.Builder
	for i := range 17 {
		fmt.Fprintf(&refs, "{name: echo-v1, port: 7070, weight: %d},", i+1)
	}
	w = load(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: wide, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules: [{backendRefs: [%s]}]
`, ns, refs.String()))
	if p := Refused(w.routes[0]); p == nil || !strings.Contains(p.Message, "17 backendRefs") {
		t.Errorf("17 backendRefs: %v", p)
	}
}

// TestBackendsNamingOneClusterAreMerged: gRPC wants each cluster of a
// weighted set once, so the unresolved backends share one entry and a
// Service port named twice is one backend with both weights.
func TestBackendsNamingOneClusterAreMerged(t *testing.T) {
	w := load(t, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: twice, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules: [{backendRefs: [{name: echo-v1, port: 7070, weight: 2}, {name: gone, port: 1, weight: 3}, {name: echo-v1, port: 7070, weight: 5}, {name: also-gone, port: 1, weight: 7}]}]
`, ns))
	if got := send(w.table(t, "echo", 7070, ns), "/a/b", nil); got != "echo-v1:7070*7 UNAVAILABLE*10" {
		t.Errorf("went to %s, want echo-v1:7070*7 UNAVAILABLE*10", got)
	}
}
