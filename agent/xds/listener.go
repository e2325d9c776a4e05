package xds

import (
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/mem"
)

// LimitListener wraps l so that at most perPeer connections from one IP, and
// total in all, are open at once: a connection beyond either is closed as
// soon as it is accepted, and refused is told (it must not block). Idle
// connections cost the server buffers even without a stream, so streams
// limits alone do not bound them.
func LimitListener(l net.Listener, perPeer, total int, refused func(peer netip.Addr, limit string)) net.Listener {
	return &limitListener{Listener: l, perPeer: perPeer, total: total, refused: refused, open: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	perPeer, total int
	refused        func(netip.Addr, string)
	// budget, if set, bounds the large requests being read (see reading.go);
	// exceeded is told of a connection closed for holding it while asking
	// for more.
	budget   *readBudget
	exceeded func(netip.Addr)

	mu   sync.Mutex
	open map[netip.Addr]int
	n    int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerAddr(c.RemoteAddr())
		l.mu.Lock()
		limit := ""
		switch {
		case l.n >= l.total:
			limit = "conns"
		case l.open[ip] >= l.perPeer:
			limit = "conns_per_peer"
		default:
			l.open[ip]++
			l.n++
		}
		l.mu.Unlock()
		if limit == "" {
			lc := &limitedConn{Conn: c, l: l, ip: ip, closed: make(chan struct{})}
			if sc, ok := c.(syscall.Conn); ok && rawReads {
				lc.raw, _ = sc.SyscallConn()
			}
			if l.budget != nil {
				lc.track = newRequestTracker()
			}
			return lc, nil
		}
		c.Close()
		if l.refused != nil {
			l.refused(ip, limit)
		}
	}
}

type limitedConn struct {
	net.Conn
	l      *limitListener
	ip     netip.Addr
	once   sync.Once
	closed chan struct{}

	mu       sync.Mutex // track, gate and isClosed, between the reader and Close
	track    *requestTracker
	gate     *grpcMessage // a large request to take budget for before reading on
	isClosed bool
	pend     []byte // bytes read but not yet handed to gRPC (read by the reader only)

	raw syscall.RawConn // nil: reads block in Conn.Read
	// The read in progress (gRPC's one reader at a time), kept here so
	// that a read allocates nothing.
	rd struct {
		size int
		pool mem.BufferPool
		buf  *[]byte
		n    int
		err  error
	}
	readFn func(fd uintptr) bool
}

// ReadOnReady makes a limitedConn what gRPC's transport calls a ready
// reader: it takes a read buffer from pool only once data has arrived. An
// idle connection then holds no read buffer, where gRPC gives any other
// wrapped conn a bufio.Reader of its own for life (8 KiB each, at
// grpc.ReadBufferSize): the largest share of an idle client's cost.
func (c *limitedConn) ReadOnReady(size int, pool mem.BufferPool) (*[]byte, int, error) {
	if c.l.budget == nil {
		return c.readOnReady(size, pool)
	}
	if err := c.waitGate(); err != nil {
		return nil, 0, err
	}
	var buf *[]byte
	var n int
	if len(c.pend) > 0 {
		buf = pool.Get(size)
		n = copy(*buf, c.pend)
	} else {
		var err error
		if buf, n, err = c.readOnReady(size, pool); err != nil {
			return nil, 0, err
		}
	}
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		pool.Put(buf)
		return nil, 0, net.ErrClosed
	}
	k, gate, released := c.track.feed((*buf)[:n])
	released += c.track.expire(time.Now())
	c.gate = gate
	c.mu.Unlock()
	c.l.budget.release(released)
	switch {
	case len(c.pend) > 0:
		c.pend = c.pend[k:]
	case k < n:
		c.pend = slices.Clone((*buf)[k:n])
	}
	if len(c.pend) == 0 {
		c.pend = nil
	}
	return buf, k, nil
}

// Read is for a gRPC that reads through a bufio.Reader of its own.
func (c *limitedConn) Read(p []byte) (int, error) {
	if c.l.budget == nil {
		return c.Conn.Read(p)
	}
	_, n, err := c.ReadOnReady(len(p), &intoPool{p})
	return n, err
}

// intoPool hands out one buffer: a Read's.
type intoPool struct{ b []byte }

func (p *intoPool) Get(int) *[]byte { return &p.b }
func (p *intoPool) Put(*[]byte)     {}

// waitGate takes from the budget what the large request at the gate needs
// (see reading.go), waiting for it; a connection in the middle of another
// large request waits heldWait at most, then is closed.
func (c *limitedConn) waitGate() error {
	c.mu.Lock()
	gate, closed, reading := c.gate, c.isClosed, c.track.reading()
	c.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	if gate == nil {
		return nil
	}
	var limit time.Duration
	if reading > 0 {
		limit = heldWait
	}
	ok := c.l.budget.acquire(gate.large, limit, c.closed)
	c.mu.Lock()
	if ok && !c.isClosed {
		gate.granted, c.gate = true, nil
		c.mu.Unlock()
		return nil
	}
	wasClosed := c.isClosed
	c.mu.Unlock()
	if ok {
		c.l.budget.release(gate.large)
	}
	if !wasClosed && c.l.exceeded != nil {
		c.l.exceeded(c.ip)
	}
	c.Close()
	return net.ErrClosed
}

// consumed tells the connection that a handler has read a large request of
// n bytes: its budget is given back.
func (c *limitedConn) consumed(n int64) {
	if c.l.budget == nil {
		return
	}
	c.mu.Lock()
	var released int64
	if !c.isClosed {
		released = c.track.consumed(n) + c.track.expire(time.Now())
	}
	c.mu.Unlock()
	c.l.budget.release(released)
}

func (c *limitedConn) readOnReady(size int, pool mem.BufferPool) (*[]byte, int, error) {
	if c.raw == nil {
		buf := pool.Get(size)
		n, err := c.Conn.Read(*buf)
		if n == 0 {
			pool.Put(buf)
			if err == nil {
				err = io.EOF
			}
			return nil, 0, err
		}
		return buf, n, nil // an error comes again with the next read
	}
	if c.readFn == nil {
		c.readFn = c.readReady
	}
	c.rd.size, c.rd.pool = size, pool
	err := c.raw.Read(c.readFn)
	buf, n, rerr := c.rd.buf, c.rd.n, c.rd.err
	c.rd.buf, c.rd.pool, c.rd.err = nil, nil, nil
	switch {
	case err != nil: // deadline, or closed
		if buf != nil {
			pool.Put(buf)
		}
		return nil, 0, err
	case rerr != nil:
		return nil, 0, rerr
	case n == 0:
		pool.Put(buf)
		return nil, 0, io.EOF
	}
	return buf, n, nil
}

// readReady is RawConn.Read's callback: one read into a pooled buffer;
// false asks to be called again once the socket is readable.
func (c *limitedConn) readReady(fd uintptr) bool {
	c.rd.buf = c.rd.pool.Get(c.rd.size)
	c.rd.n, c.rd.err = rawRead(fd, *c.rd.buf)
	if c.rd.err != nil {
		c.rd.pool.Put(c.rd.buf)
		c.rd.buf, c.rd.n = nil, 0
	}
	return !wouldBlock(c.rd.err)
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.open[c.ip]--; c.l.open[c.ip] <= 0 {
			delete(c.l.open, c.ip)
		}
		c.l.n--
		c.l.mu.Unlock()
		c.mu.Lock()
		c.isClosed = true
		var held int64
		if c.track != nil {
			held = c.track.held()
			c.track = &requestTracker{} // nothing more to give back
		}
		c.mu.Unlock()
		if held > 0 {
			c.l.budget.release(held)
		}
		close(c.closed)
	})
	return c.Conn.Close()
}
