// Package mesh translates Gateway API routes attached to a Service (GAMMA:
// GRPCRoute and HTTPRoute with a Service parentRef) into the routing of one
// Service port, and says for each route whether it is used and why not.
//
// It is pure: Translate and Status read routes, Services and grants and
// return values; building xDS from them is the resources package's job, and
// each backend then gets its own Service's per-node cluster.
package mesh

import (
	"cmp"
	"slices"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/discovery"
)

// Input is what routing one Service port reads.
type Input struct {
	Parent discovery.ServiceKey
	Port   discovery.Port // the parent Service's port
	// Client is the namespace of the client the routing is for; "" when
	// unknown, which gets the producer's routes only.
	Client string
	// Routes are the routes naming Parent as a parent (discovery.Store.Routes).
	Routes  []*discovery.Route
	Service func(discovery.ServiceKey) (*discovery.Service, bool)
	Grants  func(namespace string) []*discovery.Grant
}

// Table is how one Service port's requests are routed.
type Table struct {
	Rules []Rule               // in precedence order: a request takes the first that matches
	Used  []discovery.RouteKey // the routes the rules come from
	// Dropped are routes left out whole because the port's rules would
	// exceed MaxRules with them.
	Dropped []discovery.RouteKey
}

// MaxRules bounds the rules (one per match) of one Service port, whatever
// its routes say: each is a route in every client's configuration. Routes
// are taken oldest first, each whole or not at all. The Gateway API's own
// validation allows 16 rules of at most 128 matches per route.
const MaxRules = 1000

// Rule is one match of a route rule and where its requests go. A request
// that matches no rule fails with UNAVAILABLE (GEP-1426: routes replace the
// Service's own routing, they do not add to it).
type Rule struct {
	Route discovery.RouteKey
	Index int // of the rule in its route
	Match Match
	// Backends share the rule's requests by weight; none (no backendRefs,
	// or every weight 0) fails them all with UNAVAILABLE.
	Backends []Backend
	Timeout  time.Duration // 0: the Service's own (annotation), if any
}

// Match is one match of a rule: a path and headers, all of which must hold.
type Match struct {
	Path    Path
	Headers []Header
}

// Path kinds, matched against the gRPC method path "/package.Service/Method".
const (
	AnyPath   = ""
	ExactPath = "Exact"
	// PrefixPath matches the value and whatever follows it after a "/":
	// Gateway API prefixes match whole path elements.
	PrefixPath = "PathPrefix"
	RegexPath  = "RegularExpression"
)

// Path is a path condition.
type Path struct{ Kind, Value string }

// Header is a header condition; Name is lower case.
type Header struct {
	Name, Value string
	Regex       bool
}

// Backend is one Service port sharing a rule's requests. An Unresolved one
// (missing, not permitted) takes its share and fails it with UNAVAILABLE.
type Backend struct {
	Service    discovery.ServiceKey
	Port       int32
	Weight     uint32
	Unresolved bool
}

// Translate routes one Service port for one client namespace. It returns
// nil when no route applies: the port is then routed as if no routes
// existed.
func Translate(in Input) *Table {
	routes := applying(in)
	if len(routes) == 0 {
		return nil
	}
	slices.SortStableFunc(routes, func(a, b *discovery.Route) int {
		return cmp.Or(a.Created.Compare(b.Created), compareNames(a.Key, b.Key))
	})
	t := &Table{}
	var entries []entry
	for _, r := range routes {
		es := flatten(r, in)
		if len(entries)+len(es) > MaxRules {
			t.Dropped = append(t.Dropped, r.Key)
			continue
		}
		entries = append(entries, es...)
		t.Used = append(t.Used, r.Key)
	}
	slices.SortStableFunc(entries, func(a, b entry) int {
		return cmp.Or(compareRank(a.rank, b.rank), a.route.Created.Compare(b.route.Created),
			compareNames(a.route.Key, b.route.Key), a.rule.Index-b.rule.Index, a.order-b.order)
	})
	for _, e := range entries {
		t.Rules = append(t.Rules, e.rule)
	}
	return t
}

// applying returns the routes that route in's port for its client: the
// client namespace's consumer routes if it has any, else the producer's; of
// those, GRPCRoutes if any, else HTTPRoutes (GEP-1426: one route type per
// Service port). Refused routes never apply.
func applying(in Input) []*discovery.Route {
	var consumer, producer []*discovery.Route
	for _, r := range in.Routes {
		if !attaches(r, in.Parent, in.Port) || Refused(r) != nil {
			continue
		}
		switch r.Key.Namespace {
		case in.Parent.Namespace:
			producer = append(producer, r)
		case in.Client:
			consumer = append(consumer, r)
		}
	}
	routes := producer
	if len(consumer) > 0 {
		routes = consumer
	}
	return oneKind(routes)
}

// Consumes reports whether in.Client has routes of its own (consumer
// routes) for the port: its clients then need a route configuration of
// their own.
func Consumes(in Input) bool {
	if in.Client == "" || in.Client == in.Parent.Namespace {
		return false
	}
	return slices.ContainsFunc(in.Routes, func(r *discovery.Route) bool {
		return r.Key.Namespace == in.Client && attaches(r, in.Parent, in.Port) && Refused(r) == nil
	})
}

// oneKind keeps the GRPCRoutes of routes if there are any.
func oneKind(routes []*discovery.Route) []*discovery.Route {
	if slices.ContainsFunc(routes, func(r *discovery.Route) bool { return r.GRPC != nil }) {
		return slices.DeleteFunc(slices.Clone(routes), func(r *discovery.Route) bool { return r.GRPC == nil })
	}
	return routes
}

// attaches reports whether one of r's parentRefs names the Service port.
func attaches(r *discovery.Route, parent discovery.ServiceKey, port discovery.Port) bool {
	for _, p := range r.ParentRefs() {
		if portMatches(r, p, parent, port) {
			return true
		}
	}
	return false
}

func portMatches(r *discovery.Route, p gwv1.ParentReference, parent discovery.ServiceKey, port discovery.Port) bool {
	k, ok := discovery.ParentService(r.Key.Namespace, p)
	if !ok || k != parent {
		return false
	}
	if p.Port != nil && int32(*p.Port) != port.Port {
		return false
	}
	return p.SectionName == nil || string(*p.SectionName) == port.Name
}

// entry is one rule match with what ranks it.
type entry struct {
	route *discovery.Route
	rule  Rule
	rank  []int // compared in order, larger first
	order int   // of the match in its rule
}

// compareNames orders routes as "{namespace}/{name}" strings do, without
// building them.
func compareNames(a, b discovery.RouteKey) int {
	if a.Namespace == b.Namespace {
		return strings.Compare(a.Name, b.Name)
	}
	n := min(len(a.Namespace), len(b.Namespace))
	if c := strings.Compare(a.Namespace[:n], b.Namespace[:n]); c != 0 {
		return c
	}
	if len(a.Namespace) < len(b.Namespace) { // a's "/" against b's next byte
		return cmp.Compare('/', b.Namespace[n])
	}
	return cmp.Compare(a.Namespace[n], '/')
}

func compareRank(a, b []int) int {
	for i := range a {
		if c := cmp.Compare(b[i], a[i]); c != 0 {
			return c
		}
	}
	return 0
}

// flatten turns a route into one entry per match of each rule, ranked by
// the Gateway API's precedence for its kind.
func flatten(r *discovery.Route, in Input) []entry {
	var out []entry
	if r.GRPC != nil {
		for i, rule := range r.GRPC.Rules {
			refs := make([]gwv1.BackendRef, len(rule.BackendRefs))
			for j, b := range rule.BackendRefs {
				refs[j] = b.BackendRef
			}
			base := Rule{Route: r.Key, Index: i, Backends: backends(r, refs, in)}
			matches := rule.Matches
			if len(matches) == 0 {
				matches = []gwv1.GRPCRouteMatch{{}}
			}
			for j, m := range matches {
				e := entry{route: r, rule: base, order: j}
				e.rule.Match, e.rank = grpcMatch(m)
				out = append(out, e)
			}
		}
		return out
	}
	for i, rule := range r.HTTP.Rules {
		refs := make([]gwv1.BackendRef, len(rule.BackendRefs))
		for j, b := range rule.BackendRefs {
			refs[j] = b.BackendRef
		}
		base := Rule{Route: r.Key, Index: i, Backends: backends(r, refs, in), Timeout: timeout(rule.Timeouts)}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for j, m := range matches {
			if m.Method != nil && *m.Method != gwv1.HTTPMethodPost {
				continue // gRPC requests are POSTs: this match never holds
			}
			e := entry{route: r, rule: base, order: j}
			e.rule.Match, e.rank = httpMatch(m)
			out = append(out, e)
		}
	}
	return out
}
