package resources

import (
	"cmp"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodexds/nodexds/agent/mesh"
)

// Routed is one rule of a Service port routed by Gateway API routes, with
// its backends already named as clusters.
type Routed struct {
	Match    mesh.Match
	Clusters []WeightedCluster // none: every request fails (to the fail cluster)
	Timeout  time.Duration     // 0: the Service's own
}

// WeightedCluster is a cluster and its share of a rule's requests.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// RoutedConfig routes a Service port by its rules, in order. failCluster (no
// endpoints: UNAVAILABLE) takes the requests of a rule with no backends and,
// in a last catch-all route, those that match no rule: gRPC C-core 1.51
// fails a request that matches no route with INTERNAL, grpc-go and grpc-js
// with UNAVAILABLE; the catch-all makes it UNAVAILABLE everywhere.
// The Service's hash policy and retries apply to every rule, and its timeout
// to rules without their own.
func RoutedConfig(name string, rules []Routed, lb LBConfig, failCluster string) *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for _, r := range rules {
		a := routeAction(lb, cmp.Or(r.Timeout, lb.Timeout))
		switch len(r.Clusters) {
		case 0:
			a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: failCluster}
		case 1:
			a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: r.Clusters[0].Name}
		default:
			wc := &routev3.WeightedCluster{}
			for _, c := range r.Clusters {
				wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c.Name, Weight: wrapperspb.UInt32(c.Weight)})
			}
			a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
		}
		headers := headerMatchers(r.Match.Headers)
		for _, m := range pathMatches(r.Match.Path) {
			m.Headers = headers
			routes = append(routes, &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: a}})
		}
	}
	if len(rules) == 0 || len(rules[len(rules)-1].Match.Headers) > 0 || rules[len(rules)-1].Match.Path.Kind != mesh.AnyPath {
		a := routeAction(lb, lb.Timeout)
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: failCluster}
		routes = append(routes, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}}, Action: &routev3.Route_Route{Route: a}})
	}
	return &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{"*"}, Routes: routes}},
	}
}

// pathMatches is a path condition as route matches: a Gateway API prefix
// matches whole path elements, so "/pkg.Svc" is the path itself or what
// follows it after a "/" (gRPC has no path_separated_prefix).
func pathMatches(p mesh.Path) []*routev3.RouteMatch {
	switch p.Kind {
	case mesh.ExactPath:
		return []*routev3.RouteMatch{{PathSpecifier: &routev3.RouteMatch_Path{Path: p.Value}}}
	case mesh.PrefixPath:
		return []*routev3.RouteMatch{
			{PathSpecifier: &routev3.RouteMatch_Path{Path: p.Value}},
			{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p.Value + "/"}},
		}
	case mesh.RegexPath:
		return []*routev3.RouteMatch{{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}}}
	}
	return []*routev3.RouteMatch{{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}}}
}

// headerMatchers uses exact_match and safe_regex_match, not string_match,
// which gRPC C-core 1.51 refuses (see exactHeader).
func headerMatchers(hs []mesh.Header) []*routev3.HeaderMatcher {
	var out []*routev3.HeaderMatcher
	for _, h := range hs {
		if !h.Regex {
			out = append(out, exactHeader(h.Name, h.Value))
			continue
		}
		out = append(out, &routev3.HeaderMatcher{Name: h.Name, HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: h.Value}}}) //nolint:staticcheck // SA1019: as exactHeader
	}
	return out
}
