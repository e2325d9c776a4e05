package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Route status as users read it (kubectl get grpcroute -o yaml): with
// several agents running, exactly one status.parents entry of controller
// nodexds.io/agent per Service parentRef, with Accepted and ResolvedRefs
// and the route's generation, written by the holder of the Lease
// nodexds/nodexds-route-status alone; another controller's entry is left
// alone; when the holder dies, another agent takes over.

const statusNS = "status"

var (
	grpcRoutes = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "grpcroutes"}
	leases     = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}
)

func statusRoute(weight int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - backendRefs: [{name: echo-v1, port: 8080, weight: %d}]
`, statusNS, weight)
}

// routeParents reads the route's generation and status.parents.
func routeParents(t *testing.T, e *Env) (int64, []map[string]any) {
	t.Helper()
	u, err := e.Dynamic(t).Resource(grpcRoutes).Namespace(statusNS).Get(context.Background(), "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	var out []map[string]any
	for _, p := range ps {
		out = append(out, p.(map[string]any))
	}
	return u.GetGeneration(), out
}

// ourCondition returns the type's status and reason in our single entry;
// ok false unless there is exactly one entry of ours, with observedGeneration
// gen on both its conditions.
func ourConditions(parents []map[string]any, gen int64) (conds map[string]string, ok bool) {
	var ours []map[string]any
	for _, p := range parents {
		if p["controllerName"] == "nodexds.io/agent" {
			ours = append(ours, p)
		}
	}
	if len(ours) != 1 {
		return nil, false
	}
	conds = map[string]string{}
	cs, _ := ours[0]["conditions"].([]any)
	for _, c := range cs {
		m := c.(map[string]any)
		if g, _ := m["observedGeneration"].(int64); g != gen {
			return nil, false
		}
		conds[m["type"].(string)] = fmt.Sprintf("%v/%v", m["status"], m["reason"])
	}
	return conds, len(conds) == 2
}

func waitStatus(t *testing.T, e *Env, what string, accepted, resolved string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		gen, ps := routeParents(t, e)
		if c, ok := ourConditions(ps, gen); ok && c["Accepted"] == accepted && c["ResolvedRefs"] == resolved {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: route status %v (generation %d); want one nodexds.io/agent entry, Accepted %s, ResolvedRefs %s", what, ps, gen, accepted, resolved)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func leaseHolder(t *testing.T, e *Env) string {
	t.Helper()
	l, err := e.Dynamic(t).Resource(leases).Namespace("nodexds").Get(context.Background(), "nodexds-route-status", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	h, _, _ := unstructured.NestedString(l.Object, "spec", "holderIdentity")
	return h
}

func TestRouteStatusIsWrittenByTheLeaseHolderOnly(t *testing.T) {
	// The harness runs agents without POD_NAMESPACE (no downward API): the
	// Lease's namespace is given as the DaemonSet's env would.
	e := StartEnvWith(t, EnvOptions{AgentArgs: []string{"--status-lease-namespace=nodexds"}}, statusNS)
	e.InstallGatewayAPI(t)
	e.CreateService(t, statusNS, "echo")
	e.Apply(t, statusRoute(1))

	t.Run("one entry, backend not found", func(t *testing.T) {
		waitStatus(t, e, "echo-v1 missing", "True/Accepted", "False/BackendNotFound")
	})

	// Another controller's entry (as a Gateway controller would write it).
	other := map[string]any{
		"controllerName": "example.com/gateway",
		"parentRef":      map[string]any{"name": "gw"},
		"conditions": []any{map[string]any{
			"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
			"observedGeneration": int64(1), "lastTransitionTime": "2020-01-01T00:00:00Z",
		}},
	}
	r := e.Dynamic(t).Resource(grpcRoutes).Namespace(statusNS)
	for {
		u, err := r.Get(context.Background(), "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ps, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
		_ = unstructured.SetNestedSlice(u.Object, append([]any{other}, ps...), "status", "parents")
		if _, err = r.UpdateStatus(context.Background(), u, metav1.UpdateOptions{}); err == nil {
			break
		} else if !strings.Contains(err.Error(), "modified") {
			t.Fatal(err)
		}
	}

	t.Run("backend created: ResolvedRefs, the other controller's entry kept", func(t *testing.T) {
		e.CreateService(t, statusNS, "echo-v1")
		waitStatus(t, e, "echo-v1 created", "True/Accepted", "True/ResolvedRefs")
		_, ps := routeParents(t, e)
		if len(ps) != 2 || ps[0]["controllerName"] != "example.com/gateway" {
			t.Errorf("status.parents %v: want example.com/gateway's entry kept", ps)
		}
	})

	t.Run("spec changed: observedGeneration follows", func(t *testing.T) {
		e.Apply(t, statusRoute(2))
		waitStatus(t, e, "generation 2", "True/Accepted", "True/ResolvedRefs")
	})

	holder := ""
	t.Run("written by the lease holder only", func(t *testing.T) {
		holder = leaseHolder(t, e)
		leaders, writes := 0, 0.0
		for node, a := range e.Agents {
			lead := a.metric(t, "nodexds_route_status_leader")
			w := a.metric(t, `nodexds_route_status_writes_total{result="written"}`)
			t.Logf("agent %s: leader %v, status writes %v", node, lead, w)
			if lead == 1 {
				leaders++
				if holder != node {
					t.Errorf("agent %s leads, the Lease names %q", node, holder)
				}
				writes += w
			} else if w != 0 {
				t.Errorf("agent %s wrote status %v times without the Lease", node, w)
			}
		}
		if leaders != 1 || writes < 3 {
			t.Errorf("%d agents lead, %v writes by the leader; want 1, at least 3", leaders, writes)
		}
	})

	t.Run("the holder dies: another agent takes over and writes", func(t *testing.T) {
		a, ok := e.Agents[holder]
		if !ok {
			t.Skipf("no agent named like the Lease holder %q", holder)
		}
		a.Kill(t)
		deadline := time.Now().Add(60 * time.Second)
		for h := leaseHolder(t, e); h == holder || h == ""; h = leaseHolder(t, e) {
			if time.Now().After(deadline) {
				t.Fatalf("the Lease is still %q 60 s after its holder was killed", h)
			}
			time.Sleep(500 * time.Millisecond)
		}
		e.Apply(t, statusRoute(3))
		waitStatus(t, e, "generation 3, by the new holder", "True/Accepted", "True/ResolvedRefs")
		a.Start(t)
		a.waitReady(t)
	})
}
