package e2e

import (
	"bufio"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Gateway API routes attached to a Service (GAMMA: parentRefs group "",
// kind Service), on the real API server with the Gateway API's own
// standard-channel CRDs, read by the agents' kube source.

const (
	routesNS = "routes"       // the parent Service echo, its routes and most backends
	otherNS  = "routes-other" // a backend in another namespace, and its ReferenceGrant
	// splitInterval is the plain clients' RPC interval: a split is measured
	// over many RPCs, and they come twice as fast as the default.
	splitInterval = 10 * time.Millisecond
)

// weightRoute is the mesh conformance fixture grpcroute-weight.yaml
// (internal/conformance/mesh/, from sigs.k8s.io/gateway-api/conformance
// v1.6.3) adapted to this suite: namespace routes instead of
// gateway-conformance-mesh, port 8080 (every test Service's port, named
// grpc) instead of 7070, and name echo. Backends and weights are the
// fixture's: echo-v1 70, echo-v2 30, echo-v3 0 (echo-v3 does not exist
// here; with weight 0 it takes no share).
const weightRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs:
    - {name: echo-v1, port: 8080, weight: 70}
    - {name: echo-v2, port: 8080, weight: 30}
    - {name: echo-v3, port: 8080, weight: 0}
`

// methodRoute replaces weightRoute (same object: rules are an atomic list,
// so server-side apply swaps them whole). The clients call
// nodexds.echo.Echo/Hello: with x-canary: yes the first rule (method and
// header) takes them, without it the second (method only); the third names
// another method and is never taken.
const methodRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - matches: [{method: {service: nodexds.echo.Echo, method: Hello}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: echo-canary, port: 8080}]
  - matches: [{method: {service: nodexds.echo.Echo, method: Hello}}]
    backendRefs: [{name: echo-v1, port: 8080}]
  - matches: [{method: {service: some.Other}}]
    backendRefs: [{name: echo-v2, port: 8080}]
`

// unmatchedRoute replaces methodRoute: its only rule names another gRPC
// service, so Hello matches no rule.
const unmatchedRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - matches: [{method: {service: some.Other}}]
    backendRefs: [{name: echo-v2, port: 8080}]
`

// httpRoute matches the same calls by path: /nodexds.echo.Echo/Hello
// exactly with the header, the service's prefix without; a prefix of
// another service is never taken.
const httpRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-http, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - matches: [{path: {type: Exact, value: /nodexds.echo.Echo/Hello}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: echo-canary, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /nodexds.echo.Echo}}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /some.Other}}]
    backendRefs: [{name: echo-v1, port: 8080}]
`

// crossRoute splits 50/50 between echo-v1 and Service shared of namespace
// routes-other, which only a ReferenceGrant there lets it use.
const crossRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-cross, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs:
    - {name: echo-v1, port: 8080, weight: 50}
    - {name: shared, namespace: routes-other, port: 8080, weight: 50}
`

const grant = `apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: routes-may-use-shared, namespace: routes-other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: routes}]
  to: [{group: "", kind: Service, name: shared}]
`

// filterRoute asks for a filter, which proxyless gRPC cannot carry out: the
// agent refuses the whole route.
const filterRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-filter, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-added, value: "yes"}]}}]
    backendRefs: [{name: echo-v2, port: 8080}]
`

// TestGatewayAPIRoutesSteerTraffic (Gateway API mesh routes): one cluster,
// its agents started before the Gateway API exists. The CRDs are then
// installed and a route created: traffic moves, no agent restarted. On that
// cluster: the conformance fixture's 70/30/0 split (each backend reached on
// the client's node only), GRPCRoute method and header matches, a request
// matching no rule failing UNAVAILABLE, HTTPRoute path and header matches, a
// cross-namespace backend failing its share until a ReferenceGrant allows
// it, and a route with a filter not used at all.
//
// Every backend Service has pods on node-a1 (the clients' node) and
// elsewhere; only node-a1's may ever answer, since each backend is its own
// Service's per-node cluster.
func TestGatewayAPIRoutesSteerTraffic(t *testing.T) {
	e := StartEnv(t, routesNS, otherNS)
	e.WithStack(t, CCore)
	fleets := map[string]*fleet{}
	for _, svc := range []string{"echo", "echo-v1", "echo-v2", "echo-canary"} {
		e.CreateService(t, routesNS, svc)
		fleets[svc] = newFleet(e, routesNS, svc)
	}
	e.CreateService(t, otherNS, "shared")
	fleets["shared"] = newFleet(e, otherNS, "shared")
	fleets["echo"].start(t, 1, clientNode)
	fleets["echo-v1"].start(t, 1, clientNode, "node-c1")
	fleets["echo-v2"].start(t, 1, clientNode, "node-a2")
	fleets["echo-canary"].start(t, 2, clientNode)
	fleets["echo-canary"].start(t, 1, "node-a2", "node-b1", "node-c1")
	fleets["shared"].start(t, 1, clientNode, "node-b1")
	local := func(svc string) []string { return fleets[svc].names(clientNode) }
	own, v1, v2, canary, shared := local("echo"), local("echo-v1"), local("echo-v2"), local("echo-canary"), local("shared")

	agentPids := map[string]int{}
	for node, a := range e.Agents {
		agentPids[node] = a.proc.Pid()
	}
	target := []string{Target(routesNS, "echo")}
	plain := e.StartClients(t, ProbeOptions{Targets: target, Interval: splitInterval})
	tagged := e.StartClients(t, ProbeOptions{Name: "x-canary", Targets: target, Headers: []string{"x-canary:yes"}})
	both := func(s Stack) []*Probe { return []*Probe{plain[s], tagged[s]} }

	e.Step(t, "no Gateway API: the Service's own pod", nil, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			p.WaitServedBy(t, own...)
		}
	})
	marks, taggedMarks := plain.Marks(), tagged.Marks()

	var version string
	e.Step(t, "CRDs installed under running agents", func() {
		version = e.InstallGatewayAPI(t)
	}, func(t *testing.T, s Stack) {
		plain[s].AssertNoFailures(t, marks[s], "while the CRDs were installed")
		plain[s].WaitServedBy(t, own...)
	})

	var created time.Time
	e.Step(t, "grpcroute-weight 70/30/0 created: traffic moves, no agent restarted", func() {
		created = time.Now()
		e.Apply(t, weightRoute)
	}, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			p.WaitServedBy(t, append(slices.Clone(v1), v2...)...)
		}
		lag := firstAnswerAfter(plain[s], v1[0], created)
		t.Logf("%s: first RPC on the route's backend %s after the route was created (Gateway API %s CRDs installed after the agents started)", plain[s].Label(), lag, version)
		recordFigure("gateway api: CRDs installed under running agents, then a GRPCRoute created → first RPC on its backend, %s client: %s", s, lag)
		for node, a := range e.Agents {
			if exited, _ := a.proc.Exited(); exited || a.proc.Pid() != agentPids[node] {
				t.Errorf("agent on %s was restarted or exited (pid %d, was %d)", node, a.proc.Pid(), agentPids[node])
			}
		}
	})
	splitFrom := plain.Marks()

	e.Step(t, "split 70/30 over 1,000 RPCs", nil, func(t *testing.T, s Stack) {
		const n = 1000
		tolerance := 5.0 // grpc-go; grpc-js and C-core pick less evenly
		if s != Go {
			tolerance = 8
		}
		rpcs := plain[s].collect(t, splitFrom[s], n)
		got := outcomes(rpcs)
		share := 100 * float64(got[v1[0]]) / n
		line := fmt.Sprintf("gateway api: grpcroute-weight 70/30/0, %s client, %d RPCs: %s %.1f%%, %s %.1f%% (%s)",
			s, n, v1[0], share, v2[0], 100*float64(got[v2[0]])/n, Tally(rpcs))
		t.Log(line)
		recordFigure("%s", line)
		if len(got) != 2 || got[v1[0]]+got[v2[0]] != n {
			t.Errorf("%s: %d RPCs reached %s; want only %s and %s (each backend on the client's node only)", plain[s].Label(), n, Tally(rpcs), v1[0], v2[0])
		}
		if math.Abs(share-70) > tolerance {
			t.Errorf("%s: echo-v1 took %.1f%% of %d RPCs; want 70±%.0f", plain[s].Label(), share, n, tolerance)
		}
	})

	e.Step(t, "GRPCRoute method and header matches", func() { e.Apply(t, methodRoute) }, func(t *testing.T, s Stack) {
		plain[s].WaitServedBy(t, v1...)
		tagged[s].WaitServedBy(t, canary...) // node-first: the canary's other pods never answer
		during := "from the CRDs' installation through two route changes"
		plain[s].AssertNoFailuresBut(t, marks[s], during, unknownClusterRace(s), 10)
		tagged[s].AssertNoFailuresBut(t, taggedMarks[s], during, unknownClusterRace(s), 10)
	})

	e.Step(t, "no rule matches: UNAVAILABLE", func() { e.Apply(t, unmatchedRoute) }, func(t *testing.T, s Stack) {
		// The agent ends every routed configuration with a catch-all to the
		// port's cluster without endpoints: C-core 1.51 would otherwise fail
		// a request matching no route with INTERNAL rather than UNAVAILABLE.
		for _, p := range both(s) {
			p.WaitFailingWith(t, "Unavailable")
		}
	})

	// HTTPRoutes apply only while no GRPCRoute names the Service (GEP-1426):
	// the HTTPRoute first, then the GRPCRoute goes.
	e.Step(t, "HTTPRoute path and header matches", func() {
		e.Apply(t, httpRoute)
		e.Delete(t, unmatchedRoute)
	}, func(t *testing.T, s Stack) {
		plain[s].WaitServedBy(t, v2...)
		tagged[s].WaitServedBy(t, canary...)
	})

	e.Step(t, "cross-namespace backend without a ReferenceGrant: its share UNAVAILABLE", func() {
		e.Apply(t, crossRoute)
		e.Delete(t, httpRoute)
	}, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			p.waitOutcomes(t, v1[0], "Unavailable")
		}
	})
	crossFrom := plain.Marks()
	e.Step(t, "half of 400 RPCs UNAVAILABLE", nil, func(t *testing.T, s Stack) {
		const n = 400
		rpcs := plain[s].collect(t, crossFrom[s], n)
		got := outcomes(rpcs)
		share := 100 * float64(got["Unavailable"]) / n
		t.Logf("%s: %d RPCs, %.1f%% UNAVAILABLE: %s", plain[s].Label(), n, share, Tally(rpcs))
		recordFigure("gateway api: cross-namespace backend (weight 50) without a ReferenceGrant, %s client, %d RPCs: %.1f%% UNAVAILABLE", s, n, share)
		if len(got) != 2 || got[v1[0]]+got["Unavailable"] != n {
			t.Errorf("%s: %d RPCs: %s; want only %s and UNAVAILABLE", plain[s].Label(), n, Tally(rpcs), v1[0])
		}
		if math.Abs(share-50) > 10 {
			t.Errorf("%s: %.1f%% of %d RPCs UNAVAILABLE; want 50±10", plain[s].Label(), share, n)
		}
	})

	e.Step(t, "ReferenceGrant allows it", func() { e.Apply(t, grant) }, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			p.WaitServedBy(t, append(slices.Clone(v1), shared...)...)
		}
	})

	e.Step(t, "ReferenceGrant deleted: refused again", func() { e.Delete(t, grant) }, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			p.waitOutcomes(t, v1[0], "Unavailable")
		}
	})

	e.Step(t, "routes deleted: the Service's own pod", func() { e.Delete(t, crossRoute) }, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			p.WaitServedBy(t, own...)
		}
	})
	quiet, taggedQuiet := plain.Marks(), tagged.Marks()

	e.Step(t, "a route with a filter is not used", func() {
		e.Apply(t, filterRoute)
		// The agent has read the route and refused it: what follows is
		// traffic after that.
		e.waitRouteCounts(t, clientNode, 0, 1)
	}, func(t *testing.T, s Stack) {
		for _, p := range both(s) {
			from := p.Mark()
			p.collect(t, from, 100)
			p.AssertOnlyPods(t, from, "in 100 RPCs after the agent refused the route with a filter", own...)
		}
		plain[s].AssertNoFailures(t, quiet[s], "since the routes were deleted")
		tagged[s].AssertNoFailures(t, taggedQuiet[s], "since the routes were deleted")
	})

	e.Step(t, "node-first throughout", nil, func(t *testing.T, s Stack) {
		var allowed []string
		for _, f := range fleets {
			allowed = append(allowed, f.everOn(clientNode)...)
		}
		for _, p := range both(s) {
			p.AssertOnlyPods(t, 0, "during the whole test (backends' other nodes)", allowed...)
		}
	})
}

// unknownClusterRace excuses, for grpc-go, an RPC failed by the race of its
// ClientConn between a route change and the LB policy: the new config
// selector applies at once, the cluster manager learns of a cluster it adds
// a moment later (through the balancer's serializer), and an RPC picking
// that cluster in between fails with UNAVAILABLE "unknown cluster selected
// for RPC". grpc-java fixed the same window (grpc/grpc-java#11947).
func unknownClusterRace(s Stack) func(RPC) bool {
	if s != Go {
		return nil
	}
	return func(r RPC) bool {
		return r.Code == "Unavailable" && strings.HasPrefix(r.Msg, "unknown cluster selected for RPC")
	}
}

// outcomes counts RPCs by the pod that answered, or the code they failed with.
func outcomes(rpcs []RPC) map[string]int {
	got := map[string]int{}
	for _, r := range rpcs {
		if r.OK() {
			got[r.Pod]++
		} else {
			got[r.Code]++
		}
	}
	return got
}

// collect waits until the probe has n RPCs from mark on and returns those
// n. Its time bound is generous: the probe sends them at its interval.
func (p *Probe) collect(t testing.TB, from, n int) []RPC {
	t.Helper()
	timeout := waitTimeout + 5*time.Duration(n)*p.Interval
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if rpcs := p.RPCs(from); len(rpcs) >= n {
			return rpcs[:n]
		}
		if msg := p.exited(); msg != "" {
			t.Fatalf("%s: waiting for %d RPCs: %s", p.Label(), n, msg)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: only %d of %d RPCs within %s", p.Label(), len(p.RPCs(from)), n, timeout)
		}
	}
}

// waitOutcomes waits until the probe's recent RPCs, all sent after this
// call, had exactly the given outcomes (pod names, or failure codes), each
// at least once.
func (p *Probe) waitOutcomes(t testing.TB, want ...string) time.Duration {
	t.Helper()
	w := map[string]bool{}
	for _, o := range want {
		w[o] = true
	}
	return p.waitFor(t, waitTimeout, "answered or failed exactly as {"+strings.Join(sorted(w), ", ")+"}", p.window(len(want)),
		func(recent []RPC) bool {
			got := map[string]bool{}
			for o := range outcomes(recent) {
				got[o] = true
			}
			return maps.Equal(got, w)
		})
}

// waitRouteCounts waits until node's agent counts usable and refused
// Gateway API routes as given (nodexds_gateway_routes on its admin port).
func (e *Env) waitRouteCounts(t testing.TB, node string, usable, refused int) {
	t.Helper()
	url := "http://" + net.JoinHostPort(e.Agents[node].IP, "18001") + "/metrics"
	want := map[string]int{"usable": usable, "refused": refused}
	var got map[string]int
	var err error
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(50 * time.Millisecond) {
		got, err = routeCounts(url)
		if err == nil && maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent on %s: nodexds_gateway_routes %v (err %v), want %v within %s", node, got, err, want, waitTimeout)
		}
	}
}

// routeCounts reads nodexds_gateway_routes by state from a /metrics page.
func routeCounts(url string) (map[string]int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	got := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), `nodexds_gateway_routes{state="`)
		if !ok {
			continue
		}
		state, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %v", url, sc.Text(), err)
		}
		got[state] = int(v)
	}
	return got, sc.Err()
}
