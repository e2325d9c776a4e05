package mesh

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

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
