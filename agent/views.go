package agent

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

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
// gets its listener under a name of its own view; every other name the
// agent handed out already carries its view.
//
// A client with a known bug is also served its own variant of what it
// cannot take (see compat.go).
func (a *Agent) CacheKey(client *corev3.Node, typ, name string) string {
	switch {
	case typ == xds.ListenerType:
		if view := a.viewOf(client); view != "" {
			return names.Resource{Base: name, View: view}.String()
		}
	case typ == xds.ClusterType && crashesOnRingHash(client):
		if r, err := names.ParseResource(name); err == nil {
			r.NoRingHash = true
			return r.String()
		}
	}
	return name
}
