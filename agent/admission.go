package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// NodePods admits ADS clients whose address is the IP of a Pod on this node
// (hostNetwork Pods carry the node's IP, so host processes in such Pods are
// admitted by it). Anything else — a pod of another node, a node, anything
// outside the cluster — is refused with PERMISSION_DENIED.
//
// A client that names another node in its bootstrap (xds.MetadataNodeName:
// this agent is its fallback server) is admitted if Foreign finds a Pod of
// that node with the client's address, and served that node's view.
type NodePods struct {
	Pods interface {
		Lookup(netip.Addr) []discovery.PodRef
	}
	// Foreign looks up the Pods of another node with an IP; nil refuses
	// every client of another node.
	Foreign func(ctx context.Context, ip netip.Addr, node string) ([]discovery.PodRef, error)
	Node    string
	// Grace is how long an unknown peer is re-checked before it is refused:
	// a Pod that just started may open its stream before the informer has
	// seen its IP.
	Grace time.Duration
}

// DefaultAdmissionGrace covers the usual informer lag (tens of milliseconds)
// with a wide margin, while a refused peer costs only a short wait.
const DefaultAdmissionGrace = 2 * time.Second

var _ xds.AdmitFunc = NodePods{}.Admit

// Admit returns the namespaces of the Pods at peer, or PERMISSION_DENIED.
func (n NodePods) Admit(ctx context.Context, peer netip.Addr, client *corev3.Node) ([]string, error) {
	if claimed := client.GetMetadata().GetFields()[xds.MetadataNodeName].GetStringValue(); claimed != "" && claimed != n.Node {
		return n.admitForeign(ctx, peer, claimed)
	}
	const every = 100 * time.Millisecond
	deadline := time.Now().Add(n.Grace)
	for {
		if pods := n.Pods.Lookup(peer); len(pods) > 0 {
			return namespaces(pods), nil
		}
		if !time.Now().Add(every).Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(every):
		}
	}
	who := "peer " + peer.String()
	if !peer.IsValid() {
		who = "a peer without an IP address"
	}
	return nil, status.Error(codes.PermissionDenied,
		fmt.Sprintf("%s is not a pod on node %s: this nodexds agent serves only the pods of its node", who, n.Node))
}

// admitForeign admits a client of another node, if it is a pod there.
func (n NodePods) admitForeign(ctx context.Context, peer netip.Addr, node string) ([]string, error) {
	if n.Foreign == nil {
		return nil, status.Errorf(codes.PermissionDenied, "peer %s says it runs on node %s: this agent serves only the pods of node %s", peer, node, n.Node)
	}
	pods, err := n.Foreign(ctx, peer, node)
	if err != nil {
		// Cannot verify: refuse, and let the client retry (it has its own agent).
		return nil, status.Errorf(codes.Unavailable, "cannot verify that peer %s is a pod of node %s: %v", peer, node, err)
	}
	if len(pods) == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "peer %s is not a pod on node %s, the node it names", peer, node)
	}
	return namespaces(pods), nil
}

func namespaces(pods []discovery.PodRef) []string {
	var ns []string
	for _, p := range pods {
		ns = append(ns, p.Namespace)
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}
