package agent

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Client bugs nodexds works around, per client, by serving such a client
// its own variant of a resource under a name of its own (see CacheKey and
// names.Resource.NoRingHash).

// redialsOnTLSChange reports whether a client opens new connections with
// the new settings as soon as a cluster's TLS settings change, dropping the
// ones it has (grpc-js-xds 1.14 rebuilds its subchannels; C-core 1.51 did
// in the e2e suite too), where grpc-go keeps its open connections: see
// latetls.go.
func redialsOnTLSChange(n *corev3.Node) bool {
	ua := n.GetUserAgentName()
	return strings.HasPrefix(ua, "gRPC Node") || strings.HasPrefix(ua, "gRPC C-core")
}

// crashesOnRingHash reports whether a client is gRPC C-core 1.51 (core
// 29.x, the version Debian ships as python3-grpcio), whose process crashes
// on any Cluster with the ring_hash policy — fixed in later C-core. Such a
// client gets round_robin instead: it loses session affinity, not its life.
func crashesOnRingHash(n *corev3.Node) bool {
	return strings.HasPrefix(n.GetUserAgentName(), "gRPC C-core") &&
		strings.Contains(n.GetUserAgentVersion(), "C-core 29.")
}
