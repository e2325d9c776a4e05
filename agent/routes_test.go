package agent_test

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/internal/poll"
)

// writeWithRoutes writes the world with Gateway API documents after it, in
// one write: the agent never sees the world without them.
func writeWithRoutes(t *testing.T, w *world, docs string) {
	t.Helper()
	final := w.path
	w.path += ".render"
	w.write()
	w.path = final
	b, err := os.ReadFile(final + ".render")
	if err != nil {
		t.Fatal(err)
	}
	tmp := final + ".tmp"
	if err := os.WriteFile(tmp, append(b, "\n---\n"+docs...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
}

// splitRoute is the mesh conformance fixture grpcroute-weight.yaml on this
// test's Services and port: echo-v3 does not exist, and has weight 0.
func splitRoute(v1, v2 int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs:
    - {name: echo-v1, port: 8080, weight: %d}
    - {name: echo-v2, port: 8080, weight: %d}
    - {name: echo-v3, port: 8080, weight: 0}
`, v1, v2)
}

// TestGRPCRouteSplitsTrafficAndEachBackendStaysNodeFirst: a 70/30 split
// reaches each backend Service's pods on this node only (its first tier),
// within five points of its weight over 1,000 RPCs; the canary then takes
// everything; without the route the Service's own pods answer again.
func TestGRPCRouteSplitsTrafficAndEachBackendStaysNodeFirst(t *testing.T) {
	w := newWorld(t)
	echoSvc := w.addService("default", "echo")
	v1 := w.addService("default", "echo-v1")
	v2 := w.addService("default", "echo-v2")
	w.startBackend(echoSvc, "own", "a1")
	w.startBackend(v1, "v1-here", "a1")
	w.startBackend(v1, "v1-other-region", "c1")
	w.startBackend(v2, "v2-here", "a1")
	w.startBackend(v2, "v2-same-zone", "a2")
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	cc := dial(t, a, "echo:8080")
	eventually(t, cc, "own")

	writeWithRoutes(t, w, splitRoute(70, 30))
	eventually(t, cc, "v1-here", "v2-here")
	// What the routes mean for this node, on the debug page people read.
	_, text := get(t, debug, "/debug/services?format=text", "")
	for _, want := range []string{
		"routes: GRPCRoute default/split (a request matching no rule fails UNAVAILABLE)",
		"any request → echo-v1.default:8080 70, echo-v2.default:8080 30  [GRPCRoute default/split]",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/debug/services does not say %q:\n%s", want, text)
		}
	}
	got := hits(cc, 1000)
	if len(got) != 2 {
		t.Fatalf("1,000 RPCs reached %v, want only v1-here and v2-here", got)
	}
	if share := float64(got["v1-here"]) / 10; math.Abs(share-70) > 5 {
		t.Errorf("v1 took %.1f%% of 1,000 RPCs, want 70±5 (%v)", share, got)
	}
	t.Logf("70/30 split over 1,000 RPCs: %v", got)

	writeWithRoutes(t, w, splitRoute(0, 100))
	eventually(t, cc, "v2-here")

	w.write() // the route is deleted
	eventually(t, cc, "own")
}

// TestRoutesMatchMethodAndHeaderAndFailUnresolvedShares: a method route and
// a header route each move their requests only; a backend that does not
// exist fails its share with UNAVAILABLE while the other keeps its own; a
// route asking for a filter is not used, so traffic stays as it was.
func TestRoutesMatchMethodAndHeaderAndFailUnresolvedShares(t *testing.T) {
	w := newWorld(t)
	echoSvc := w.addService("default", "echo")
	v1 := w.addService("default", "echo-v1")
	v2 := w.addService("default", "echo-v2")
	w.startBackend(echoSvc, "own", "a1")
	w.startBackend(v1, "v1", "a1")
	w.startBackend(v2, "v2", "a1")
	a := startAgent(t, w)
	cc := dial(t, a, "echo:8080")
	eventually(t, cc, "own")

	writeWithRoutes(t, w, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: by-header, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{method: {service: nodexds.echo.Echo, method: Hello}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - matches: [{method: {service: nodexds.echo.Echo, method: Hello}}]
    backendRefs: [{name: echo-v1, port: 8080}]
  - matches: [{method: {service: some.Other}}]
    backendRefs: [{name: echo-v2, port: 8080}]
`)
	eventually(t, cc, "v1")                                  // the method route
	eventuallyWith(t, cc, []string{"x-canary", "yes"}, "v2") // same method, more headers: first
	eventuallyWith(t, cc, []string{"x-canary", "no"}, "v1")  // exact values only

	writeWithRoutes(t, w, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: half-missing, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - backendRefs: [{name: echo-v1, port: 8080}, {name: echo-gone, port: 8080}]
`)
	eventually(t, cc, "ERR Unavailable", "v1")
	got := hits(cc, 400)
	if n := got["ERR Unavailable"]; len(got) != 2 || n < 120 || n > 280 {
		t.Errorf("400 RPCs with one backend of two missing: %v, want about half UNAVAILABLE and the rest on v1", got)
	}

	writeWithRoutes(t, w, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: with-filter, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: "y"}]}}]
    backendRefs: [{name: echo-v1, port: 8080}]
`)
	eventually(t, cc, "own")
	poll.Check(t, func() string {
		refused, usable := testutil.ToFloat64(a.Metrics.Routes.WithLabelValues("refused")), testutil.ToFloat64(a.Metrics.Routes.WithLabelValues("usable"))
		if refused != 1 || usable != 0 {
			return fmt.Sprintf("routes counted refused %v, usable %v; want 1 and 0", refused, usable)
		}
		return ""
	})
}

// TestConsumerRoutesMoveOnlyTheirNamespacesClients (GEP-1294): a route in
// another namespace than its parent Service applies to that namespace's
// clients only, ahead of the producer's routes; its backend in the
// producer's namespace is refused (UNAVAILABLE) until a ReferenceGrant
// there allows it.
func TestConsumerRoutesMoveOnlyTheirNamespacesClients(t *testing.T) {
	w := newWorld(t)
	echoSvc := w.addService("prod", "echo")
	v2 := w.addService("prod", "echo-v2")
	v3 := w.addService("prod", "echo-v3")
	w.startBackend(echoSvc, "own", "a1")
	w.startBackend(v2, "v2", "a1")
	w.startBackend(v3, "v3", "a1")
	a := startAgent(t, w)
	teamA := dialWith(t, bootstrap.Options{Server: a.Addr, Namespace: "team-a"}, "echo.prod:8080")
	teamB := dialWith(t, bootstrap.Options{Server: a.Addr, Namespace: "team-b"}, "echo.prod:8080")
	anyone := dialWith(t, bootstrap.Options{Server: a.Addr}, "echo.prod:8080")
	eventually(t, teamA, "own")

	consumer := `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: to-v2, namespace: team-a}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: prod}]
  rules: [{backendRefs: [{name: echo-v2, namespace: prod, port: 8080}]}]
`
	grant := `apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: team-a, namespace: prod}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: team-a}]
  to: [{group: "", kind: Service, name: echo-v2}]
`
	producer := `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: to-v3, namespace: prod}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules: [{backendRefs: [{name: echo-v3, port: 8080}]}]
`
	writeWithRoutes(t, w, consumer)
	eventually(t, teamA, "ERR Unavailable") // no grant yet: the backend is refused
	eventually(t, teamB, "own")

	writeWithRoutes(t, w, consumer+"---\n"+grant)
	eventually(t, teamA, "v2")
	eventually(t, teamB, "own")
	eventually(t, anyone, "own")

	writeWithRoutes(t, w, consumer+"---\n"+grant+"---\n"+producer)
	eventually(t, teamB, "v3")
	eventually(t, anyone, "v3")
	eventually(t, teamA, "v2") // its own routes first

	writeWithRoutes(t, w, producer)
	eventually(t, teamA, "v3") // without its routes, the producer's
}
