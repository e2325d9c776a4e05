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

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/health"
)

// Type URLs of the resources served.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
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

// RouteConfig sends every request to cluster. Its one virtual host matches
// any authority, because every alias of the Service shares it.
func RouteConfig(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}},
	}
}

// Cluster is an EDS cluster whose load assignment has the same name.
func Cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
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
				lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address:  socketAddress(e.Addr),
						Hostname: e.Pod,
					}},
					HealthStatus: healthStatus(e.Addr, status),
				})
			}
			cla.Endpoints = append(cla.Endpoints, lle)
		}
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
