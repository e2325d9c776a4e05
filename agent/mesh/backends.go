package mesh

import (
	"fmt"
	"regexp/syntax"
	"slices"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/discovery"
)

// maxRegexInsts bounds a regular expression's compiled size: RE2 refuses
// programs over its memory budget, and a client refusing one regex NACKs the
// whole route configuration.
const (
	maxRegexInsts = 2000
	maxRegexBytes = 1024
)

// The Gateway API's own bounds, which the API server enforces and a file
// source does not: with them a rule's weights sum to at most 16,000,000,
// well within gRPC's uint32 total.
const (
	maxBackendRefs = 16
	maxWeight      = 1_000_000
)

// backends resolves a rule's backendRefs. Weights 0 are left out; the
// unresolved share one entry; the same Service port twice is one backend.
func backends(r *discovery.Route, refs []gwv1.BackendRef, in Input) []Backend {
	var out []Backend
	for _, ref := range refs {
		w := uint32(1)
		if ref.Weight != nil {
			w = uint32(min(max(*ref.Weight, 0), maxWeight))
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
