package mesh

import (
	"fmt"
	"slices"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/discovery"
)

// ReasonConflicted is GEP-1426's reason for a route not used because a
// route of a more specific type (GRPCRoute over HTTPRoute) routes the same
// Service port.
const ReasonConflicted = "Conflicted"

// Refused says why a route cannot be used at all, nil when it can. A
// proxyless client carries out matches, weights and a timeout; a route asking
// for more (filters, query parameters, retries, session persistence) or with
// a regular expression a client would refuse is never half applied.
func Refused(r *discovery.Route) *Problem {
	if r.GRPC != nil {
		for i, rule := range r.GRPC.Rules {
			if p := refusedGRPCRule(rule); p != nil {
				return at(i, p)
			}
		}
		return nil
	}
	for i, rule := range r.HTTP.Rules {
		if p := refusedHTTPRule(rule); p != nil {
			return at(i, p)
		}
	}
	return nil
}

func at(rule int, p *Problem) *Problem {
	return &Problem{Reason: p.Reason, Message: fmt.Sprintf("rules[%d]: %s", rule, p.Message)}
}

func unsupported(format string, args ...any) *Problem {
	return problem(gwv1.RouteReasonUnsupportedValue, format+": proxyless gRPC clients cannot carry it out, so the route is not used", args...)
}

func refusedGRPCRule(rule gwv1.GRPCRouteRule) *Problem {
	typ := func(f gwv1.GRPCRouteFilter) gwv1.GRPCRouteFilterType { return f.Type }
	var backendFilters []string
	for _, b := range rule.BackendRefs {
		backendFilters = append(backendFilters, filterTypes(b.Filters, typ)...)
	}
	if p := refusedActions(filterTypes(rule.Filters, typ), backendFilters, rule.SessionPersistence != nil, false, len(rule.BackendRefs)); p != nil {
		return p
	}
	for _, m := range rule.Matches {
		if mm := m.Method; mm != nil && mm.Type != nil && *mm.Type == gwv1.GRPCMethodMatchRegularExpression {
			for _, re := range []string{deref(mm.Service), deref(mm.Method)} {
				if p := checkRegex("method match", re); p != nil {
					return p
				}
			}
		}
		if p := checkHeaders(grpcHeaders(m.Headers)); p != nil {
			return p
		}
	}
	return nil
}

func refusedHTTPRule(rule gwv1.HTTPRouteRule) *Problem {
	typ := func(f gwv1.HTTPRouteFilter) gwv1.HTTPRouteFilterType { return f.Type }
	var backendFilters []string
	for _, b := range rule.BackendRefs {
		backendFilters = append(backendFilters, filterTypes(b.Filters, typ)...)
	}
	if p := refusedActions(filterTypes(rule.Filters, typ), backendFilters, rule.SessionPersistence != nil, rule.Retry != nil, len(rule.BackendRefs)); p != nil {
		return p
	}
	if t := rule.Timeouts; t != nil {
		for _, v := range []*gwv1.Duration{t.Request, t.BackendRequest} {
			if v == nil {
				continue
			}
			if _, err := time.ParseDuration(string(*v)); err != nil {
				return problem(gwv1.RouteReasonUnsupportedValue, "timeout %q: %v", *v, err)
			}
		}
	}
	for _, m := range rule.Matches {
		if len(m.QueryParams) > 0 {
			return unsupported("queryParams match")
		}
		if p := m.Path; p != nil && p.Type != nil && *p.Type == gwv1.PathMatchRegularExpression {
			if pr := checkRegex("path match", deref(p.Value)); pr != nil {
				return pr
			}
		}
		if p := checkHeaders(httpHeaders(m.Headers)); p != nil {
			return p
		}
	}
	return nil
}

func filterTypes[F any, T ~string](fs []F, typ func(F) T) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(typ(f))
	}
	return out
}

// refusedActions refuses what a rule asks beyond choosing backends: a
// filter (of the rule or of a backend), session persistence, retries; and
// more backends than the Gateway API allows (a file source has no API
// server to say so), which keeps the weights' sum within what gRPC takes.
func refusedActions(filters, backendFilters []string, session, retry bool, backends int) *Problem {
	switch {
	case backends > maxBackendRefs:
		return problem(gwv1.RouteReasonUnsupportedValue, "%d backendRefs: the Gateway API allows at most %d", backends, maxBackendRefs)
	case len(filters) > 0:
		return unsupported("filter %s", filters[0])
	case len(backendFilters) > 0:
		return unsupported("backendRefs filter %s", backendFilters[0])
	case session:
		return unsupported("sessionPersistence")
	case retry:
		return unsupported("retry")
	}
	return nil
}

func checkHeaders(hs []Header) *Problem {
	for _, h := range hs {
		if p := checkHeader(h.Name, h.Value, h.Regex); p != nil {
			return p
		}
	}
	return nil
}

// checkHeader refuses conditions gRPC clients do not apply as written:
// they never match on their own grpc- headers, and treat -bin headers as
// binary.
func checkHeader(name, value string, regex bool) *Problem {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "grpc-") || strings.HasSuffix(n, "-bin") || strings.HasPrefix(n, ":") {
		return unsupported("header match on %s", name)
	}
	if regex {
		return checkRegex("header match on "+name, value)
	}
	return nil
}

// Condition is one status condition of a route for one parent.
type Condition struct {
	Status  bool
	Reason  string
	Message string
}

// ParentStatus is what a route's status says for one of its Service
// parentRefs.
type ParentStatus struct {
	Ref          gwv1.ParentReference
	Accepted     Condition
	ResolvedRefs Condition
}

// Status is route r's status for each of its parentRefs that names a
// Service. attached(k) returns the routes naming Service k as a parent, to
// find a conflicting route of another type.
func Status(r *discovery.Route, service func(discovery.ServiceKey) (*discovery.Service, bool), grants func(string) []*discovery.Grant, attached func(discovery.ServiceKey) []*discovery.Route) []ParentStatus {
	refs := resolvedRefs(r, service, grants)
	refused := Refused(r)
	var out []ParentStatus
	for _, p := range r.ParentRefs() {
		k, ok := discovery.ParentService(r.Key.Namespace, p)
		if !ok {
			continue
		}
		st := ParentStatus{Ref: p, ResolvedRefs: refs, Accepted: Condition{Status: true, Reason: string(gwv1.RouteReasonAccepted), Message: "routes " + k.String()}}
		switch svc, found := service(k); {
		case refused != nil:
			st.Accepted = Condition{Reason: refused.Reason, Message: refused.Message}
		case !found:
			st.Accepted = Condition{Reason: string(gwv1.RouteReasonNoMatchingParent), Message: "no such Service " + k.String()}
		case len(ports(r, p, k, svc)) == 0:
			st.Accepted = Condition{Reason: string(gwv1.RouteReasonNoMatchingParent), Message: "the Service has no such port"}
		case r.HTTP != nil && conflicts(r, p, k, svc, attached(k)):
			st.Accepted = Condition{Reason: ReasonConflicted, Message: "a GRPCRoute of namespace " + r.Key.Namespace + " routes the same Service port, and GRPCRoutes take precedence"}
		case overflows(r, p, k, svc, attached(k), service, grants):
			st.Accepted = Condition{Reason: string(gwv1.RouteReasonUnsupportedValue), Message: fmt.Sprintf("with older routes, the Service port would have over %d rules (one per match): the route is not used", MaxRules)}
		}
		out = append(out, st)
	}
	return out
}

// ports returns the ports of svc a parentRef attaches to.
func ports(r *discovery.Route, ref gwv1.ParentReference, k discovery.ServiceKey, svc *discovery.Service) []discovery.Port {
	var out []discovery.Port
	for _, port := range svc.Ports {
		if portMatches(r, ref, k, port) {
			out = append(out, port)
		}
	}
	return out
}

// conflicts reports whether a usable GRPCRoute of r's namespace routes a
// port that r's parentRef ref attaches to.
func conflicts(r *discovery.Route, ref gwv1.ParentReference, k discovery.ServiceKey, svc *discovery.Service, others []*discovery.Route) bool {
	for _, port := range ports(r, ref, k, svc) {
		if slices.ContainsFunc(others, func(o *discovery.Route) bool {
			return o.GRPC != nil && o.Key.Namespace == r.Key.Namespace && Refused(o) == nil && attaches(o, k, port)
		}) {
			return true
		}
	}
	return false
}

// overflows reports whether r is left out of every port its parentRef
// attaches to, for being over MaxRules.
func overflows(r *discovery.Route, ref gwv1.ParentReference, k discovery.ServiceKey, svc *discovery.Service, attached []*discovery.Route, service func(discovery.ServiceKey) (*discovery.Service, bool), grants func(string) []*discovery.Grant) bool {
	for _, port := range ports(r, ref, k, svc) {
		t := Translate(Input{Parent: k, Port: port, Client: r.Key.Namespace, Routes: attached, Service: service, Grants: grants})
		if t == nil || !slices.Contains(t.Dropped, r.Key) {
			return false
		}
	}
	return true
}

// resolvedRefs is the ResolvedRefs condition: the first backendRef that
// cannot be resolved, or all resolved.
func resolvedRefs(r *discovery.Route, service func(discovery.ServiceKey) (*discovery.Service, bool), grants func(string) []*discovery.Grant) Condition {
	for _, b := range r.BackendRefs() {
		if _, p := resolve(r, b.BackendObjectReference, service, grants); p != nil {
			return Condition{Reason: p.Reason, Message: p.Message}
		}
	}
	return Condition{Status: true, Reason: string(gwv1.RouteReasonResolvedRefs), Message: "all backends resolved"}
}
