package xds

import (
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// gRPC reads a request whole before the server sees it: once a stream's
// reader has the 5-byte message prefix, gRPC opens the stream's flow-control
// window to the message's length, and holds every byte until the last. What
// is in flight is then one request per stream, up to the largest accepted —
// streams × MaxRecvMsgSize, gigabytes at the default stream limits. gRPC has
// no hook between the prefix and the body, so the budget is kept where the
// bytes enter: each connection follows the HTTP/2 frames its client sends,
// far enough to see where a gRPC message starts and how long it is, and a
// large one may start only when the shared budget has room for it. Until
// then the connection is not read, and TCP holds the client back.
//
// A large request counts from its prefix until its handler has read it
// (gRPC holds it whole until then): requestCodec notes the size of each
// large request it decodes (readSizes), and the stream tells its connection
// (limitedConn.consumed).
//
// Requests no larger than the stream window (64 KiB) are never held: they
// fit in what flow control already bounds, and they are what well-behaved
// clients send (ACKs, subscriptions to a few hundred names).

// largeRequest is the size beyond which a request is counted against the
// reading budget: the static stream window (GRPCOptions).
const largeRequest = 64 << 10

// unreadWait is how long a whole large request may wait for its handler
// before its budget is given back anyway: a stream that ends without reading
// what arrived (its handler returned) must not keep it forever.
const unreadWait = 5 * time.Second

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

// acquire takes n bytes, waiting for them in turn. It gives up (false) when
// closed is closed, or, if limit is positive, after limit.
func (b *readBudget) acquire(n int64, limit time.Duration, closed <-chan struct{}) bool {
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

func (b *readBudget) release(n int64) {
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

// HTTP/2 as a client sends it: the frames the tracker needs.
const (
	h2Preface       = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2Data          = 0x0
	h2RSTStream     = 0x3
	h2FlagEndStream = 0x1
	h2FlagPadded    = 0x8
)

// requestTracker follows the bytes a client sends on one connection: HTTP/2
// frames, and in each stream's DATA the gRPC messages (a 5-byte prefix:
// compressed flag and big-endian length, then the message). It needs no
// HPACK and keeps state only for streams in the middle of a message.
type requestTracker struct {
	preface int // preface bytes still to pass
	hdr     [9]byte
	hn      int // header bytes collected
	left    int // payload bytes of the current frame still to come
	typ     byte
	flags   byte
	stream  uint32
	padNext bool // the next payload byte is a DATA frame's pad length
	pad     int  // padding at the end of the current DATA frame
	msgs    map[uint32]*grpcMessage
	// whole are granted large requests that arrived whole and wait for
	// their handler to read them (see consumed), oldest first.
	whole []wholeRequest
}

type wholeRequest struct {
	n  int64
	at time.Time
}

// grpcMessage is the message a stream is in the middle of.
type grpcMessage struct {
	prefix  [5]byte
	pn      int   // prefix bytes collected
	left    int   // body bytes still to come, once the prefix is whole
	large   int64 // its length, if it is a large request
	granted bool  // large is taken from the budget (by the connection)
	done    bool  // it has ended (whole, or its stream did)
}

func newRequestTracker() *requestTracker {
	return &requestTracker{preface: len(h2Preface)}
}

// feed follows p, the next bytes of the connection, up to the end of the
// first prefix of a large request in it: it returns how many bytes it
// followed (all of p if no large request starts in it), that request (nil
// if none: it must be granted before feeding what follows it), and the
// budget that granted requests abandoned in p give back. The bytes before
// the gate are handed to gRPC before waiting for the budget, so that a
// request they finish can be read (and give its budget back) meanwhile.
func (t *requestTracker) feed(p []byte) (k int, gate *grpcMessage, released int64) {
	n := len(p)
	for len(p) > 0 && gate == nil {
		if t.preface > 0 {
			k := min(t.preface, len(p))
			t.preface -= k
			p = p[k:]
			continue
		}
		if t.left == 0 && t.hn < 9 {
			k := copy(t.hdr[t.hn:], p)
			t.hn += k
			p = p[k:]
			if t.hn < 9 {
				continue
			}
			t.left = int(t.hdr[0])<<16 | int(t.hdr[1])<<8 | int(t.hdr[2])
			t.typ, t.flags = t.hdr[3], t.hdr[4]
			t.stream = binary.BigEndian.Uint32(t.hdr[5:]) & 0x7fffffff
			t.padNext, t.pad = t.typ == h2Data && t.flags&h2FlagPadded != 0, 0
			if t.typ == h2RSTStream {
				released += t.end(t.stream)
			}
			if t.left == 0 {
				released += t.frameDone()
			}
			continue
		}
		switch {
		case t.typ != h2Data:
			k := min(t.left, len(p))
			t.left -= k
			p = p[k:]
		case t.padNext:
			t.pad = int(p[0])
			t.padNext = false
			t.left--
			p = p[1:]
		case t.left > t.pad: // data
			var k int
			k, gate = t.data(t.stream, p[:min(t.left-t.pad, len(p))])
			t.left -= k
			p = p[k:]
		default: // padding
			k := min(t.left, len(p))
			t.left -= k
			p = p[k:]
		}
		if t.left == 0 {
			released += t.frameDone()
		}
	}
	return n - len(p), gate, released
}

// frameDone ends the current frame: END_STREAM on DATA ends the stream's
// message (a message cut short is abandoned; gRPC fails the stream).
func (t *requestTracker) frameDone() int64 {
	t.hn = 0
	if t.typ == h2Data && t.flags&h2FlagEndStream != 0 {
		return t.end(t.stream)
	}
	return 0
}

// end forgets a stream's message, giving back its budget.
func (t *requestTracker) end(stream uint32) int64 {
	m := t.msgs[stream]
	if m == nil {
		return 0
	}
	delete(t.msgs, stream)
	return m.finish()
}

// finish marks a message ended; it returns the budget it gives back.
func (m *grpcMessage) finish() int64 {
	m.done = true
	if m.granted {
		return m.large
	}
	return 0
}

// data follows one stream's DATA bytes through its gRPC messages, up to the
// end of a large request's prefix (returned: the gate). It returns how many
// bytes it followed.
func (t *requestTracker) data(stream uint32, d []byte) (int, *grpcMessage) {
	n := len(d)
	m := t.msgs[stream]
	for len(d) > 0 {
		if m == nil {
			m = &grpcMessage{}
			if t.msgs == nil {
				t.msgs = map[uint32]*grpcMessage{}
			}
			t.msgs[stream] = m
		}
		if m.pn < 5 {
			k := copy(m.prefix[m.pn:], d)
			m.pn += k
			d = d[k:]
			if m.pn < 5 {
				break
			}
			m.left = int(binary.BigEndian.Uint32(m.prefix[1:]))
			if m.left > largeRequest {
				m.large = int64(m.left)
				return n - len(d), m
			}
		}
		k := min(m.left, len(d))
		m.left -= k
		d = d[k:]
		if m.left == 0 { // whole: it waits for the stream's handler
			m.done = true
			if m.granted {
				t.whole = append(t.whole, wholeRequest{m.large, time.Now()})
			}
			delete(t.msgs, stream)
			m = nil
		}
	}
	return n - len(d), nil
}

// consumed gives back the budget of a whole request of n bytes that a
// handler has read (any one of that size: which stream's does not matter).
func (t *requestTracker) consumed(n int64) int64 {
	if i := slices.IndexFunc(t.whole, func(w wholeRequest) bool { return w.n == n }); i >= 0 {
		t.whole = slices.Delete(t.whole, i, i+1)
		return n
	}
	return 0
}

// expire gives back the budget of whole requests unread for unreadWait.
func (t *requestTracker) expire(now time.Time) int64 {
	var n int64
	for len(t.whole) > 0 && now.Sub(t.whole[0].at) > unreadWait {
		n += t.whole[0].n
		t.whole = t.whole[1:]
	}
	return n
}

// reading is the budget the connection's unfinished requests hold.
func (t *requestTracker) reading() int64 {
	var n int64
	for _, m := range t.msgs {
		if m.granted {
			n += m.large
		}
	}
	return n
}

// held is the budget the connection's requests hold, unfinished or unread.
func (t *requestTracker) held() int64 {
	n := t.reading()
	for _, w := range t.whole {
		n += w.n
	}
	return n
}

// readSizes holds, for each large request requestCodec has decoded and its
// handler not yet taken, its size on the wire (see takeReadSize).
var readSizes sync.Map // *discoveryv3.DiscoveryRequest → int64

// takeReadSize returns the wire size of req if it was a large request.
func takeReadSize(req any) (int64, bool) {
	n, ok := readSizes.LoadAndDelete(req)
	if !ok {
		return 0, false
	}
	return n.(int64), true
}
