// Package xds serves resources over ADS, state-of-the-world, to many clients
// that each want a different subset of them.
//
// The Cache holds one version of each resource that some client subscribes
// to, by type and name. It does not build anything: when the first stream
// subscribes to a name it records an Interest, the agent builds the resource
// and Sets it (or Sets nil: there is none), and every subscribed stream is
// woken. Versions are hashes of content, so an unchanged resource is never
// resent and a restarted agent reproduces the same versions.
//
// Unlike go-control-plane's snapshot cache in ADS mode, nothing waits for a
// client to ask for "all" resources, and a request that only adds a name is
// answered like any other: each stream tracks what it has sent per name.
package xds

import (
	"encoding/hex"
	"hash/fnv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Interest says that the first stream subscribed to a resource (Wanted) or
// the last one left (!Wanted).
type Interest struct {
	Type, Name string
	Wanted     bool
}

// entry is one subscribed resource.
type entry struct {
	known    bool       // the agent has Set it (resource may still be nil: absent)
	resource *anypb.Any // marshalled once, shared by every stream; nil when absent
	version  string
	observed time.Time // when the change that produced this version was first seen
	subs     map[*stream]struct{}
}

// Cache is safe for concurrent use.
type Cache struct {
	mu        sync.Mutex
	entries   map[string]map[string]*entry // type → name → entry
	interests map[[2]string]bool           // pending, latest wins
	signal    chan struct{}                // cap 1: interests are pending
	onCount   func(typ string, n int)
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{
		entries:   map[string]map[string]*entry{},
		interests: map[[2]string]bool{},
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
		out = append(out, Interest{Type: k[0], Name: k[1], Wanted: wanted})
	}
	clear(c.interests)
	return out
}

// Set stores the current resource for a subscribed name; nil means there is
// none. It is a no-op for a name nobody subscribes to, and for content equal
// to what is stored. observed is when the underlying change was first seen,
// for push-latency accounting.
func (c *Cache) Set(typ, name string, res proto.Message, observed time.Time) error {
	var packed *anypb.Any
	version := "absent"
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
	e := c.entries[typ][name]
	if e == nil || (e.known && e.version == version) {
		return nil
	}
	e.known, e.resource, e.version, e.observed = true, packed, version, observed
	for s := range e.subs {
		s.wake(typ)
	}
	return nil
}

// Subscribed reports whether any stream subscribes to the name.
func (c *Cache) Subscribed(typ, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[typ][name] != nil
}

// subscribe updates s's subscriptions for typ to names, returning nothing:
// interest changes are queued for the agent.
func (c *Cache) subscribe(s *stream, typ string, add, remove []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byName := c.entries[typ]
	if byName == nil {
		byName = map[string]*entry{}
		c.entries[typ] = byName
	}
	for _, n := range add {
		e := byName[n]
		if e == nil {
			e = &entry{subs: map[*stream]struct{}{}}
			byName[n] = e
			c.interest(typ, n, true)
		}
		e.subs[s] = struct{}{}
	}
	for _, n := range remove {
		e := byName[n]
		if e == nil {
			continue
		}
		delete(e.subs, s)
		if len(e.subs) == 0 {
			delete(byName, n)
			c.interest(typ, n, false)
		}
	}
	if c.onCount != nil {
		c.onCount(typ, len(byName)) // under the lock, so updates cannot cross
	}
}

// OnSubscriptionCount sets a function told, with the cache locked, how many
// distinct names of a type are subscribed whenever that changes. It must not
// call back into the Cache.
func (c *Cache) OnSubscriptionCount(f func(typ string, n int)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onCount = f
}

func (c *Cache) interest(typ, name string, wanted bool) {
	c.interests[[2]string{typ, name}] = wanted
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
