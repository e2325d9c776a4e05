package agent

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// Views. An agent answers for its own node and, as a client's xDS fallback
// server (gRFC A71), for clients of other nodes, each with that node's
// priorities. Only load assignments depend on the node, but the route,
// cluster and endpoints names handed to another node's client carry that
// node ("be1.ns.svc.cluster.local:8080@node-b"). So:
//   - one flat cache serves every view, and a foreign view costs only the
//     names its clients asked for;
//   - a client that goes back to its own agent is handed different names
//     there, and subscribes to them afresh. grpc-go drops the subscriptions
//     it made on a fallback server when it reverts to the primary, without
//     making them again: with shared names it would keep its listener and
//     never hear of a route, cluster or endpoint change again.

// viewOf is the view a client is served: its node, from its bootstrap's node
// metadata, or "" for this agent's own node (and for clients that do not say).
func (a *Agent) viewOf(n *corev3.Node) string {
	v := n.GetMetadata().GetFields()[xds.MetadataNodeName].GetStringValue()
	if v == a.cfg.NodeName {
		return ""
	}
	return v
}

// CacheKey maps a name a client subscribes to onto the name it is built
// under: a listener's name is the client's choice, so another node's client
// gets its listener under a name of its own view, and a client of a known
// namespace under a name of its namespace (whose consumer routes, if any,
// its listener names); an xDS-enabled server's listener is built for its
// pod (servers.go). Every other name the agent handed out already carries
// its view and namespace.
//
// Clusters are cached apart for clients that can do mTLS (their bootstrap
// has nodexds' certificate provider), and for clients with a known bug
// (see compat.go); routes for mTLS clients that redial when their TLS
// settings change.
func (a *Agent) CacheKey(c xds.Client, typ, name string) string {
	switch {
	case typ == xds.ListenerType && names.IsServer(name):
		return a.serverKey(c, name)
	case typ == xds.ListenerType:
		if r := (names.Resource{Base: name, View: a.viewOf(c.Node), Client: clientNamespace(c.Node, c.Namespaces)}); r.View != "" || r.Client != "" {
			return r.String()
		}
	case typ == xds.RouteType && hasCerts(c.Node) && redialsOnTLSChange(c.Node):
		// Its routes name the clusters of the generation their Services
		// are at (latetls.go).
		if r, err := names.ParseResource(name); err == nil {
			r.LateTLS = true
			return r.String()
		}
	case typ == xds.ClusterType:
		ring, certs := crashesOnRingHash(c.Node), hasCerts(c.Node)
		if !ring && !certs {
			break
		}
		if r, err := names.ParseResource(name); err == nil {
			r.NoRingHash, r.MTLS, r.LateTLS = ring, certs, certs && redialsOnTLSChange(c.Node)
			return r.String()
		}
	}
	return name
}

// hasCerts reports whether a client's bootstrap has nodexds' certificate
// provider (nodexds bootstrap --certs).
func hasCerts(n *corev3.Node) bool {
	return n.GetMetadata().GetFields()[xds.MetadataCertProvider].GetStringValue() == xds.CertProvider
}

// clientNamespace is the namespace of a client, for its consumer routes:
// what admission found; with no admission, what its bootstrap says. A peer
// shared by pods of several namespaces (hostNetwork) gets the producers'
// routes only, as does a client whose namespace is not a valid name.
func clientNamespace(client *corev3.Node, admitted []string) string {
	ns := ""
	switch len(admitted) {
	case 0:
		ns = client.GetMetadata().GetFields()[xds.MetadataNamespace].GetStringValue()
	case 1:
		ns = admitted[0]
	}
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return ""
	}
	return ns
}
