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
type NodePods struct {
	Pods interface {
		Lookup(netip.Addr) []discovery.PodRef
	}
	Node string
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
func (n NodePods) Admit(ctx context.Context, peer netip.Addr, _ *corev3.Node) ([]string, error) {
	const every = 100 * time.Millisecond
	deadline := time.Now().Add(n.Grace)
	for {
		if pods := n.Pods.Lookup(peer); len(pods) > 0 {
			var ns []string
			for _, p := range pods {
				ns = append(ns, p.Namespace)
			}
			slices.Sort(ns)
			return slices.Compact(ns), nil
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
