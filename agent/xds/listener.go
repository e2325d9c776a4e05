package xds

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
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
			return &limitedConn{Conn: c, l: l, ip: ip}, nil
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
}

// SyscallConn is the socket's, so that package wire can wait for it to be
// readable before taking a read buffer.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
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
