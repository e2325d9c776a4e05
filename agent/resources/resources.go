// Package resources translates one Service port, already prioritized for this
// node, into the four xDS resources a proxyless gRPC client follows:
//
//	Listener(alias) → RouteConfiguration(canonical) → Cluster(canonical) → ClusterLoadAssignment(canonical)
//
// Each function is pure and returns a fresh message; nothing is shared or
// edited in place. Everything emitted here must be accepted by grpc-go and
// grpc-js-xds (see the rules on LoadAssignment).
package resources

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// ads is the config source meaning "over this same ADS stream".
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// mustAny packs a message known to marshal (a generated type we built).
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // unreachable: only called with well-formed generated messages
	}
	return a
}

// Listener is the client-side listener for the name a client dialled. Aliases
// of one Service port all point at the same route configuration.
func Listener(name, routeConfig string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ads(),
			RouteConfigName: routeConfig,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// Cluster is an EDS cluster whose load assignment has the same name.
func Cluster(name string, lb LBConfig) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	switch lb.Policy {
	case RingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(lb.RingMin),
			MaximumRingSize: wrapperspb.UInt64(lb.RingMax),
			HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
		}}
	case LeastRequest:
		// Clients take the first policy they know (gRFC A52): grpc-go knows
		// least_request, grpc-js-xds falls back to round_robin. The legacy
		// LEAST_REQUEST enum would be a NACK from grpc-js-xds.
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{
				Name: "envoy.load_balancing_policies.wrr_locality",
				TypedConfig: mustAny(&wrrlocalityv3.WrrLocality{EndpointPickingPolicy: &clusterv3.LoadBalancingPolicy{
					Policies: []*clusterv3.LoadBalancingPolicy_Policy{
						{TypedExtensionConfig: &corev3.TypedExtensionConfig{
							Name:        "envoy.load_balancing_policies.least_request",
							TypedConfig: mustAny(&leastrequestv3.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)}),
						}},
						{TypedExtensionConfig: &corev3.TypedExtensionConfig{
							Name:        "envoy.load_balancing_policies.round_robin",
							TypedConfig: mustAny(&roundrobinv3.RoundRobin{}),
						}},
					},
				}}),
			},
		}}}
	}
	if o := lb.Outlier; o != nil {
		od := &clusterv3.OutlierDetection{
			Interval:                       durationpb.New(o.Interval),
			BaseEjectionTime:               durationpb.New(o.BaseEjection),
			MaxEjectionTime:                durationpb.New(o.MaxEjection),
			MaxEjectionPercent:             wrapperspb.UInt32(o.MaxEjectionPercent),
			EnforcingSuccessRate:           wrapperspb.UInt32(0), // Envoy's default is 100: off unless asked
			EnforcingFailurePercentage:     wrapperspb.UInt32(0),
			SuccessRateMinimumHosts:        wrapperspb.UInt32(o.SuccessRateMinHosts),
			SuccessRateRequestVolume:       wrapperspb.UInt32(o.SuccessRateRequestVolume),
			FailurePercentageMinimumHosts:  wrapperspb.UInt32(o.FailurePercentageMinHosts),
			FailurePercentageRequestVolume: wrapperspb.UInt32(o.FailurePercentageRequestVolume),
		}
		if o.SuccessRateStdevFactor > 0 {
			od.EnforcingSuccessRate = wrapperspb.UInt32(100)
			od.SuccessRateStdevFactor = wrapperspb.UInt32(o.SuccessRateStdevFactor)
		}
		if o.FailurePercentage > 0 {
			od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
			od.FailurePercentageThreshold = wrapperspb.UInt32(o.FailurePercentage)
		}
		c.OutlierDetection = od
	}
	if lb.MaxRequests > 0 {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority: corev3.RoutingPriority_DEFAULT, MaxRequests: wrapperspb.UInt32(lb.MaxRequests),
		}}}
	}
	return c
}

// Pick is one endpoint a request may name in the endpoint-picker header, by
// any of Values (pod name, ip:port), routed to its single-endpoint Cluster.
type Pick struct {
	Values  []string
	Cluster string
}

// RouteConfig routes a Service port's requests. Its one virtual host matches
// any authority, because every alias of the Service shares it. With an
// endpoint header, each pick gets a route matching the header exactly, ahead
// of the default route; when failCluster is set, a request that carries the
// header but names no pick goes there (it has no endpoints: UNAVAILABLE).
// Only members can be picked: routes are built from the Service's own
// endpoints, never from what a request says.
func RouteConfig(name, cluster string, lb LBConfig, picks []Pick, failCluster string) *routev3.RouteConfiguration {
	action := func(cluster string) *routev3.Route_Route {
		a := routeAction(lb, lb.Timeout)
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cluster}
		return &routev3.Route_Route{Route: a}
	}
	anyPath := func(headers ...*routev3.HeaderMatcher) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}, Headers: headers}
	}
	var routes []*routev3.Route
	for _, p := range picks {
		for _, v := range p.Values {
			routes = append(routes, &routev3.Route{
				Match:  anyPath(exactHeader(lb.EndpointHeader, v)),
				Action: action(p.Cluster),
			})
		}
	}
	if lb.EndpointHeader != "" && failCluster != "" {
		routes = append(routes, &routev3.Route{
			Match:  anyPath(&routev3.HeaderMatcher{Name: lb.EndpointHeader, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}),
			Action: action(failCluster),
		})
	}
	routes = append(routes, &routev3.Route{Match: anyPath(), Action: action(cluster)})
	return &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{"*"}, Routes: routes}},
	}
}

// routeAction is a route's action with a Service's hash policy and retries,
// and timeout (0: none); the caller names the clusters.
func routeAction(lb LBConfig, timeout time.Duration) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	if lb.HashHeader != "" {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: lb.HashHeader},
		}}}
	}
	if timeout > 0 {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(timeout)}
	}
	if r := lb.Retry; r != nil {
		a.RetryPolicy = RetryPolicy(*r)
	}
	return a
}

// RetryPolicy is a route's retry policy.
func RetryPolicy(r Retry) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:      strings.Join(r.On, ","),
		NumRetries:   wrapperspb.UInt32(r.Attempts - 1),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(r.BaseBackoff), MaxInterval: durationpb.New(r.MaxBackoff)},
	}
}

// exactHeader matches a header equal to value with the deprecated
// exact_match field rather than string_match: gRPC C-core 1.51 (Debian's
// python3-grpcio) NACKs the whole RouteConfiguration on string_match
// ("Invalid route header matcher specified"), while exact_match is accepted
// by C-core 1.51, grpc-go and grpc-js alike.
func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: value}} //nolint:staticcheck // SA1019: deprecated, but the only exact matcher C-core 1.51 accepts (see above)
}

// LoadAssignment turns priorities into EDS. The shape follows what grpc-go
// accepts: priorities are contiguous from 0 (topology never returns an empty
// one); within a priority each locality (region/zone) appears once, weighted
// by its endpoint count so every endpoint gets an equal share; addresses are
// unique (discovery de-duplicates, topology places each endpoint once).
// No priorities give an assignment with no endpoints: RPCs fail UNAVAILABLE.
// status (nil: all Unknown) is what health checking says of each endpoint.
func LoadAssignment(name string, prios []topology.Priority, status func(netip.AddrPort) health.Status) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for prio, p := range prios {
		for _, loc := range byLocality(p) {
			lle := &endpointv3.LocalityLbEndpoints{
				Locality:            &corev3.Locality{Region: loc.region, Zone: loc.zone},
				LoadBalancingWeight: wrapperspb.UInt32(uint32(len(loc.eps))),
				Priority:            uint32(prio),
			}
			for _, e := range loc.eps {
				lle.LbEndpoints = append(lle.LbEndpoints, lbEndpoint(e, status))
			}
			cla.Endpoints = append(cla.Endpoints, lle)
		}
	}
	return cla
}

// lbEndpoint is one endpoint. Its ring-hash key is the pod name (gRFC A76),
// so session affinity survives a pod's IP changing.
func lbEndpoint(e endpoint, status func(netip.AddrPort) health.Status) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address:  socketAddress(e.Addr),
			Hostname: e.Pod,
		}},
		HealthStatus: healthStatus(e.Addr, status),
	}
	if e.Pod != "" {
		lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"envoy.lb": {Fields: map[string]*structpb.Value{"hash_key": structpb.NewStringValue(e.Pod)}},
		}}
	}
	return lb
}

// SingleEndpoint is the load assignment of an endpoint-picker cluster: just
// the picked endpoint, or nothing when it is not (or no longer) a member.
func SingleEndpoint(name string, e *discovery.Endpoint, status func(netip.AddrPort) health.Status) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if e != nil {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{Region: e.Region, Zone: e.Zone},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(endpoint{Addr: e.Addr, Pod: e.Pod}, status)},
		}}
	}
	return cla
}

type locality struct {
	region, zone string
	eps          []endpoint
}

type endpoint struct {
	Addr netip.AddrPort
	Pod  string
}

// byLocality groups a priority's endpoints by region/zone, sorted.
func byLocality(p topology.Priority) []locality {
	var out []locality
	for _, e := range p.Endpoints {
		i := slices.IndexFunc(out, func(l locality) bool { return l.region == e.Region && l.zone == e.Zone })
		if i < 0 {
			out = append(out, locality{region: e.Region, zone: e.Zone})
			i = len(out) - 1
		}
		out[i].eps = append(out[i].eps, endpoint{Addr: e.Addr, Pod: e.Pod})
	}
	slices.SortFunc(out, func(a, b locality) int {
		return cmp.Or(cmp.Compare(a.region, b.region), cmp.Compare(a.zone, b.zone))
	})
	return out
}

func socketAddress(ap netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ap.Addr().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}

func healthStatus(ap netip.AddrPort, status func(netip.AddrPort) health.Status) corev3.HealthStatus {
	if status == nil {
		return corev3.HealthStatus_UNKNOWN
	}
	switch status(ap) {
	case health.Healthy:
		return corev3.HealthStatus_HEALTHY
	case health.Unhealthy:
		return corev3.HealthStatus_UNHEALTHY
	}
	return corev3.HealthStatus_UNKNOWN
}
