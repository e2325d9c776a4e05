package routestatus_test

import (
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/routestatus"
)

func serviceRef(name string) gwv1.ParentReference {
	g, k := gwv1.Group(""), gwv1.Kind("Service")
	return gwv1.ParentReference{Group: &g, Kind: &k, Name: gwv1.ObjectName(name)}
}

func accepted(name string) mesh.ParentStatus {
	return mesh.ParentStatus{
		Ref:          serviceRef(name),
		Accepted:     mesh.Condition{Status: true, Reason: "Accepted", Message: "routes default/" + name},
		ResolvedRefs: mesh.Condition{Status: true, Reason: "ResolvedRefs", Message: "all backends resolved"},
	}
}

// other is a Gateway controller's entry, with a field this package's types
// do not know: it must come back byte for byte.
const other = `{"conditions":[{"lastTransitionTime":"2020-01-01T00:00:00Z","message":"","observedGeneration":1,"reason":"Accepted","status":"True","type":"Accepted"}],"controllerName":"example.com/gateway","futureField":{"x":1},"parentRef":{"name":"gw"}}`

var (
	t0 = metav1.NewTime(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(t0.Add(time.Hour))
)

func decode(t *testing.T, raws []json.RawMessage) []gwv1.RouteParentStatus {
	t.Helper()
	var out []gwv1.RouteParentStatus
	for _, r := range raws {
		var p gwv1.RouteParentStatus
		if err := json.Unmarshal(r, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestMergeWritesOneEntryPerServiceParentRefThenNothing(t *testing.T) {
	want := routestatus.Desired([]mesh.ParentStatus{accepted("a"), accepted("a"), accepted("b")}, 7)
	next, changed, err := routestatus.Merge(nil, want, t0)
	if err != nil || !changed {
		t.Fatalf("Merge(empty) = changed %v, %v; want a write", changed, err)
	}
	got := decode(t, next)
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2 (one per distinct parentRef): %s", len(got), next)
	}
	for _, p := range got {
		if p.ControllerName != "nodexds.io/agent" || len(p.Conditions) != 2 {
			t.Fatalf("entry %+v", p)
		}
		for _, c := range p.Conditions {
			if c.ObservedGeneration != 7 || c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Equal(&t0) {
				t.Errorf("condition %+v: want observedGeneration 7, True, lastTransitionTime %v", c, t0)
			}
		}
		if p.Conditions[0].Type != "Accepted" || p.Conditions[1].Type != "ResolvedRefs" {
			t.Errorf("condition types %s, %s", p.Conditions[0].Type, p.Conditions[1].Type)
		}
	}
	// Nothing changed: no write, whatever the time.
	if _, changed, _ := routestatus.Merge(next, want, t1); changed {
		t.Error("the same status again: Merge wants a write")
	}
	// The same entries in another order are the same status.
	if _, changed, _ := routestatus.Merge([]json.RawMessage{next[1], next[0]}, want, t1); changed {
		t.Error("the same entries in another order: Merge wants a write")
	}
}

func TestMergeLeavesOtherControllersAlone(t *testing.T) {
	ours, _, _ := routestatus.Merge(nil, routestatus.Desired([]mesh.ParentStatus{accepted("a")}, 1), t0)
	current := []json.RawMessage{ours[0], json.RawMessage(other)}
	refused := accepted("a")
	refused.ResolvedRefs = mesh.Condition{Reason: "BackendNotFound", Message: "no such Service default/x"}
	next, changed, err := routestatus.Merge(current, routestatus.Desired([]mesh.ParentStatus{refused}, 2), t1)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if len(next) != 2 || string(next[0]) != other {
		t.Fatalf("the other controller's entry is not kept as it was: %s", next)
	}
	p := decode(t, next[1:])[0]
	acc, res := p.Conditions[0], p.Conditions[1]
	if !acc.LastTransitionTime.Equal(&t0) || acc.ObservedGeneration != 2 {
		t.Errorf("Accepted stayed True: lastTransitionTime %v (want %v kept), observedGeneration %d (want 2)", acc.LastTransitionTime, t0, acc.ObservedGeneration)
	}
	if res.Status != metav1.ConditionFalse || res.Reason != "BackendNotFound" || !res.LastTransitionTime.Equal(&t1) {
		t.Errorf("ResolvedRefs %+v: want False, BackendNotFound, lastTransitionTime %v", res, t1)
	}

	// No Service parentRef left: ours goes, the other stays.
	next, changed, _ = routestatus.Merge(next, routestatus.Desired(nil, 3), t1)
	if !changed || len(next) != 1 || string(next[0]) != other {
		t.Errorf("removing our entry: changed %v, %s", changed, next)
	}
	// Only another controller's entry, nothing of ours to write: no write.
	if _, changed, _ := routestatus.Merge([]json.RawMessage{json.RawMessage(other)}, routestatus.Desired(nil, 3), t1); changed {
		t.Error("nothing of ours, nothing wanted: Merge wants a write")
	}
}

func TestMergeMessageChangeWritesButKeepsTransitionTime(t *testing.T) {
	cur, _, _ := routestatus.Merge(nil, routestatus.Desired([]mesh.ParentStatus{accepted("a")}, 1), t0)
	st := accepted("a")
	st.Accepted.Message = "something else"
	next, changed, _ := routestatus.Merge(cur, routestatus.Desired([]mesh.ParentStatus{st}, 1), t1)
	if !changed {
		t.Fatal("a new message: no write")
	}
	if c := decode(t, next)[0].Conditions[0]; c.Message != "something else" || !c.LastTransitionTime.Equal(&t0) {
		t.Errorf("Accepted %+v: want the new message and lastTransitionTime %v", c, t0)
	}
}
