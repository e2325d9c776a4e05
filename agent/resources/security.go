// mTLS and authorization (gRFCs A29, A36, A41): the TLS settings of a
// client's cluster, and the Listener an xDS-enabled server asks for.

package resources

import (
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nodexds/nodexds/agent/trust"
)

// tlsSocket is the transport socket name gRPC looks for.
const tlsSocket = "envoy.transport_sockets.tls"

// commonTLS names the certificate provider instance for both the peer's own
// certificate and the roots it verifies the other side with, and what the
// other side's certificate must say (no matchers: any the roots sign).
func commonTLS(provider string, sans []trust.Match) *tlsv3.CommonTlsContext {
	instance := &tlsv3.CertificateProviderPluginInstance{InstanceName: provider}
	vc := &tlsv3.CertificateValidationContext{CaCertificateProviderInstance: instance}
	for _, m := range sans {
		vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, stringMatcher(m))
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: instance,
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
	}
}

// stringMatcher matches a SPIFFE ID as m says: exactly, or by prefix.
func stringMatcher(m trust.Match) *matcherv3.StringMatcher {
	if m.Prefix {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: m.Value}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Value}}
}

// UpstreamTLS is the transport socket of a cluster whose servers speak
// mTLS: the client presents its certificate, and accepts a server whose
// certificate the roots sign and whose SPIFFE ID one of servers matches.
func UpstreamTLS(provider string, servers []trust.Match) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name: tlsSocket,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
			CommonTlsContext: commonTLS(provider, servers),
		})},
	}
}

// ServerChain is what a server's connections get.
type ServerChain struct {
	// TLS: connections are TLS with the certificate of Provider; else
	// plaintext.
	TLS      bool
	Provider string
	// RequireClientCert refuses TLS connections without a client
	// certificate (the roots verify one that is presented either way).
	RequireClientCert bool
	// Allow, when not nil, authorizes calls: a caller's SPIFFE ID must
	// match an entry of every list. DenyAll refuses every call (a strict
	// Service's server that cannot do TLS).
	Allow   [][]trust.Match
	DenyAll bool
	// HealthChecker, with Allow, is the SPIFFE ID of the nodexds agents,
	// allowed the gRPC health service's methods whatever Allow says: the
	// agents check the health of the servers their clients use.
	HealthChecker string
}

// ServerListener is the Listener of an xDS-enabled gRPC server (gRFC A36),
// under the name it asked for and with the address it listens on (gRPC
// checks that they agree): one filter chain for every connection, whose
// routes let every call through to the server's own handlers after the RBAC
// filter (gRFC A41) has authorized it.
func ServerListener(name string, addr netip.AddrPort, c ServerChain) *listenerv3.Listener {
	var filters []*hcmv3.HttpFilter
	if rbac := serverRBAC(c); rbac != nil {
		filters = append(filters, &hcmv3.HttpFilter{
			Name:       "envoy.filters.http.rbac",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(rbac)},
		})
	}
	filters = append(filters, &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	})
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "inbound",
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "inbound",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: filters,
	}
	chain := &listenerv3.FilterChain{
		Name: "plaintext",
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}},
	}
	if c.TLS {
		chain.Name = "tls"
		chain.TransportSocket = &corev3.TransportSocket{
			Name: tlsSocket,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
				CommonTlsContext:         commonTLS(c.Provider, nil),
				RequireClientCertificate: wrapperspb.Bool(c.RequireClientCert),
			})},
		}
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address:       addr.Addr().String(),
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(addr.Port())},
		}}},
		FilterChains: []*listenerv3.FilterChain{chain},
	}
}

// serverRBAC is the chain's authorization, nil when every call is let in.
func serverRBAC(c ServerChain) *rbacv3.RBAC {
	var who *rbacconfigv3.Principal
	switch {
	case c.DenyAll:
		who = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: anyPrincipal()}}
	case c.Allow == nil:
		return nil
	default:
		all := make([]*rbacconfigv3.Principal, len(c.Allow))
		for i, list := range c.Allow {
			one := make([]*rbacconfigv3.Principal, len(list))
			for j, m := range list {
				one[j] = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
					Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: stringMatcher(m)},
				}}
			}
			all[i] = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_OrIds{OrIds: &rbacconfigv3.Principal_Set{Ids: one}}}
		}
		who = all[0]
		if len(all) > 1 {
			who = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_AndIds{AndIds: &rbacconfigv3.Principal_Set{Ids: all}}}
		}
	}
	policies := map[string]*rbacconfigv3.Policy{"nodexds": {
		Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
		Principals:  []*rbacconfigv3.Principal{who},
	}}
	if c.HealthChecker != "" && !c.DenyAll {
		policies["nodexds-health-checks"] = &rbacconfigv3.Policy{
			Permissions: []*rbacconfigv3.Permission{methodPermission(HealthCheck), methodPermission(HealthWatch)},
			Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Authenticated_{
				Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: stringMatcher(trust.Match{Value: c.HealthChecker})},
			}}},
		}
	}
	return &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: policies}}
}

// The gRPC health service's methods, which the agents call.
const (
	HealthCheck = "/grpc.health.v1.Health/Check"
	HealthWatch = "/grpc.health.v1.Health/Watch"
)

// methodPermission permits the calls of one method (its :path).
func methodPermission(path string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: path}}},
	}}}
}

func anyPrincipal() *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
}
