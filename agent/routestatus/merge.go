// Package routestatus writes the status of Gateway API routes attached to
// Services: for each Service parentRef, a status.parents entry of controller
// nodexds.io/agent with the conditions Accepted and ResolvedRefs. One agent
// writes at a time, the holder of a coordination.k8s.io Lease; writes are
// made only where the status differs, and at a bounded rate.
package routestatus

import (
	"encoding/json"
	"reflect"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/agent/mesh"
)

// Controller is the controllerName of the entries nodexds writes.
const Controller gwv1.GatewayController = "nodexds.io/agent"

// Desired is the status.parents entries a route of generation gen should
// have from this controller, one per distinct Service parentRef, without
// lastTransitionTime (Merge sets it).
func Desired(parents []mesh.ParentStatus, gen int64) []gwv1.RouteParentStatus {
	out := []gwv1.RouteParentStatus{}
	for _, p := range parents {
		if indexOf(out, p.Ref) >= 0 {
			continue // the same parentRef twice: one entry
		}
		out = append(out, gwv1.RouteParentStatus{
			ParentRef:      p.Ref,
			ControllerName: Controller,
			Conditions: []metav1.Condition{
				condition(gwv1.RouteConditionAccepted, p.Accepted, gen),
				condition(gwv1.RouteConditionResolvedRefs, p.ResolvedRefs, gen),
			},
		})
	}
	return out
}

func condition(t gwv1.RouteConditionType, c mesh.Condition, gen int64) metav1.Condition {
	st := metav1.ConditionFalse
	if c.Status {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(t), Status: st, Reason: c.Reason, Message: c.Message, ObservedGeneration: gen}
}

func indexOf(ps []gwv1.RouteParentStatus, ref gwv1.ParentReference) int {
	for i := range ps {
		if equality.Semantic.DeepEqual(ps[i].ParentRef, ref) {
			return i
		}
	}
	return -1
}

// Merge returns a route's status.parents (current, as the API has them,
// each entry as its JSON) with this controller's entries replaced by want,
// and whether that changes anything. Other controllers' entries are kept
// byte for byte and in place; this controller's come after them. A
// condition keeps its lastTransitionTime while its status is unchanged;
// otherwise it is now.
func Merge(current []json.RawMessage, want []gwv1.RouteParentStatus, now metav1.Time) (next []json.RawMessage, changed bool, err error) {
	var others []json.RawMessage
	var ours []gwv1.RouteParentStatus
	for _, raw := range current {
		var p gwv1.RouteParentStatus
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, false, err
		}
		if p.ControllerName == Controller {
			ours = append(ours, p)
		} else {
			others = append(others, raw)
		}
	}
	merged := make([]gwv1.RouteParentStatus, len(want))
	for i, w := range want {
		merged[i] = *w.DeepCopy()
		var old []metav1.Condition
		if j := indexOf(ours, w.ParentRef); j >= 0 {
			old = ours[j].Conditions
		}
		for k := range merged[i].Conditions {
			c := &merged[i].Conditions[k]
			c.LastTransitionTime = now
			for _, o := range old {
				if o.Type == c.Type && o.Status == c.Status {
					c.LastTransitionTime = o.LastTransitionTime
				}
			}
		}
	}
	if Same(ours, merged) {
		return current, false, nil
	}
	next = append([]json.RawMessage{}, others...)
	for _, p := range merged {
		raw, err := json.Marshal(p)
		if err != nil {
			return nil, false, err
		}
		next = append(next, raw)
	}
	return next, true, nil
}

// Same reports whether two lists of this controller's entries say the same,
// in any order; lastTransitionTime counts only when both have one (the
// entries Desired makes have none).
func Same(a, b []gwv1.RouteParentStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		j := indexOf(b, x.ParentRef)
		if j < 0 || !sameConditions(x.Conditions, b[j].Conditions) {
			return false
		}
	}
	return true
}

func sameConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if !x.LastTransitionTime.IsZero() && !y.LastTransitionTime.IsZero() && !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
		x.LastTransitionTime, y.LastTransitionTime = metav1.Time{}, metav1.Time{}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

// Ours returns this controller's entries among a route's status.parents.
func Ours(current []json.RawMessage) []gwv1.RouteParentStatus {
	var out []gwv1.RouteParentStatus
	for _, raw := range current {
		var p gwv1.RouteParentStatus
		if json.Unmarshal(raw, &p) == nil && p.ControllerName == Controller {
			out = append(out, p)
		}
	}
	return out
}
