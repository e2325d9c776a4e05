package xds

import (
	"slices"
	"sync"
	"time"
)

// A request larger than the stream window (65,535 bytes) cannot be flow
// controlled: the server must take it whole before it can read it, so it
// opens the window as the bytes come. What such requests make the agent
// hold is bounded by a budget shared by every connection: a large request
// is read only once its prefix is in and the budget has room for its
// length (package wire waits before reading the connection on; TCP holds
// the client back), and counts until its handler has received it, or its
// stream ended.
//
// Requests that fit the window are never held: flow control already bounds
// them, and they are what well-behaved clients send (ACKs, subscriptions to
// a few hundred names).

// heldWait is how long a connection in the middle of a large request may
// wait for budget for another. It is sending two at once, interleaved on one
// connection (no gRPC xDS client does: each opens one ADS stream), and the
// one it has begun cannot finish while it waits: beyond this, it is closed.
const heldWait = time.Second

// readBudget is the bytes of large requests being read, across all
// connections (Limits.MaxReadingBytes). Waiters are served in order.
type readBudget struct {
	mu    sync.Mutex
	max   int64
	used  int64
	queue []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newReadBudget(max int) *readBudget { return &readBudget{max: int64(max)} }

// fits reports whether n may be taken now (under mu): a request larger than
// the whole budget is read alone.
func (b *readBudget) fits(n int64) bool { return b.used+n <= b.max || b.used == 0 }

// Acquire takes n bytes, waiting for them in turn. It gives up (false) when
// closed is closed, or, if limit is positive, after limit.
func (b *readBudget) Acquire(n int64, limit time.Duration, closed <-chan struct{}) bool {
	b.mu.Lock()
	if len(b.queue) == 0 && b.fits(n) {
		b.used += n
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.queue = append(b.queue, w)
	b.mu.Unlock()
	var timeout <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-w.ready:
		return true
	case <-timeout:
	case <-closed:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.Index(b.queue, w)
	if i < 0 { // granted meanwhile: give it back
		b.used -= n
		b.grant()
		return false
	}
	b.queue = slices.Delete(b.queue, i, i+1)
	b.grant() // those behind it may fit
	return false
}

// Release gives n bytes back.
func (b *readBudget) Release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.grant()
	b.mu.Unlock()
}

// grant serves waiters in order while they fit (under mu).
func (b *readBudget) grant() {
	for len(b.queue) > 0 && b.fits(b.queue[0].n) {
		w := b.queue[0]
		b.queue = b.queue[1:]
		b.used += w.n
		close(w.ready)
	}
}
