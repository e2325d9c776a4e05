package e2e

import (
	"net"
	"testing"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// Consumer routes (GEP-1294): a route in another namespace than its parent
// Service's applies only to that namespace's clients, ahead of the
// producer's routes.

const producerNS = "producer" // echo, echo-v2, echo-v3, the producer route and the ReferenceGrant

// consumerRoute, in team-a, sends team-a's clients of producer's echo to
// producer's echo-v2, which only grantTeamA lets it use.
const consumerRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-to-v2, namespace: team-a}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: producer, port: 8080}]
  rules:
  - backendRefs: [{name: echo-v2, namespace: producer, port: 8080}]
`

const grantTeamA = `apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: team-a-may-use-echo-v2, namespace: producer}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: team-a}]
  to: [{group: "", kind: Service, name: echo-v2}]
`

// producerRoute, in the parent's own namespace, sends every client of echo
// to echo-v3, unless a consumer route of its namespace comes first.
const producerRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-to-v3, namespace: producer}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs: [{name: echo-v3, port: 8080}]
`

// TestConsumerRouteMovesOnlyItsNamespacesClients (GEP-1294 consumer routes
// with the default --admit=node-pods): two client pods on node-a1, one in
// team-a and one in team-b, both dial producer's echo. A GRPCRoute in
// team-a attached to producer/echo moves team-a's client only — once a
// ReferenceGrant in producer allows its backend echo-v2 (before that,
// team-a's RPCs fail UNAVAILABLE) — and team-b's stays on echo's own pod. A
// producer route to echo-v3 then moves team-b, while team-a keeps its own
// route; once that is deleted, team-a follows the producer's.
//
// The agent knows a client's namespace only from admission: the pod whose
// IP the client connects from. Each client dials the agent at its pod's IP
// (the agents listen on every address of the node, as in
// TestVisibilityNamespaceShowsOnlyOwnAndExported); the bootstraps name no
// namespace.
func TestConsumerRouteMovesOnlyItsNamespacesClients(t *testing.T) {
	e := StartEnvWith(t, EnvOptions{AgentArgs: []string{"--xds-listen=:18000"}}, producerNS, "team-a", "team-b")
	e.InstallGatewayAPI(t)
	pod := map[string]string{}
	for _, svc := range []string{"echo", "echo-v2", "echo-v3"} {
		e.CreateService(t, producerNS, svc)
		b := Backend{Namespace: producerNS, Service: svc, Node: clientNode, N: 1}
		e.StartBackend(t, b)
		pod[svc] = b.Name()
	}
	own, v2, v3 := pod["echo"], pod["echo-v2"], pod["echo-v3"]

	target := []string{Target(producerNS, "echo")}
	clients := func(ns string) Clients {
		p := e.StartPod(t, cluster.PodSpec{Namespace: ns, Name: "client", Node: clientNode})
		return e.StartClients(t, ProbeOptions{Name: ns, Targets: target, Server: net.JoinHostPort(p.IP.String(), "18000")})
	}
	teamA, teamB := clients("team-a"), clients("team-b")

	// stays asserts that p was answered only by pod, with no failure, from
	// mark on and over 50 more RPCs: a client that does not move.
	stays := func(t *testing.T, p *Probe, from int, pod, during string) {
		t.Helper()
		p.collect(t, p.Mark(), 50)
		p.AssertOnlyPods(t, from, during, pod)
		p.AssertNoFailures(t, from, during)
	}

	e.Step(t, "no routes: both on echo's own pod", nil, func(t *testing.T, s Stack) {
		teamA[s].WaitServedBy(t, own)
		teamB[s].WaitServedBy(t, own)
	})

	marksB := teamB.Marks()
	e.Step(t, "team-a's route without a ReferenceGrant: team-a UNAVAILABLE, team-b unmoved", func() {
		e.Apply(t, consumerRoute)
	}, func(t *testing.T, s Stack) {
		teamA[s].WaitFailingWith(t, "Unavailable")
		stays(t, teamB[s], marksB[s], own, "since team-a's route was created")
	})

	e.Step(t, "ReferenceGrant: team-a on echo-v2, team-b unmoved", func() {
		e.Apply(t, grantTeamA)
	}, func(t *testing.T, s Stack) {
		teamA[s].WaitServedBy(t, v2)
		stays(t, teamB[s], marksB[s], own, "since team-a's route was created")
	})

	marksA := teamA.Marks()
	e.Step(t, "producer route to echo-v3: team-b moves, team-a keeps its own route", func() {
		e.Apply(t, producerRoute)
	}, func(t *testing.T, s Stack) {
		teamB[s].WaitServedBy(t, v3)
		stays(t, teamA[s], marksA[s], v2, "since the producer route was created")
	})

	e.Step(t, "team-a's route deleted: team-a follows the producer's", func() {
		e.Delete(t, consumerRoute)
	}, func(t *testing.T, s Stack) {
		teamA[s].WaitServedBy(t, v3)
		teamB[s].WaitServedBy(t, v3)
	})
}
