package admin

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// ServerListenerDebug is a Listener an xDS-enabled server holds, as it was
// sent: what its connections get and whom its calls are allowed from.
type ServerListenerDebug struct {
	Name string `json:"name"`
	// Transport is "tls" or "plaintext"; "" when none was sent (the agent
	// could not place the server: see nodexds_server_listeners_unplaced_total).
	Transport         string `json:"transport"`
	RequireClientCert bool   `json:"requireClientCert,omitempty"`
	// AllowFrom are the identities its calls are accepted from, by SPIFFE
	// ID (a trailing "*": a prefix); each list must allow a call. Absent:
	// every call. DenyAll: none.
	AllowFrom [][]string `json:"allowFrom,omitempty"`
	DenyAll   bool       `json:"denyAll,omitempty"`
}

// serverListeners lists the server listeners a client subscribes to: a
// client with any is an xDS-enabled server.
func serverListeners(cl *xds.ClientStatus) []ServerListenerDebug {
	var out []ServerListenerDebug
	for _, ts := range cl.Types {
		if ts.TypeURL != xds.ListenerType {
			continue
		}
		for _, r := range ts.Resources {
			if !names.IsServer(r.Name) {
				continue
			}
			if len(out) == agent.ListCap {
				return out // the rest are junk names: a server asks for a few
			}
			d := ServerListenerDebug{Name: xds.Clip(r.Name, MaxNameShown)}
			if r.State != xds.NotSent {
				describeServer(&d, r.Resource)
			}
			out = append(out, d)
		}
	}
	return out
}

// describeServer reads what nodexds' server Listener says (one filter
// chain: resources.ServerListener).
func describeServer(d *ServerListenerDebug, a *anypb.Any) {
	var l listenerv3.Listener
	if a == nil || a.UnmarshalTo(&l) != nil || len(l.GetFilterChains()) == 0 {
		return
	}
	fc := l.GetFilterChains()[0]
	d.Transport = "plaintext"
	var dtc tlsv3.DownstreamTlsContext
	if ts := fc.GetTransportSocket(); ts != nil && ts.GetTypedConfig().UnmarshalTo(&dtc) == nil {
		d.Transport, d.RequireClientCert = "tls", dtc.GetRequireClientCertificate().GetValue()
	}
	var hcm hcmv3.HttpConnectionManager
	if len(fc.GetFilters()) == 0 || fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm) != nil {
		return
	}
	for _, f := range hcm.GetHttpFilters() {
		var rbac rbacv3.RBAC
		if f.GetTypedConfig().UnmarshalTo(&rbac) != nil {
			continue
		}
		for _, p := range rbac.GetRules().GetPolicies() {
			for _, who := range p.GetPrincipals() {
				if who.GetNotId().GetAny() {
					d.DenyAll = true
					continue
				}
				lists := []*rbacconfigv3.Principal{who}
				if and := who.GetAndIds(); and != nil {
					lists = and.GetIds()
				}
				for _, l := range lists {
					d.AllowFrom = append(d.AllowFrom, principalNames(l))
				}
			}
		}
	}
}

// principalNames spells an or_ids of authenticated principals.
func principalNames(p *rbacconfigv3.Principal) []string {
	var out []string
	for _, id := range p.GetOrIds().GetIds() {
		m := id.GetAuthenticated().GetPrincipalName()
		switch {
		case m.GetExact() != "":
			out = append(out, m.GetExact())
		case m.GetPrefix() != "":
			out = append(out, m.GetPrefix()+"*")
		}
	}
	return out
}
