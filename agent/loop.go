// The event loop: one goroutine applies discovery events, follows what
// clients subscribe to, and rebuilds what changed, in coalesced batches.

package agent

import (
	"context"
	"strings"
	"time"

	"github.com/nodexds/nodexds/internal/shrink"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// Run processes events and interests until ctx is done.
//
// Changes — discovery events and health transitions alike — are coalesced
// per Service: a Service's first change after a quiet period is built at
// once, its later ones wait until its window ends, so a flapping endpoint
// pushes at most once per window, not at its flap rate. Other Services'
// changes never wait for that window: one Service churning must not delay
// a change to another.
func (a *Agent) Run(ctx context.Context) error {
	window := time.NewTimer(0)
	<-window.C
	tick := time.NewTicker(heartbeatEvery) // an idle loop beats too
	defer tick.Stop()
	changed := func(force bool) {
		if next, held := a.flush(time.Now(), force); held {
			window.Reset(time.Until(next))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil

		case q := <-a.queue:
			barrier := a.take(q)
			// Drain what is already queued: a free batch.
			for drained := false; !drained; {
				select {
				case q := <-a.queue:
					barrier = a.take(q) || barrier
				default:
					drained = true
				}
			}
			// A barrier (Sync) promises that everything before it is
			// visible: nothing may wait for a window.
			changed(barrier)
			if barrier {
				a.cache.Publish()
				a.releaseBarriers()
			}

		case <-window.C:
			changed(false)

		case <-a.cache.Interests():
			a.interests(a.cache.TakeInterests())

		case req := <-a.debug:
			req.reply <- a.view(req.q)

		case f := <-a.reads:
			f()

		case <-tick.C: // nothing to do but beat, below

		case <-a.checker.Changed():
			// Only the Services whose endpoints changed health are rebuilt (their
			// load assignment, and picker routes if any; the rest is unchanged
			// and not resent).
			now := time.Now()
			for _, cluster := range a.checker.TakeChanged() {
				if k, ok := a.subs.service(xds.EndpointType, cluster); ok {
					a.markDirty(k, now, endpointsChanged)
				}
			}
			changed(false)
		}
		// Everything this iteration built becomes visible to streams at once.
		a.cache.Publish()
		// Emptied, not clear: clearing a map costs its capacity, and the
		// initial build leaves these with room for every Service.
		a.merged = shrink.Emptied(a.merged)
		a.beat.now()
	}
}

// take applies one queued item; it reports whether it was a barrier.
func (a *Agent) take(q queued) bool {
	a.beat.now() // a long drain (the initial list) is progress
	if q.done != nil {
		a.barriers = append(a.barriers, q.done)
		return true
	}
	a.apply(q.ev, q.at)
	return false
}

func (a *Agent) releaseBarriers() {
	for _, d := range a.barriers {
		close(d)
	}
	a.barriers = nil
}

// apply records an event in the store and marks what it touched.
func (a *Agent) apply(e discovery.Event, at time.Time) {
	kind, op := eventLabels(e)
	a.metrics.DiscoveryEvents.WithLabelValues(kind, op).Inc()
	ch := a.store.Apply(e)
	a.merged = shrink.Emptied(a.merged) // the store changed under them
	for _, k := range a.store.TakeMoved() {
		a.markDirty(k, at, endpointsChanged)
	}
	for _, k := range ch.Routed {
		a.markDirty(k, at, routesChanged)
	}
	if e.Route != nil && (len(ch.Routed) > 0 || e.Deleted) {
		a.checkRoute(e.Route, e.Deleted)
	}
	a.markServers(ch, e, at)
	switch {
	case ch.Service != nil && e.Service != nil:
		if e.Deleted {
			delete(a.configs, *ch.Service)
			delete(a.unread, *ch.Service) // one created again anew has nothing to move from
		} else if c := a.configs[*ch.Service]; c != nil {
			a.changedConfig(*ch.Service, c, at)
		}
		a.markDirty(*ch.Service, at, serviceChanged)
	case ch.Service != nil:
		a.markDirty(*ch.Service, at, endpointsChanged)
	case ch.Node != "":
		if ch.Node == a.cfg.NodeName {
			n, _ := a.store.Node(ch.Node)
			a.here = topology.Here{Node: a.cfg.NodeName, Zone: n.Zone, Region: n.Region}
		}
		// A node's zone or region moves every endpoint on it between tiers;
		// rare enough to rebuild every subscribed load assignment.
		if !a.dirtyAll {
			a.dirtyAll, a.observedAll = true, at
		}
	}
}

// markServers records what a change of policy must rebuild: a Namespace's
// defaults are read again for its Services (their clusters), and server
// listeners are rebuilt for a change of a Service, of a Namespace, or of
// which Services select a pod of this node.
func (a *Agent) markServers(ch discovery.Change, e discovery.Event, at time.Time) {
	if ch.Namespace != "" {
		for k, c := range a.configs {
			if k.Namespace == ch.Namespace && c != nil {
				a.changedConfig(k, c, at)
				delete(a.configs, k) // read again with the namespace's new defaults
				a.markDirty(k, at, serviceChanged)
			}
		}
	}
	if len(a.servers) > 0 && (ch.Namespace != "" || len(ch.Local) > 0 || ch.Service != nil && e.Service != nil) {
		a.serversDirty = true
	}
}

// affects is what a change can alter, as the resource types to rebuild.
type affects uint8

const (
	// endpointsChanged: slices, health or topology. They feed load
	// assignments and the endpoint picker's routes; listeners, clusters and
	// other routes are built from the Service alone, so rebuilding them for
	// an endpoint flip would be most of its cost for nothing.
	endpointsChanged affects = 1 << iota
	// serviceChanged: the Service itself, which every resource is built from.
	serviceChanged
	// routesChanged: the Gateway API routes naming the Service as a parent,
	// their backends or the grants they need; they feed its routes alone.
	routesChanged
)

// covers reports whether a change of what can alter a resource of type typ;
// picker says whether the Service's routes name its endpoints (asked only
// for a route after an endpoint change).
func (w affects) covers(typ string, picker func() bool) bool {
	switch {
	case w&serviceChanged != 0 || typ == xds.EndpointType && w&endpointsChanged != 0:
		return true
	case typ == xds.RouteType:
		return w&routesChanged != 0 || picker()
	case typ == xds.ListenerType:
		return w&routesChanged != 0 // a namespace's consumer routes come or go
	}
	return false
}

// pending is a Service waiting to be rebuilt.
type pending struct {
	observed time.Time // its first change since it was last built
	what     affects   // what its changes can alter
}

// markDirty records that a Service must be rebuilt, for what.
func (a *Agent) markDirty(k discovery.ServiceKey, at time.Time, what affects) {
	p, ok := a.dirty[k]
	if !ok {
		p.observed = at
	}
	p.what |= what
	a.dirty[k] = p
	if !ok {
		a.dirty = shrink.Map(a.dirty, &a.dirtyPeak)
	}
}

// flush rebuilds the subscribed resources of every dirty Service whose
// window allows it (all of them if force), and reports the earliest time a
// held one is due, if any.
func (a *Agent) flush(now time.Time, force bool) (next time.Time, held bool) {
	win := a.cfg.Coalesce
	hold := func(last time.Time) bool {
		if force || last.IsZero() || now.Sub(last) >= win {
			return false
		}
		if due := last.Add(win); !held || due.Before(next) {
			next, held = due, true
		}
		return true
	}
	// Windows that have ended are forgotten: pushed holds only the Services
	// rebuilt in the last window.
	for k, at := range a.pushed {
		if now.Sub(at) >= win {
			delete(a.pushed, k)
		}
	}
	a.dueMoves(now)
	// Building may start moves (config): when the next is due is asked last.
	defer func() {
		if due := a.nextMove(); !due.IsZero() && (!held || due.Before(next)) {
			next, held = due, true
		}
	}()
	a.rebuildServers(now, a.serversDirty)
	a.serversDirty = false
	if !a.serverDue.IsZero() && (!held || a.serverDue.Before(next)) {
		next, held = a.serverDue, true
	}
	if a.dirtyAll && !hold(a.pushedAll) {
		for _, k := range a.subs.services() {
			// A Service with changes of its own gets those built too.
			p, observed := a.dirty[k], a.observedAll
			if !p.observed.IsZero() && p.observed.Before(observed) {
				observed = p.observed
			}
			a.rebuild(k, observed, p.what|endpointsChanged)
		}
		a.dirtyAll, a.observedAll, a.pushedAll = false, time.Time{}, now
		a.dirty = shrink.Emptied(a.dirty) // rebuilt above, if subscribed
		return next, held
	}
	for k, p := range a.dirty {
		if !a.subs.has(k) {
			delete(a.dirty, k) // nobody here uses it: nothing to build, no window spent
			continue
		}
		if hold(a.pushed[k]) {
			continue
		}
		a.rebuild(k, p.observed, p.what)
		a.pushed[k] = now
		delete(a.dirty, k)
	}
	// The initial state marks every Service: iterating a map costs its
	// capacity, so do not keep that size for every later change.
	a.dirty = shrink.Map(a.dirty, &a.dirtyPeak)
	return next, held
}

// interests follows subscription changes from the cache: build what became
// wanted, forget what is no longer wanted.
func (a *Agent) interests(in []xds.Interest) {
	now := time.Now()
	for _, i := range in {
		if i.Type == xds.ListenerType && names.IsServer(i.Name) {
			a.serverInterest(i.Name, i.Wanted, now)
			continue
		}
		if !i.Wanted {
			a.subs.remove(i.Type, i.Name)
			if i.Type == xds.EndpointType {
				a.checker.Track(i.Name, nil) // nobody here uses it: stop checking
				a.setFailOpen(i.Name, false)
			}
			continue
		}
		var key discovery.ServiceKey
		var err error
		if i.Type == xds.ListenerType {
			key, err = a.subs.addListener(i.Name, a.cfg.Names)
		} else {
			key, err = a.subs.addCanonical(i.Type, i.Name, a.cfg.Names)
		}
		if err != nil {
			// Not a name we could ever serve: say so once, and answer "none".
			a.metrics.UnresolvedNames.Inc()
			// Debug only: clients choose these names, so a warning per name
			// would let any client fill the logs; the metric counts them.
			a.log.Debug("client asked for a name that cannot be served", "type", i.Type, "name", i.Name, "error", err)
			a.set(i.Type, i.Name, nil, xds.Scope{}, now)
			continue
		}
		a.build(key, i.Type, i.Name, now)
	}
}

// rebuild rebuilds the subscribed resources of one Service that what can
// have altered.
func (a *Agent) rebuild(k discovery.ServiceKey, observed time.Time, what affects) {
	a.metrics.Rebuilds.Inc()
	for typ, names := range a.subs.of(k) {
		if !what.covers(typ, func() bool { return a.picksEndpoints(k) }) {
			continue
		}
		for _, n := range names {
			a.build(k, typ, n, observed)
		}
	}
}

// picksEndpoints reports whether a Service's routes name its endpoints (the
// endpoint picker): only then does an endpoint change alter them.
func (a *Agent) picksEndpoints(k discovery.ServiceKey) bool {
	svc, ok := a.store.Service(k)
	return ok && a.config(svc).lb.EndpointHeader != ""
}

// eventKinds are the kinds eventLabels names (besides "unknown", which no
// source sends).
var eventKinds = []string{"service", "endpointslice", "node", "grpcroute", "httproute", "referencegrant", "namespace"}

func eventLabels(e discovery.Event) (kind, op string) {
	op = "upsert"
	if e.Deleted {
		op = "delete"
	}
	switch {
	case e.Service != nil:
		return "service", op
	case e.Slice != nil:
		return "endpointslice", op
	case e.Node != nil:
		return "node", op
	case e.Route != nil:
		return strings.ToLower(e.Route.Key.Kind), op
	case e.Grant != nil:
		return "referencegrant", op
	case e.Namespace != nil:
		return "namespace", op
	}
	return "unknown", op
}
