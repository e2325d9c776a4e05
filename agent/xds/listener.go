package xds

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"

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
			lc := &limitedConn{Conn: c, l: l, ip: ip}
			if sc, ok := c.(syscall.Conn); ok && rawReads {
				lc.raw, _ = sc.SyscallConn()
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
	l    *limitListener
	ip   netip.Addr
	once sync.Once

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
	})
	return c.Conn.Close()
}
