package discovery

import (
	"cmp"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Route kinds: the Gateway API routes a proxyless gRPC client can carry out.
const (
	KindGRPCRoute = "GRPCRoute"
	KindHTTPRoute = "HTTPRoute"
)

// RouteKey names a GRPCRoute or an HTTPRoute.
type RouteKey struct{ Kind, Namespace, Name string }

func (k RouteKey) String() string { return k.Kind + " " + k.Namespace + "/" + k.Name }

// Route is a GRPCRoute or an HTTPRoute (exactly one of GRPC and HTTP is set).
// Its spec is kept as the API has it. A field left out (a route read from a
// file, where no API server applied the CRDs' defaults) means its default.
type Route struct {
	Key        RouteKey
	UID        string
	Generation int64
	Created    time.Time // ties in rule precedence go to the oldest route
	GRPC       *gwv1.GRPCRouteSpec
	HTTP       *gwv1.HTTPRouteSpec
}

// ParentRefs returns the route's parentRefs.
func (r *Route) ParentRefs() []gwv1.ParentReference {
	switch {
	case r.GRPC != nil:
		return r.GRPC.ParentRefs
	case r.HTTP != nil:
		return r.HTTP.ParentRefs
	}
	return nil // a deletion names the route only
}

// ParentServices returns the Services the route names as parents (the
// parentRefs of group "" and kind Service), in order, without repeats.
func (r *Route) ParentServices() []ServiceKey {
	var out []ServiceKey
	for _, p := range r.ParentRefs() {
		if k, ok := ParentService(r.Key.Namespace, p); ok && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// BackendServices returns the Services the route's backendRefs name.
func (r *Route) BackendServices() []ServiceKey {
	var out []ServiceKey
	for _, b := range r.BackendRefs() {
		if k, ok := BackendService(r.Key.Namespace, b.BackendObjectReference); ok && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// BackendRefs returns the backendRefs of all of the route's rules, in order.
func (r *Route) BackendRefs() []gwv1.BackendRef {
	var out []gwv1.BackendRef
	if r.GRPC != nil {
		for _, rule := range r.GRPC.Rules {
			for _, b := range rule.BackendRefs {
				out = append(out, b.BackendRef)
			}
		}
		return out
	}
	if r.HTTP != nil {
		for _, rule := range r.HTTP.Rules {
			for _, b := range rule.BackendRefs {
				out = append(out, b.BackendRef)
			}
		}
	}
	return out
}

// ParentService returns the Service a parentRef of a route in namespace ns
// names; ok is false for other kinds of parent (Gateways are not ours).
func ParentService(ns string, p gwv1.ParentReference) (ServiceKey, bool) {
	if deref(p.Group, gwv1.GroupName) != "" || deref(p.Kind, "Gateway") != "Service" {
		return ServiceKey{}, false
	}
	return ServiceKey{Namespace: string(deref(p.Namespace, gwv1.Namespace(ns))), Name: string(p.Name)}, true
}

// BackendService returns the Service a backendRef of a route in namespace ns
// names; ok is false for any other kind of backend.
func BackendService(ns string, b gwv1.BackendObjectReference) (ServiceKey, bool) {
	if deref(b.Group, "") != "" || deref(b.Kind, "Service") != "Service" {
		return ServiceKey{}, false
	}
	return ServiceKey{Namespace: string(deref(b.Namespace, gwv1.Namespace(ns))), Name: string(b.Name)}, true
}

// Grant is a ReferenceGrant: in its namespace, the objects To may be
// referred to from the namespaces and kinds From.
type Grant struct {
	Namespace, Name string
	Spec            gwv1.ReferenceGrantSpec
}

// Permits says whether the grant lets a route of kind in namespace from refer
// to the Service named svc in the grant's namespace.
func (g *Grant) Permits(kind, from, svc string) bool {
	fromOK := false
	for _, f := range g.Spec.From {
		if f.Group == gwv1.GroupName && string(f.Kind) == kind && string(f.Namespace) == from {
			fromOK = true
			break
		}
	}
	if !fromOK {
		return false
	}
	for _, t := range g.Spec.To {
		if t.Group == "" && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == svc) {
			return true
		}
	}
	return false
}

func deref[T ~string](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// routeIndex holds routes and grants, indexed by the Services a route names,
// so that a change finds the Services whose route configuration it touches.
type routeIndex struct {
	routes    map[RouteKey]*Route
	grants    map[ServiceKey]*Grant // by namespace/name
	byParent  map[ServiceKey]map[RouteKey]struct{}
	byBackend map[ServiceKey]map[RouteKey]struct{}
}

func newRouteIndex() routeIndex {
	return routeIndex{
		routes:    map[RouteKey]*Route{},
		grants:    map[ServiceKey]*Grant{},
		byParent:  map[ServiceKey]map[RouteKey]struct{}{},
		byBackend: map[ServiceKey]map[RouteKey]struct{}{},
	}
}

// applyRoute records r and returns the parents it had or has.
func (x *routeIndex) applyRoute(r *Route, deleted bool) []ServiceKey {
	old, ok := x.routes[r.Key]
	if deleted && !ok || !deleted && ok && reflect.DeepEqual(old, r) {
		return nil
	}
	var touched []ServiceKey
	if ok {
		touched = old.ParentServices()
		unindex(x.byParent, touched, r.Key)
		unindex(x.byBackend, old.BackendServices(), r.Key)
		delete(x.routes, r.Key)
	}
	parents := r.ParentServices()
	if deleted || len(parents) == 0 { // a route of Gateways only is not ours
		return touched
	}
	x.routes[r.Key] = r
	index(x.byParent, parents, r.Key)
	index(x.byBackend, r.BackendServices(), r.Key)
	for _, p := range parents {
		if !slices.Contains(touched, p) {
			touched = append(touched, p)
		}
	}
	return touched
}

// applyGrant records g and returns the parents of the routes that refer
// across namespaces to a Service in g's namespace: what it permits may have
// changed for any of them.
func (x *routeIndex) applyGrant(g *Grant, deleted bool) []ServiceKey {
	k := ServiceKey{Namespace: g.Namespace, Name: g.Name}
	old, ok := x.grants[k]
	if deleted && !ok || !deleted && ok && reflect.DeepEqual(old, g) {
		return nil
	}
	if deleted {
		delete(x.grants, k)
	} else {
		x.grants[k] = g
	}
	var touched []ServiceKey
	for backend, routes := range x.byBackend {
		if backend.Namespace != g.Namespace {
			continue
		}
		for rk := range routes {
			if rk.Namespace != g.Namespace {
				touched = x.addParents(touched, rk)
			}
		}
	}
	return touched
}

// ParentsOf returns the parents of the routes that send to backend.
func (s *Store) ParentsOf(backend ServiceKey) []ServiceKey {
	return s.routes.parentsOfBackend(backend)
}

// parentsOfBackend returns the parents of the routes that send to svc.
func (x *routeIndex) parentsOfBackend(svc ServiceKey) []ServiceKey {
	var touched []ServiceKey
	for rk := range x.byBackend[svc] {
		touched = x.addParents(touched, rk)
	}
	return touched
}

func (x *routeIndex) addParents(to []ServiceKey, rk RouteKey) []ServiceKey {
	for _, p := range x.routes[rk].ParentServices() {
		if !slices.Contains(to, p) {
			to = append(to, p)
		}
	}
	return to
}

func index(m map[ServiceKey]map[RouteKey]struct{}, ks []ServiceKey, rk RouteKey) {
	for _, k := range ks {
		if m[k] == nil {
			m[k] = map[RouteKey]struct{}{}
		}
		m[k][rk] = struct{}{}
	}
}

func unindex(m map[ServiceKey]map[RouteKey]struct{}, ks []ServiceKey, rk RouteKey) {
	for _, k := range ks {
		delete(m[k], rk)
		if len(m[k]) == 0 {
			delete(m, k)
		}
	}
}

// Routes returns the routes that name parent as a parent, from any
// namespace, sorted by key.
func (s *Store) Routes(parent ServiceKey) []*Route {
	keys := slices.SortedFunc(maps.Keys(s.routes.byParent[parent]), compareRouteKeys)
	out := make([]*Route, len(keys))
	for i, k := range keys {
		out[i] = s.routes.routes[k]
	}
	return out
}

// Grants returns the ReferenceGrants of namespace ns.
func (s *Store) Grants(ns string) []*Grant {
	var out []*Grant
	for k, g := range s.routes.grants {
		if k.Namespace == ns {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b *Grant) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RouteCount returns how many routes there are.
func (s *Store) RouteCount() int { return len(s.routes.routes) }

// AllRoutes returns every route, sorted by key.
func (s *Store) AllRoutes() []*Route {
	keys := slices.SortedFunc(maps.Keys(s.routes.routes), compareRouteKeys)
	out := make([]*Route, len(keys))
	for i, k := range keys {
		out[i] = s.routes.routes[k]
	}
	return out
}

func compareRouteKeys(a, b RouteKey) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name), strings.Compare(a.Kind, b.Kind))
}

// FromGRPCRoute converts a GRPCRoute; its status is not kept.
func FromGRPCRoute(r *gwv1.GRPCRoute) *Route {
	spec := r.Spec
	return &Route{Key: RouteKey{KindGRPCRoute, r.Namespace, r.Name}, UID: string(r.UID), Generation: r.Generation, Created: r.CreationTimestamp.Time, GRPC: &spec}
}

// FromHTTPRoute converts an HTTPRoute; its status is not kept.
func FromHTTPRoute(r *gwv1.HTTPRoute) *Route {
	spec := r.Spec
	return &Route{Key: RouteKey{KindHTTPRoute, r.Namespace, r.Name}, UID: string(r.UID), Generation: r.Generation, Created: r.CreationTimestamp.Time, HTTP: &spec}
}

// FromReferenceGrant converts a ReferenceGrant.
func FromReferenceGrant(g *gwv1.ReferenceGrant) *Grant {
	return &Grant{Namespace: g.Namespace, Name: g.Name, Spec: g.Spec}
}
