// Clients that dial anew as soon as a cluster's TLS settings change
// (grpc-js-xds and C-core; see redialsOnTLSChange) cannot keep their
// connections through a Service's move between plaintext and TLS, as
// grpc-go's do while the servers hand over (servers.go): moved with the
// other clients, they would fail every call until the servers follow, and
// moved with the servers, every call of the moment between.
//
// So a move gives their routes fresh clusters (a new generation of the
// Service's cluster names, names.Resource.Gen) a little before the servers
// hand over, with the new TLS settings and no endpoints yet, and fills them
// a little after. To C-core a new cluster without endpoints is one whose
// calls wait (its cluster manager queues them); grpc-js-xds holds the whole
// new configuration back until the endpoints come, so its calls of the
// moment after the servers moved fail on its old connections, and are
// retried while the move lasts (build.go, moveRetry). Until the fresh
// clusters are named, every generation keeps the TLS settings the late
// clients had; once the move is over, every generation has the Service's
// own.

package agent

import (
	"time"

	"github.com/nodexds/nodexds/discovery"
)

// lateLead and lateLag are how long before the servers' handover a move's
// fresh clusters are named, and how long after it they are filled: long
// enough for every agent to have moved its servers (they see a change
// within milliseconds of each other), short, since calls wait meanwhile.
const lateLead, lateLag = 100 * time.Millisecond, 100 * time.Millisecond

// tlsMove is a Service's move between plaintext and TLS, as its late
// clients see it.
type tlsMove struct {
	old bool      // their TLS settings before the move
	at  time.Time // when the change was seen: servers hand over a Handover later
	gen uint32    // the fresh generation, once named (0: not yet)
}

func (m tlsMove) nameAt(handover time.Duration) time.Time {
	return m.at.Add(handover - lateLead)
}

func (m tlsMove) fillAt(handover time.Duration) time.Time {
	return m.at.Add(handover + lateLag)
}

// seenChange is a change of a Service's configuration, not read yet: when
// it was seen, and whether the configuration it changed wanted TLS.
type seenChange struct {
	at  time.Time
	tls bool
}

// changedConfig records that a Service's configuration, last read as c,
// changed at at: a move starts when a change is seen, not when the
// configuration is read again (config, then movedTLS).
func (a *Agent) changedConfig(k discovery.ServiceKey, c *serviceConfig, at time.Time) {
	a.unread[k] = seenChange{at: at, tls: c.trust.Mode.TLS()}
}

// movedTLS records that a Service whose change was seen at at wants TLS
// (now) or not, where it wanted was before.
func (a *Agent) movedTLS(k discovery.ServiceKey, was, now bool, at time.Time) {
	m, moving := a.tlsMoves[k]
	switch {
	case !moving && was != now:
		a.tlsMoves[k] = tlsMove{old: was, at: at}
	case !moving || now != m.old:
		// No move, or the move goes on (permissive → strict).
	case m.gen != 0 && !at.Before(m.at.Add(a.cfg.Handover)):
		// Turned back once the servers had moved: they move back a
		// handover from now, and the late clients with them, from the
		// fresh clusters, which are filled now.
		a.tlsMoves[k] = tlsMove{old: !m.old, at: at}
	default:
		// Turned back before the servers moved: they never will, and every
		// generation, the fresh one too, has what the late clients had.
		delete(a.tlsMoves, k)
	}
}

// late is where a Service's late clients are: the generation of its
// clusters their routes name, and the move under way, if any.
type late struct {
	gen    uint32
	move   tlsMove
	moving bool
}

// late returns where a Service's late clients are.
func (a *Agent) late(k discovery.ServiceKey) late {
	m, moving := a.tlsMoves[k]
	return late{gen: a.lateGens[k], move: m, moving: moving}
}

// tls is whether generation gen of the Service's clusters is TLS for late
// clients, when its policy wants want: until the fresh generation is
// named, every one keeps what they had before the move.
func (l late) tls(want bool, gen uint32) bool {
	switch {
	case !l.moving:
		return want
	case l.move.gen != 0 && gen == l.move.gen:
		return !l.move.old
	}
	return l.move.old
}

// withheld reports whether the load assignments of generation gen are held
// back: the move that named it is not over.
func (l late) withheld(gen uint32) bool {
	return l.moving && l.move.gen != 0 && gen == l.move.gen
}

// view is where a Service's late clients are, for the debug pages: nil if
// it never moved.
func (l late) view(want bool, handover time.Duration) *LateClientsView {
	if !l.moving && l.gen == 0 {
		return nil
	}
	v := &LateClientsView{Generation: l.gen, TLS: l.tls(want, l.gen)}
	switch {
	case l.moving && l.move.gen == 0:
		v.Moving, v.Next = "naming", l.move.nameAt(handover).UTC().Format(time.RFC3339Nano)
	case l.moving:
		v.Moving, v.Next = "filling", l.move.fillAt(handover).UTC().Format(time.RFC3339Nano)
	}
	return v
}

// dueMoves names and fills the fresh clusters of the moves that are due,
// marking for rebuilding what that changes: the Service's resources, and
// the routes of the Services whose Gateway API routes send to it.
func (a *Agent) dueMoves(now time.Time) {
	h := a.cfg.Handover
	for k, m := range a.tlsMoves {
		changed := false
		if m.gen == 0 && !now.Before(m.nameAt(h)) {
			// From the clock, so that an agent started anew does not name
			// a generation its clients may still hold from before (C-core
			// keeps a cluster 15 minutes after its last use).
			m.gen = max(a.lateGens[k]+1, uint32(now.Unix()))
			a.lateGens[k] = m.gen
			a.tlsMoves[k] = m
			changed = true
		}
		if m.gen != 0 && !now.Before(m.fillAt(h)) {
			delete(a.tlsMoves, k)
			changed = true
		}
		if changed {
			a.markDirty(k, now, serviceChanged)
			for _, p := range a.store.ParentsOf(k) {
				a.markDirty(p, now, routesChanged)
			}
		}
	}
}

// nextMove is when the next move is due to be named or filled (zero:
// none).
func (a *Agent) nextMove() (next time.Time) {
	for _, m := range a.tlsMoves {
		due := m.fillAt(a.cfg.Handover)
		if m.gen == 0 {
			due = m.nameAt(a.cfg.Handover)
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next
}
