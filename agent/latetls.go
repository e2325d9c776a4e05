// Clients that dial anew as soon as a cluster's TLS settings change
// (grpc-js-xds and C-core; see redialsOnTLSChange) cannot keep their
// connections through a Service's move between plaintext and TLS, as
// grpc-go's do while the servers hand over (servers.go): moved with the
// other clients, they would fail every call until the servers follow. So
// their clusters (cached apart, names.Resource.LateTLS) move with the
// servers instead, just after them: what they lose is the calls of that
// moment, not of the whole handover.

package agent

import (
	"time"

	"github.com/nodexds/nodexds/discovery"
)

// lateAfter is how long after the servers' handover the late clients move:
// long enough for every agent to have moved its servers (they saw the
// change within milliseconds of each other), short, since their calls fail
// meanwhile.
const lateAfter = 100 * time.Millisecond

// tlsMove is a Service's move between plaintext and TLS, as its late
// clients see it: old until then.
type tlsMove struct {
	old   bool
	until time.Time
}

// movedTLS records that a Service whose change was seen at at (its
// configuration read again since) wants TLS (now) or not, where it wanted
// was before.
func (a *Agent) movedTLS(k discovery.ServiceKey, was, now bool, at time.Time) {
	if m, ok := a.tlsMoves[k]; ok {
		was = m.old // still moving: its late clients have what it had before
	}
	if was == now {
		delete(a.tlsMoves, k)
		return
	}
	a.tlsMoves[k] = tlsMove{old: was, until: at.Add(a.cfg.Handover + lateAfter)}
}

// lateTLS is whether a Service's late clients' clusters are TLS, when its
// policy wants want.
func (a *Agent) lateTLS(k discovery.ServiceKey, want bool) bool {
	if m, ok := a.tlsMoves[k]; ok {
		return m.old
	}
	return want
}

// dueMoves marks for rebuilding the Services whose late clients' move is
// due.
func (a *Agent) dueMoves(now time.Time) {
	for k, m := range a.tlsMoves {
		if !now.Before(m.until) {
			delete(a.tlsMoves, k)
			a.markDirty(k, now, serviceChanged)
		}
	}
}

// nextMove is when the next move is due (zero: none).
func (a *Agent) nextMove() (next time.Time) {
	for _, m := range a.tlsMoves {
		if next.IsZero() || m.until.Before(next) {
			next = m.until
		}
	}
	return next
}
