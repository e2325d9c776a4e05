// Health checking as clients see it: the status each endpoint is served
// with, and failing open when a cluster's endpoints all fail.

package agent

import (
	"net/netip"

	"github.com/nodexds/nodexds/health"
)

// setFailOpen records whether a cluster is failing open, for status and the
// metric.
func (a *Agent) setFailOpen(cluster string, failOpen bool) {
	if failOpen {
		a.failOpen[cluster] = true
	} else {
		delete(a.failOpen, cluster)
	}
	a.metrics.HealthFailOpen.Set(float64(len(a.failOpen)))
}

// status is what clients are told of an endpoint's health in cluster.
func (a *Agent) status(cluster string, cfg serviceConfig) func(netip.AddrPort) health.Status {
	if !cfg.health.Enabled || a.failOpen[cluster] {
		return nil // all Unknown
	}
	return func(ap netip.AddrPort) health.Status {
		return a.checker.Status(health.Target{Addr: ap, Service: cfg.health.Name})
	}
}
