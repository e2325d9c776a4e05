package xds

import "github.com/nodexds/nodexds/internal/shrink"

// subscribe updates the index of who subscribes to what; the Cache hears of
// a name's first subscriber and of its last one leaving.
func (s *Server) subscribe(st *stream, typ string, add, remove []string) {
	if len(add)+len(remove) == 0 {
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, n := range add {
		k := key{typ, st.keyOf(typ, n)}
		set := s.subs[k]
		if set == nil {
			set = map[*stream]struct{}{}
			s.subs[k] = set
			s.cache.want(typ, k.name)
			s.count[typ]++
		}
		set[st] = struct{}{}
	}
	for _, n := range remove {
		k := key{typ, st.keyOf(typ, n)}
		set := s.subs[k]
		if _, ok := set[st]; !ok {
			continue
		}
		delete(set, st)
		if len(set) == 0 {
			delete(s.subs, k)
			s.cache.drop(typ, k.name)
			s.count[typ]--
		}
	}
	s.subs = shrink.Map(s.subs, &s.subsPeak)
	s.metrics.Subscriptions.WithLabelValues(ShortType(typ)).Set(float64(s.count[typ]))
}

// resourcesChanged wakes the streams subscribed to resources the Cache changed.
func (s *Server) resourcesChanged(keys []key) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, k := range keys {
		for st := range s.subs[k] {
			st.wake(k.typ, k.name)
		}
	}
}

// keyOf is the cache's name for a name the stream's client subscribes to.
func (st *stream) keyOf(typ, name string) string {
	if st.srv.key == nil {
		return name
	}
	return st.srv.key(Client{Node: st.node, Addr: st.peer, Namespaces: st.namespaces}, typ, name)
}

// dirty is what changed for a stream since it last looked, per type (in
// addOrder): the cache keys of the Routes and Endpoints that changed, or a
// type to be looked at whole (Listeners and Clusters are full state: any
// change means a response carrying all of them).
type dirty [len(addOrder)]changed

type changed struct {
	any  bool                // something of the type changed
	keys map[string]struct{} // what, if not the whole type
}

func (d *dirty) empty() bool {
	for _, c := range d {
		if c.any {
			return false
		}
	}
	return true
}

func (d *dirty) all(typ string) { d[typeIndex(typ)] = changed{any: true} }

func (d *dirty) add(typ, key string) {
	c := &d[typeIndex(typ)]
	switch {
	case fullState(typ):
		*c = changed{any: true}
	case c.any && c.keys == nil: // already whole
	default:
		if c.keys == nil {
			c.keys = map[string]struct{}{}
		}
		c.any = true
		c.keys[key] = struct{}{}
	}
}

// wake records that the resource key of type typ changed ("" for every
// name of the type), and makes sure a worker will send what that calls for.
// One worker runs at a time; it exits once nothing is left, so an idle
// stream holds no goroutine for sending.
func (st *stream) wake(typ, key string) {
	st.mu.Lock()
	if key == "" {
		st.dirty.all(typ)
	} else {
		st.dirty.add(typ, key)
	}
	start := !st.working && !st.ended
	st.working = st.working || start
	st.mu.Unlock()
	if start {
		go st.work()
	}
}

// work sends what changed until nothing has: it is the only goroutine that
// sends on the stream. A failed Send means the stream is broken, and its
// reader hears of it too.
func (st *stream) work() {
	for {
		st.mu.Lock()
		d := st.dirty
		if d.empty() || st.ended {
			st.working = false
			st.mu.Unlock()
			return
		}
		st.dirty = dirty{}
		st.mu.Unlock()
		if err := st.respond(d); err != nil {
			st.mu.Lock()
			st.working, st.ended = false, true
			st.mu.Unlock()
			return
		}
	}
}
