package e2e

import (
	"testing"
	"time"
)

// TestFallbackServesANewClientWhileItsAgentIsDown (fallback, gRFC A71):
// with node-a1's agent down, a new grpc-go client on node-a1 whose bootstrap
// names node-a2's agent as fallback gets node-a1's priorities from it (the
// API server tells node-a2's agent that the client is a pod of node-a1),
// returns to its own agent once that is back, and still follows endpoint
// changes there. (grpc-js-xds 1.14 and C-core 1.51 use only the first
// server: they are not part of this scenario.)
func TestFallbackServesANewClientWhileItsAgentIsDown(t *testing.T) {
	const ns = "fallback"
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	local := Backend{Namespace: ns, Service: "be", Node: clientNode, N: 1}
	zone := Backend{Namespace: ns, Service: "be", Node: "node-a2", N: 1}
	localPod := e.StartBackend(t, local)
	e.StartBackend(t, zone)
	agent := e.Agents[clientNode]

	agent.Kill(t)
	started := time.Now()
	p := e.StartProbe(t, ProbeOptions{Stack: Go, Targets: []string{Target(ns, "be")}, Fallback: "node-a2"})
	p.WaitServedByWithin(t, 3*time.Second, local.Name())
	t.Logf("a client started while its agent was down reached its node's pod through node-a2's agent %v after it started",
		time.Since(started).Round(time.Millisecond))
	served := p.Mark()

	agent.Start(t)
	agent.waitReady(t)
	deadline := time.Now().Add(30 * time.Second)
	for agent.connectedClients(t) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the client did not return to its node's agent within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Back on its own agent, the client follows changes made there.
	e.SetPodReady(t, localPod, false)
	p.WaitServedBy(t, zone.Name())
	p.AssertNoFailures(t, served, "through fallback, return and the endpoint change")
}
