package xds

import (
	"io"
	"net"
	"net/netip"
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

	mu       sync.Mutex // track and isClosed, between the reader and Close
	track    *requestTracker
	isClosed bool

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
	buf, n, err := c.readOnReady(size, pool)
	if err == nil {
		if err = c.admit((*buf)[:n]); err != nil {
			pool.Put(buf)
			return nil, 0, err
		}
	}
	return buf, n, err
}

// Read is for a gRPC that reads through a bufio.Reader of its own.
func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if aerr := c.admit(p[:n]); aerr != nil {
			return 0, aerr
		}
	}
	return n, err
}

// admit follows bytes read before gRPC has them, and takes from the budget
// what the large requests starting in them need, waiting for it (see
// reading.go).
func (c *limitedConn) admit(p []byte) error {
	if c.l.budget == nil {
		return nil
	}
	c.mu.Lock()
	if c.isClosed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	starts, released := c.track.feed(p)
	released += c.track.expire(time.Now())
	c.mu.Unlock()
	c.l.budget.release(released)
	for _, m := range starts {
		if m.done {
			continue
		}
		c.mu.Lock()
		reading := c.track.reading()
		c.mu.Unlock()
		var limit time.Duration
		if reading > 0 {
			limit = heldWait
		}
		ok := c.l.budget.acquire(m.large, limit, c.closed)
		c.mu.Lock()
		if ok && !c.isClosed {
			m.granted = true
			c.mu.Unlock()
			continue
		}
		wasClosed := c.isClosed
		c.mu.Unlock()
		if ok {
			c.l.budget.release(m.large)
		}
		if !wasClosed && c.l.exceeded != nil {
			c.l.exceeded(c.ip)
		}
		c.Close()
		return net.ErrClosed
	}
	return nil
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
