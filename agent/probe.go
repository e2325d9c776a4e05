package agent

import (
	"net/http"
	"time"
)

// probeServer serves what the kubelet probes, and nothing else (see
// handleProbes): the same answers as the admin port, for probes that must
// reach this agent when another one shares the node's ports.
func probeServer(ready func() bool, loop *heartbeat, stuckAfter time.Duration) *http.Server {
	mux := http.NewServeMux()
	handleProbes(mux, ready, loop, stuckAfter)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
