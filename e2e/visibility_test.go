package e2e

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// TestVisibilityNamespaceShowsOnlyOwnAndExported (visibility): with
// --visibility=namespace a client sees its own namespace's Services and
// those exported to it (nodexds.io/export-to), and nothing else — another
// namespace's private Service is answered as if it did not exist.
//
// Each client is a pod of its namespace with an IP of its own: it dials the
// agent at its own pod IP (the agents listen on every address of the node),
// so the agent sees the pod's IP as the peer, as it would from a pod's
// network namespace.
func TestVisibilityNamespaceShowsOnlyOwnAndExported(t *testing.T) {
	e := StartEnvWith(t, EnvOptions{AgentArgs: []string{"--visibility=namespace", "--xds-listen=:18000"}}, "team-a", "team-b")
	e.CreateService(t, "team-a", "own")
	e.CreateService(t, "team-b", "private")
	e.CreateService(t, "team-b", "shared", func(s *corev1.Service) {
		s.Annotations = map[string]string{"nodexds.io/export-to": "team-a"}
	})
	own := Backend{Namespace: "team-a", Service: "own", Node: clientNode, N: 1}
	private := Backend{Namespace: "team-b", Service: "private", Node: clientNode, N: 1}
	shared := Backend{Namespace: "team-b", Service: "shared", Node: clientNode, N: 1}
	for _, b := range []Backend{own, private, shared} {
		e.StartBackend(t, b)
	}
	clientA := e.StartPod(t, cluster.PodSpec{Namespace: "team-a", Name: "client-a", Node: clientNode})
	clientB := e.StartPod(t, cluster.PodSpec{Namespace: "team-b", Name: "client-b", Node: clientNode})
	via := func(p *cluster.Pod) string { return net.JoinHostPort(p.IP.String(), "18000") }

	probe := func(name, ns, svc string, from *cluster.Pod) *Probe {
		return e.StartProbe(t, ProbeOptions{Stack: Go, Name: name, Targets: []string{Target(ns, svc)}, Server: via(from)})
	}
	aOwn := probe("a-own", "team-a", "own", clientA)
	aShared := probe("a-shared", "team-b", "shared", clientA)
	aPrivate := probe("a-private", "team-b", "private", clientA)
	bPrivate := probe("b-private", "team-b", "private", clientB)
	bOther := probe("b-other", "team-a", "own", clientB)

	aOwn.WaitServedBy(t, own.Name())
	aShared.WaitServedBy(t, shared.Name())
	bPrivate.WaitServedBy(t, private.Name())
	aPrivate.WaitFailing(t)
	bOther.WaitFailing(t)
	for _, p := range []*Probe{aPrivate, bOther} {
		p.AssertOnlyPods(t, 0, "for a Service its namespace may not see")
	}
}
