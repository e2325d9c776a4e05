// Package health is the active health-checking stage: it tells the agent what
// it has learned about endpoints, on top of what Kubernetes says.
//
// This file is the seam the agent depends on. A checker that does nothing
// (None) is what the agent runs with until active checking is configured.
package health

import "net/netip"

// Status is what active checking knows about one endpoint.
type Status uint8

const (
	// Unknown: not checked (yet). The endpoint is used.
	Unknown Status = iota
	// Healthy: the last checks passed.
	Healthy
	// Unhealthy: the last checks failed. Clients stop using the endpoint.
	Unhealthy
)

func (s Status) String() string {
	switch s {
	case Healthy:
		return "HEALTHY"
	case Unhealthy:
		return "UNHEALTHY"
	}
	return "UNKNOWN"
}

// Target is one endpoint to check, and the health service name to ask about.
type Target struct {
	Addr    netip.AddrPort
	Service string
}

// Checker checks endpoints the agent tells it to, and reports changes.
type Checker interface {
	// Track replaces the set of endpoints to check, keyed by the cluster that
	// needs them. Endpoints no longer listed stop being checked.
	Track(cluster string, targets []Target)
	// Status returns the current status of addr.
	Status(addr netip.AddrPort) Status
}

// None is a Checker that checks nothing: every endpoint is Unknown.
type None struct{}

var _ Checker = None{}

func (None) Track(string, []Target)       {}
func (None) Status(netip.AddrPort) Status { return Unknown }
