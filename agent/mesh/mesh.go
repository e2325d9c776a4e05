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
	"fmt"
	"regexp"
	"regexp/syntax"
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

// maxRegexInsts bounds a regular expression's compiled size: RE2 refuses
// programs over its memory budget, and a client refusing one regex NACKs the
// whole route configuration.
const (
	maxRegexInsts = 2000
	maxRegexBytes = 1024
)

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

// grpcMatch ranks by the characters of the service, then of the method,
// then the number of headers.
func grpcMatch(m gwv1.GRPCRouteMatch) (Match, []int) {
	out := Match{Headers: grpcHeaders(m.Headers)}
	svc, method := "", ""
	if mm := m.Method; mm != nil {
		svc, method = deref(mm.Service), deref(mm.Method)
		out.Path = methodPath(mm)
	}
	return out, []int{len(svc), len(method), len(out.Headers)}
}

// methodPath is a method match as a condition on the gRPC path.
func methodPath(mm *gwv1.GRPCMethodMatch) Path {
	svc, method := deref(mm.Service), deref(mm.Method)
	if mm.Type == nil || *mm.Type == gwv1.GRPCMethodMatchExact {
		switch {
		case svc != "" && method != "":
			return Path{ExactPath, "/" + svc + "/" + method}
		case svc != "":
			return Path{PrefixPath, "/" + svc}
		case method != "":
			return Path{RegexPath, `/[^/]+/` + regexp.QuoteMeta(method)}
		}
		return Path{}
	}
	part := func(re string) string {
		if re == "" {
			return `[^/]+`
		}
		return "(?:" + re + ")"
	}
	return Path{RegexPath, "/" + part(svc) + "/" + part(method)}
}

// httpMatch ranks an exact path first, then a regular expression (the
// Gateway API leaves its rank to implementations: above any prefix, so that
// a catch-all "/" does not hide it), then the longest prefix; then a method
// match, then the number of headers.
func httpMatch(m gwv1.HTTPRouteMatch) (Match, []int) {
	out := Match{Headers: httpHeaders(m.Headers)}
	kind, value := PrefixPath, "/"
	if p := m.Path; p != nil {
		kind, value = string(deref(p.Type)), deref(p.Value)
		kind = cmp.Or(kind, PrefixPath)
		value = cmp.Or(value, "/")
	}
	rank := []int{0, 0, len(value), 0, len(out.Headers)}
	switch kind {
	case ExactPath:
		rank[0] = 2
	case RegexPath:
		rank[1] = 1
	}
	if m.Method != nil {
		rank[3] = 1
	}
	out.Path = Path{kind, strings.TrimSuffix(value, "/")}
	if kind != PrefixPath {
		out.Path.Value = value
	}
	if out.Path == (Path{PrefixPath, ""}) {
		out.Path = Path{} // "/" matches every request
	}
	return out, rank
}

func grpcHeaders(hs []gwv1.GRPCHeaderMatch) []Header {
	var out []Header
	for _, h := range hs {
		out = addHeader(out, string(h.Name), h.Value, h.Type != nil && *h.Type == gwv1.GRPCHeaderMatchRegularExpression)
	}
	return out
}

func httpHeaders(hs []gwv1.HTTPHeaderMatch) []Header {
	var out []Header
	for _, h := range hs {
		out = addHeader(out, string(h.Name), h.Value, h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression)
	}
	return out
}

// addHeader adds a header condition; of several on one name, the first
// counts (as the Gateway API says: names are case-insensitive).
func addHeader(hs []Header, name, value string, regex bool) []Header {
	name = strings.ToLower(name)
	if slices.ContainsFunc(hs, func(h Header) bool { return h.Name == name }) {
		return hs
	}
	return append(hs, Header{Name: name, Value: value, Regex: regex})
}

// backends resolves a rule's backendRefs. Weights 0 are left out; the
// unresolved share one entry; the same Service port twice is one backend.
func backends(r *discovery.Route, refs []gwv1.BackendRef, in Input) []Backend {
	var out []Backend
	for _, ref := range refs {
		w := uint32(1)
		if ref.Weight != nil {
			w = uint32(max(*ref.Weight, 0))
		}
		if w == 0 {
			continue
		}
		b, problem := resolve(r, ref.BackendObjectReference, in.Service, in.Grants)
		if problem != nil {
			b = Backend{Unresolved: true}
		}
		b.Weight = w
		if i := slices.IndexFunc(out, func(o Backend) bool {
			return o.Service == b.Service && o.Port == b.Port && o.Unresolved == b.Unresolved
		}); i >= 0 {
			out[i].Weight += w
			continue
		}
		out = append(out, b)
	}
	return out
}

// Problem is why a route, or a reference of it, cannot be used: a Gateway
// API condition reason and a message for its status.
type Problem struct {
	Reason  string
	Message string
}

func (p *Problem) Error() string { return p.Reason + ": " + p.Message }

func problem(reason gwv1.RouteConditionReason, format string, args ...any) *Problem {
	return &Problem{Reason: string(reason), Message: fmt.Sprintf(format, args...)}
}

// resolve finds the Service port a backendRef names.
func resolve(r *discovery.Route, b gwv1.BackendObjectReference, service func(discovery.ServiceKey) (*discovery.Service, bool), grants func(string) []*discovery.Grant) (Backend, *Problem) {
	k, ok := discovery.BackendService(r.Key.Namespace, b)
	if !ok {
		return Backend{}, problem(gwv1.RouteReasonInvalidKind, "backend %s: only Services (group \"\", kind Service) can be backends", b.Name)
	}
	if k.Namespace != r.Key.Namespace && !slices.ContainsFunc(grants(k.Namespace), func(g *discovery.Grant) bool {
		return g.Permits(r.Key.Kind, r.Key.Namespace, k.Name)
	}) {
		return Backend{}, problem(gwv1.RouteReasonRefNotPermitted, "backend %s: no ReferenceGrant in namespace %s lets a %s of namespace %s refer to it", k, k.Namespace, r.Key.Kind, r.Key.Namespace)
	}
	svc, ok := service(k)
	if !ok {
		return Backend{}, problem(gwv1.RouteReasonBackendNotFound, "backend %s: no such Service", k)
	}
	if b.Port == nil {
		return Backend{}, problem(gwv1.RouteReasonBackendNotFound, "backend %s: a Service backend needs a port", k)
	}
	if _, ok := svc.PortNumber(int32(*b.Port)); !ok {
		return Backend{}, problem(gwv1.RouteReasonBackendNotFound, "backend %s: the Service has no port %d", k, *b.Port)
	}
	return Backend{Service: k, Port: int32(*b.Port)}, nil
}

// timeout is an HTTPRoute rule's request timeout; the backend request
// timeout, when shorter, bounds the one attempt a proxyless client makes.
func timeout(t *gwv1.HTTPRouteTimeouts) time.Duration {
	if t == nil {
		return 0
	}
	var d time.Duration
	for _, v := range []*gwv1.Duration{t.Request, t.BackendRequest} {
		if v == nil {
			continue
		}
		if x, err := time.ParseDuration(string(*v)); err == nil && x > 0 && (d == 0 || x < d) {
			d = x
		}
	}
	return d
}

func deref[T ~string](p *T) T {
	if p == nil {
		return ""
	}
	return *p
}

// checkRegex reports a regular expression a gRPC client would refuse.
func checkRegex(what, re string) *Problem {
	if len(re) > maxRegexBytes {
		return problem(gwv1.RouteReasonUnsupportedValue, "%s: a regular expression of %d bytes is over the limit of %d", what, len(re), maxRegexBytes)
	}
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return problem(gwv1.RouteReasonUnsupportedValue, "%s %q is not a valid RE2 regular expression: %v", what, re, err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil || len(prog.Inst) > maxRegexInsts {
		return problem(gwv1.RouteReasonUnsupportedValue, "%s %q is too large a regular expression (over %d instructions)", what, re, maxRegexInsts)
	}
	return nil
}
