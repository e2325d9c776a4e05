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
	// Identity, when not empty, makes the checks TLS, with the settings
	// Config.TLS gives for it: the servers of an mTLS Service. A server that
	// answers in plaintext (it has not handed over to TLS yet) is checked
	// in plaintext.
	Identity string
}

// Checker checks endpoints the agent tells it to, and reports changes.
type Checker interface {
	// Track replaces the set of endpoints to check for one cluster. Endpoints
	// no cluster lists any more stop being checked; nil stops the cluster.
	// It reports whether the status of one of targets changed meanwhile (a
	// check stopped to make room in the budget): what the caller read of
	// them before is then out of date.
	Track(cluster string, targets []Target) bool
	// Status returns the current status of t.
	Status(t Target) Status
	// Changed is signalled when TakeChanged has clusters to return.
	Changed() <-chan struct{}
	// TakeChanged returns and clears the clusters whose endpoints changed status.
	TakeChanged() []string
}

// None is a Checker that checks nothing: every endpoint is Unknown.
type None struct{}

var _ Checker = None{}

func (None) Track(string, []Target) bool { return false }
func (None) Status(Target) Status        { return Unknown }
func (None) Changed() <-chan struct{}    { return nil }
func (None) TakeChanged() []string       { return nil }
