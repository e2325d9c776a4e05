package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// annotationTopology is the per-Service tier list (agent/topology).
const annotationTopology = "nodexds.io/topology"

// fleet is one Service's pods across the nodes, with stable names: the
// n-th pod started on node-a1 is <svc>-a1-<n>.
type fleet struct {
	e       *Env
	ns, svc string
	pods    map[string][]*cluster.Pod // node → its running pods
	started map[string]int            // node → pods ever started there
	ever    map[string][]string       // node → names of every pod it ran
}

func newFleet(e *Env, ns, svc string) *fleet {
	return &fleet{e: e, ns: ns, svc: svc,
		pods: map[string][]*cluster.Pod{}, started: map[string]int{}, ever: map[string][]string{}}
}

// start runs n more pods on each of nodes.
func (f *fleet) start(t testing.TB, n int, nodes ...string) {
	t.Helper()
	for _, node := range nodes {
		for range n {
			f.started[node]++
			b := Backend{Namespace: f.ns, Service: f.svc, Node: node, N: f.started[node]}
			f.pods[node] = append(f.pods[node], f.e.StartBackend(t, b))
			f.ever[node] = append(f.ever[node], b.Name())
		}
	}
}

// names returns the names of the running pods on nodes.
func (f *fleet) names(nodes ...string) []string {
	var out []string
	for _, node := range nodes {
		for _, p := range f.pods[node] {
			out = append(out, p.Name)
		}
	}
	return out
}

// everOn returns the names of every pod that ran on nodes.
func (f *fleet) everOn(nodes ...string) []string {
	var out []string
	for _, node := range nodes {
		out = append(out, f.ever[node]...)
	}
	return out
}

// terminate deletes the pods on nodes (they turn Terminating; their
// processes keep running) and returns them for finish.
func (f *fleet) terminate(t testing.TB, nodes ...string) []*cluster.Pod {
	t.Helper()
	var out []*cluster.Pod
	for _, node := range nodes {
		for _, p := range f.pods[node] {
			f.e.DeletePod(t, p)
			out = append(out, p)
		}
		delete(f.pods, node)
	}
	return out
}

// finish ends terminated pods as a kubelet does once their grace is over.
func (f *fleet) finish(t testing.TB, pods []*cluster.Pod) {
	t.Helper()
	for _, p := range pods {
		f.e.FinishPodDeletion(t, p)
	}
}

// waitServiceEvent waits for a Warning Event with reason on the Service,
// posted by nodexds: proof the agent reports what it ignores, and that
// deploy/rbac.yaml lets it.
func (e *Env) waitServiceEvent(t testing.TB, ns, svc, reason string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		list, err := e.Client().CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + svc + ",reason=" + reason,
		})
		if err != nil {
			t.Fatalf("e2e: list events: %v", err)
		}
		for _, ev := range list.Items {
			if ev.Type == corev1.EventTypeWarning && ev.Source.Component == "nodexds" {
				t.Logf("event on service %s/%s from %s: %s", ns, svc, ev.Source.Host, ev.Message)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no Warning %s Event from nodexds on service %s/%s within %s (%d events with that reason)",
				reason, ns, svc, waitTimeout, len(list.Items))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// targetService is the Service name in an xds:/// target from Target.
func targetService(target string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(target, "xds:///"), ".")
	return name
}
