package discovery

import (
	"fmt"
	"slices"
	"testing"

	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func parseOne(t *testing.T, yaml string) Event {
	t.Helper()
	evs, err := ParseObjects([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	return evs[0]
}

func route(ns, name, parent, backend string) string {
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: %s, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: %s}]
  rules: [{backendRefs: [{name: %s, port: 80}]}]
`, name, ns, parent, backend)
}

func grant(ns, from string) string {
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: g, namespace: %s}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: %s}]
  to: [{group: "", kind: Service}]
`, ns, from)
}

func keys(ks []ServiceKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.String())
	}
	slices.Sort(out)
	return out
}

// TestRouteChangesReachTheirParents: every change that can alter a
// Service's routing names that Service, and nothing else does.
func TestRouteChangesReachTheirParents(t *testing.T) {
	s := NewStore()
	step := func(what string, e Event, want ...string) {
		t.Helper()
		if got := keys(s.Apply(e).Routed); !slices.Equal(got, want) {
			t.Errorf("%s: routed %v, want %v", what, got, want)
		}
	}
	step("a route names its parent", parseOne(t, route("a", "r", "front", "v2")), "a/front")
	step("the same route again changes nothing", parseOne(t, route("a", "r", "front", "v2")))
	step("moving it to another parent touches both", parseOne(t, route("a", "r", "other", "v2")), "a/front", "a/other")
	step("its backend Service appearing touches its parent", Event{Service: &Service{Key: ServiceKey{"a", "v2"}}}, "a/other")
	step("an unrelated Service touches nothing", Event{Service: &Service{Key: ServiceKey{"a", "v3"}}})
	step("a consumer route across namespaces", parseOne(t, route("c", "r", "front", "v2")), "c/front")
	cross := parseOne(t, route("c", "x", "front2", "v2"))
	cross.Route.GRPC.Rules[0].BackendRefs[0].Namespace = ptr.To[gwv1.Namespace]("a")
	step("a route to another namespace's backend", cross, "c/front2")
	step("a grant in the backend's namespace touches routes that cross into it", parseOne(t, grant("a", "c")), "c/front2")
	step("a grant elsewhere touches nothing", parseOne(t, grant("b", "c")))
	step("deleting the route touches its parent", Event{Route: &Route{Key: RouteKey{KindGRPCRoute, "a", "r"}}, Deleted: true}, "a/other")
	step("deleting it twice touches nothing", Event{Route: &Route{Key: RouteKey{KindGRPCRoute, "a", "r"}}, Deleted: true})

	if got := s.Routes(ServiceKey{"c", "front2"}); len(got) != 1 || got[0].Key.Name != "x" {
		t.Errorf("routes of c/front2: %v", got)
	}
	if got := s.Grants("a"); len(got) != 1 {
		t.Errorf("grants of a: %v", got)
	}
}

func TestFileSourceReadsRoutes(t *testing.T) {
	e := parseOne(t, route("", "r", "front", "v2"))
	if e.Route == nil || e.Route.Key != (RouteKey{KindGRPCRoute, "default", "r"}) {
		t.Fatalf("got %+v", e)
	}
	if got := keys(e.Route.ParentServices()); !slices.Equal(got, []string{"default/front"}) {
		t.Errorf("parents %v", got)
	}
	for _, bad := range []string{
		"apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: r}\nspec: {parentRefs: [{nmae: x}]}",
		"apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: GRPCRoute\nmetadata: {name: r}\nspec: {}",
	} {
		if _, err := ParseObjects([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if evs, err := ParseObjects([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}")); err != nil || len(evs) != 1 || evs[0].Namespace == nil {
		t.Errorf("Namespace: %v %v", evs, err)
	}
}

func TestParentAndBackendRefsTakeTheCRDDefaults(t *testing.T) {
	e := parseOne(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: a}
spec:
  parentRefs: [{name: a-gateway}, {group: "", kind: Service, name: s, namespace: b}]
  rules: [{backendRefs: [{name: one, port: 80}, {kind: ConfigMap, name: two}]}]
`)
	if got := keys(e.Route.ParentServices()); !slices.Equal(got, []string{"b/s"}) {
		t.Errorf("parents %v: a parentRef without group and kind is a Gateway", got)
	}
	if got := keys(e.Route.BackendServices()); !slices.Equal(got, []string{"a/one"}) {
		t.Errorf("backends %v: a backendRef without kind is a Service", got)
	}
}
