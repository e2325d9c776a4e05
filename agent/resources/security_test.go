package resources

import (
	"net/netip"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/nodexds/nodexds/agent/trust"
)

// serverParts unpacks what a server Listener's one chain says.
func serverParts(t *testing.T, l *listenerv3.Listener) (tls *tlsv3.DownstreamTlsContext, filters []string, rbac *rbacv3.RBAC) {
	t.Helper()
	if len(l.GetFilterChains()) != 1 {
		t.Fatalf("%d filter chains, want 1", len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	if fc.GetFilterChainMatch() != nil {
		t.Error("a filter_chain_match: grpc-js matches a chain with one only if it says raw_buffer; none matches every connection everywhere")
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		tls = &tlsv3.DownstreamTlsContext{}
		if ts.GetName() != tlsSocket || ts.GetTypedConfig().UnmarshalTo(tls) != nil {
			t.Fatalf("transport socket %q is not gRPC's TLS", ts.GetName())
		}
	}
	var hcm hcmv3.HttpConnectionManager
	if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range hcm.GetHttpFilters() {
		filters = append(filters, f.GetName())
		r := &rbacv3.RBAC{}
		if f.GetTypedConfig().UnmarshalTo(r) == nil {
			rbac = r
		}
	}
	if rt := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]; rt.GetNonForwardingAction() == nil {
		t.Error("the server's route does not let calls through (NonForwardingAction)")
	}
	return tls, filters, rbac
}

func TestServerListener(t *testing.T) {
	const name = "grpc/server?xds.resource.listening_address=[::]:50051"
	addr := netip.MustParseAddrPort("[::]:50051")
	web := []trust.Match{{Value: "spiffe://cluster.local/ns/web/sa/", Prefix: true}}
	ops := []trust.Match{{Value: "spiffe://cluster.local/ns/ops/sa/x"}}

	t.Run("plaintext: no TLS, every call", func(t *testing.T) {
		l := ServerListener(name, addr, ServerChain{})
		if l.GetName() != name || l.GetAddress().GetSocketAddress().GetAddress() != "::" || l.GetAddress().GetSocketAddress().GetPortValue() != 50051 {
			t.Errorf("listener %q at %v: gRPC wants the name and the address it asked for", l.GetName(), l.GetAddress())
		}
		tls, filters, rbac := serverParts(t, l)
		if tls != nil || rbac != nil || len(filters) != 1 || filters[0] != "envoy.filters.http.router" {
			t.Errorf("tls %v, rbac %v, filters %v; want plaintext and the router alone", tls, rbac, filters)
		}
	})
	t.Run("strict: client certificate required, every list must allow", func(t *testing.T) {
		tls, filters, rbac := serverParts(t, ServerListener(name, addr, ServerChain{TLS: true, Provider: "nodexds", RequireClientCert: true, Allow: [][]trust.Match{web, ops}}))
		if !tls.GetRequireClientCertificate().GetValue() || tls.GetCommonTlsContext().GetTlsCertificateProviderInstance().GetInstanceName() != "nodexds" ||
			tls.GetCommonTlsContext().GetValidationContext().GetCaCertificateProviderInstance().GetInstanceName() != "nodexds" {
			t.Errorf("TLS context %v", tls)
		}
		if len(tls.GetCommonTlsContext().GetValidationContext().GetMatchSubjectAltNames()) != 0 {
			t.Error("SAN matchers on a server: grpc-go and C-core refuse them")
		}
		if len(filters) != 2 || filters[1] != "envoy.filters.http.router" {
			t.Errorf("filters %v: want the RBAC filter, then the router last", filters)
		}
		who := rbac.GetRules().GetPolicies()["nodexds"].GetPrincipals()[0]
		lists := who.GetAndIds().GetIds()
		if len(lists) != 2 || lists[0].GetOrIds().GetIds()[0].GetAuthenticated().GetPrincipalName().GetPrefix() != web[0].Value ||
			lists[1].GetOrIds().GetIds()[0].GetAuthenticated().GetPrincipalName().GetExact() != ops[0].Value {
			t.Errorf("principals %v: want both lists, ANDed", who)
		}
	})
	t.Run("strict, with the agents' identity: it may call the health service", func(t *testing.T) {
		agents := "spiffe://td/ns/nodexds-system/sa/nodexds"
		_, _, rbac := serverParts(t, ServerListener(name, addr, ServerChain{TLS: true, Provider: "nodexds", RequireClientCert: true, Allow: [][]trust.Match{web}, HealthChecker: agents}))
		p := rbac.GetRules().GetPolicies()["nodexds-health-checks"]
		var paths []string
		for _, perm := range p.GetPermissions() {
			paths = append(paths, perm.GetUrlPath().GetPath().GetExact())
		}
		if !slices.Equal(paths, []string{HealthCheck, HealthWatch}) || len(p.GetPrincipals()) != 1 ||
			p.GetPrincipals()[0].GetAuthenticated().GetPrincipalName().GetExact() != agents {
			t.Errorf("health policy %v: want %s allowed Check and Watch", p, agents)
		}
		if _, ok := rbac.GetRules().GetPolicies()["nodexds"]; !ok {
			t.Error("the allow-from policy is gone")
		}
		_, _, denied := serverParts(t, ServerListener(name, addr, ServerChain{DenyAll: true, HealthChecker: agents}))
		if len(denied.GetRules().GetPolicies()) != 1 {
			t.Errorf("a server that denies every call lets the agents in: %v", denied.GetRules().GetPolicies())
		}
	})
	t.Run("permissive: TLS, a certificate optional, every call", func(t *testing.T) {
		tls, _, rbac := serverParts(t, ServerListener(name, addr, ServerChain{TLS: true, Provider: "nodexds"}))
		if tls == nil || tls.GetRequireClientCertificate().GetValue() || rbac != nil {
			t.Errorf("tls %v, rbac %v", tls, rbac)
		}
	})
	t.Run("denied: no call", func(t *testing.T) {
		_, _, rbac := serverParts(t, ServerListener(name, addr, ServerChain{DenyAll: true}))
		if p := rbac.GetRules().GetPolicies()["nodexds"].GetPrincipals()[0]; !p.GetNotId().GetAny() {
			t.Errorf("principals %v, want not any", p)
		}
	})
}

func TestUpstreamTLS(t *testing.T) {
	ts := UpstreamTLS("nodexds", []trust.Match{{Value: "spiffe://td/ns/shop/sa/", Prefix: true}, {Value: "spiffe://td/ns/shop/sa/cart"}})
	var up tlsv3.UpstreamTlsContext
	if ts.GetName() != tlsSocket || ts.GetTypedConfig().UnmarshalTo(&up) != nil {
		t.Fatalf("transport socket %q", ts.GetName())
	}
	c := up.GetCommonTlsContext()
	sans := c.GetValidationContext().GetMatchSubjectAltNames()
	if c.GetTlsCertificateProviderInstance().GetInstanceName() != "nodexds" || c.GetTlsCertificateCertificateProviderInstance() != nil ||
		len(sans) != 2 || sans[0].GetPrefix() != "spiffe://td/ns/shop/sa/" || sans[1].GetExact() != "spiffe://td/ns/shop/sa/cart" {
		t.Errorf("upstream TLS context %v", &up)
	}
}
