package agent

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Client bugs nodexds works around, per client, by serving such a client
// its own variant of a resource under a name of its own (see CacheKey).

// noRingHash marks the cache name of a cluster served to a client that
// crashes on ring_hash: the same cluster with round_robin. The client never
// sees the mark; it is how its variant is cached apart.
const noRingHash = "#no-ring-hash"

// crashesOnRingHash reports whether a client is gRPC C-core 1.51 (core
// 29.x, the version Debian ships as python3-grpcio), whose process crashes
// on any Cluster with the ring_hash policy — fixed in later C-core. Such a
// client gets round_robin instead: it loses session affinity, not its life.
func crashesOnRingHash(n *corev3.Node) bool {
	return strings.HasPrefix(n.GetUserAgentName(), "gRPC C-core") &&
		strings.Contains(n.GetUserAgentVersion(), "C-core 29.")
}
