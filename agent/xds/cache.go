// Package xds serves resources over ADS, state-of-the-world, to many clients
// that each want a different subset of them.
//
// Three parts, each with one job:
//   - the Cache holds one version of each resource some client subscribes to,
//     by type and name. It builds nothing: when the first stream subscribes to
//     a name it records an Interest, the agent builds the resource and Sets it
//     (or Sets nil: there is none). Versions are hashes of content, so an
//     unchanged resource is never resent and a restarted agent reproduces the
//     same versions.
//   - plan decides, from a stream's subscriptions, what the cache holds for
//     them and what the stream has told its client, which responses to send
//     and in which order. It is a pure function.
//   - the Server owns streams: it reads requests, keeps the index of who
//     subscribes to what, wakes streams when the Cache says a resource
//     changed, and sends what plan decides.
//
// Unlike go-control-plane's snapshot cache in ADS mode, nothing waits for a
// client to ask for "all" resources, and a request that only adds a name is
// answered like any other: each stream tracks what it has told its client.
package xds

import (
	"cmp"
	"encoding/hex"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodexds/nodexds/internal/shrink"
)

// Interest says that the first stream subscribed to a resource (Wanted) or
// the last one left (!Wanted).
type Interest struct {
	Type, Name string
	Wanted     bool
}

// key names one resource.
type key struct{ typ, name string }

// entry is what the cache holds for one subscribed name.
type entry struct {
	resolved bool       // the agent has Set it (resource may still be nil: absent)
	resource *anypb.Any // marshalled once, shared by every stream; nil when absent
	version  string     // hash of the resource; "" when absent
	scope    Scope      // who may see it
	observed time.Time  // when the change that produced this version was first seen
}

// Scope says which clients may see a resource: those in its namespace, and
// those in the namespaces it is exported to ("*": every namespace). The zero
// Scope is public.
type Scope struct {
	Namespace string
	ExportTo  []string
}

// VisibleTo reports whether a client in namespaces may see a resource of
// scope s. A client in several namespaces (processes on the host network
// share the node's IP) sees only what every one of them may see; a client in
// none sees only what is public or exported to all.
func (s Scope) VisibleTo(namespaces []string) bool {
	if s.Namespace == "" || slices.Contains(s.ExportTo, "*") {
		return true
	}
	for _, ns := range namespaces {
		if ns != s.Namespace && !slices.Contains(s.ExportTo, ns) {
			return false
		}
	}
	return len(namespaces) > 0
}

func (s Scope) equal(o Scope) bool {
	return s.Namespace == o.Namespace && slices.Equal(s.ExportTo, o.ExportTo)
}

// Cache is safe for concurrent use.
//
// Set stages a change and Publish makes every staged change visible at once:
// streams never see half of a batch (a Service's cluster without its
// endpoints, or 499 of 500 clusters a route names), and each is woken once
// per batch rather than once per resource.
type Cache struct {
	mu        sync.Mutex
	entries   map[key]*entry // subscribed names only, as published
	staged    map[key]entry  // Set but not yet published
	interests map[key]bool   // pending for the agent, latest wins
	signal    chan struct{}  // cap 1: interests are pending
	changed   func([]key)
	peak      int // of entries, see shrink.Map
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{
		entries:   map[key]*entry{},
		staged:    map[key]entry{},
		interests: map[key]bool{},
		signal:    make(chan struct{}, 1),
	}
}

// Interests is signalled when TakeInterests has something to return.
func (c *Cache) Interests() <-chan struct{} { return c.signal }

// TakeInterests returns and clears the pending interest changes. A name that
// was dropped and re-subscribed in between is reported Wanted, and must be
// Set again: its old entry is gone.
func (c *Cache) TakeInterests() []Interest {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Interest, 0, len(c.interests))
	for k, wanted := range c.interests {
		out = append(out, Interest{Type: k.typ, Name: k.name, Wanted: wanted})
	}
	c.interests = shrink.Emptied(c.interests)
	return out
}

// Set stages the current resource for a subscribed name, and who may see
// it; nil means there is none. It is a no-op for a name nobody subscribes
// to, and for content and scope equal to what is published. observed is
// when the underlying change was first seen, for push-latency accounting.
// Publish makes it visible.
func (c *Cache) Set(typ, name string, res proto.Message, scope Scope, observed time.Time) error {
	var packed *anypb.Any
	var version string
	if res != nil {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(res)
		if err != nil {
			return err
		}
		packed = &anypb.Any{TypeUrl: typ, Value: b}
		version = hash(b)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{typ, name}
	e := c.entries[k]
	switch {
	case e == nil:
	case e.resolved && e.version == version && e.scope.equal(scope):
		delete(c.staged, k) // back to what is published
	default:
		c.staged[k] = entry{resolved: true, resource: packed, version: version, scope: scope, observed: observed}
	}
	return nil
}

// Publish makes every staged change visible and wakes the streams subscribed
// to what changed.
func (c *Cache) Publish() {
	c.mu.Lock()
	if len(c.staged) == 0 {
		c.mu.Unlock()
		return
	}
	keys := make([]key, 0, len(c.staged))
	for k, st := range c.staged {
		if e := c.entries[k]; e != nil {
			*e = st
			keys = append(keys, k)
		}
	}
	c.staged = shrink.Emptied(c.staged)
	changed := c.changed
	c.mu.Unlock()
	if changed != nil {
		changed(keys) // outside the lock: the Server takes its own
	}
}

// Subscribed reports whether any stream subscribes to the name.
func (c *Cache) Subscribed(typ, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[key{typ, name}] != nil
}

// onChange sets the function told, outside the cache's lock, which
// subscribed resources a Publish changed.
func (c *Cache) onChange(f func([]key)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changed = f
}

// want records that a name has its first subscriber.
func (c *Cache) want(typ, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{typ, name}
	if c.entries[k] == nil {
		c.entries[k] = &entry{}
		c.entries = shrink.Map(c.entries, &c.peak)
		c.interest(k, true)
	}
}

// drop records that a name lost its last subscriber.
func (c *Cache) drop(typ, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{typ, name}
	if c.entries[k] != nil {
		delete(c.entries, k)
		delete(c.staged, k)
		c.entries = shrink.Map(c.entries, &c.peak)
		c.interest(k, false)
	}
}

// lookup fills subs' entries with what the cache holds now (zero: unresolved).
func (c *Cache) lookup(typ string, subs []sub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range subs {
		if e := c.entries[key{typ, cmp.Or(subs[i].key, subs[i].name)}]; e != nil {
			subs[i].entry = *e
		} else {
			subs[i].entry = entry{}
		}
	}
}

func (c *Cache) interest(k key, wanted bool) {
	c.interests[k] = wanted
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func hash(b []byte) string {
	h := fnv.New64a()
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
