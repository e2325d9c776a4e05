package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// connError ends a connection with GOAWAY and its code (RFC 9113 §5.4.1).
type connError struct {
	code uint32
	msg  string
}

func (e connError) Error() string { return fmt.Sprintf("http2 error %d: %s", e.code, e.msg) }

func protocolError(format string, args ...any) error {
	return connError{errProtocol, fmt.Sprintf(format, args...)}
}

// conn is one client connection. Its reader goroutine (serve) owns the
// fields above mu; the rest is shared with streams' handlers, the keepalive
// timer and Server.
type conn struct {
	srv *Server
	cfg *Config
	nc  net.Conn
	rd  reader
	ctx context.Context
	// closedc is closed with the connection: a reader waiting for budget
	// gives up.
	closedc chan struct{}

	pend     *[]byte // a frame begun but not whole (see readFrames)
	npend    int
	prefaced bool // the client's preface and SETTINGS have come
	dec      *hpack.Decoder
	hb       headerBlock
	recvConn int64  // connection window left to the client
	unacked  uint32 // connection window to give back
	strikes  int    // pings too soon (see ping)
	lastPing time.Time

	lastRead atomic.Int64  // Unix nanoseconds of the latest read
	sentData atomic.Bool   // HEADERS or DATA written since the last ping
	ka       *time.Timer   // under mu
	kaSeen   int64         // lastRead when keepalive last looked (timer only)
	kaPinged bool          // a ping is out (timer only)
	kaLeft   time.Duration // of its KeepaliveTimeout (timer only)

	mu       sync.Mutex
	cond     sync.Cond // sendConn, a stream's sendWin or the connection's state changed
	streams  []*Stream // open: from HEADERS until the handler returned
	lastID   uint32    // the highest stream a client opened (written by the reader)
	held     int64     // budget taken by messages not yet whole (see Budget)
	sendConn int64     // connection window the client grants
	initWin  int64     // stream window the client grants (SETTINGS_INITIAL_WINDOW_SIZE)
	maxOut   int       // the client's SETTINGS_MAX_FRAME_SIZE
	goneAway bool
	closed   bool

	wmu      sync.Mutex // one write at a time
	deadline time.Time  // the writes' (under wmu)
}

// headerBlock is a HEADERS frame's block while its CONTINUATIONs come.
type headerBlock struct {
	active    bool
	stream    uint32
	endStream bool
	size      int // encoded bytes so far
	list      int // decoded size, as SETTINGS_MAX_HEADER_LIST_SIZE counts
	method    string
	path      string
	ctype     string
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv: s, cfg: &s.cfg, nc: nc, rd: newReader(nc), closedc: make(chan struct{}),
		recvConn: window, sendConn: window, initWin: window, maxOut: maxFrame,
	}
	c.cond.L = &c.mu
	c.ctx = context.Background()
	if s.cfg.Context != nil {
		c.ctx = s.cfg.Context(nc)
	}
	return c
}

// serve reads the connection until it ends.
func (c *conn) serve() {
	defer c.srv.forget(c)
	c.lastRead.Store(time.Now().UnixNano())
	c.nc.SetReadDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	err := c.write(c.srv.settings)
	for err == nil {
		err = c.readFrames()
	}
	c.close(err) // its streams' resets give back their budget
	if c.pend != nil {
		putReadBuf(c.pend)
		c.pend = nil
	}
}

func (c *conn) release(n int64) {
	if n > 0 && c.cfg.Budget != nil {
		c.cfg.Budget.Release(n)
	}
}

// readFrames reads once and handles every whole frame read. The part of a
// frame that is not yet whole stays in a buffer of the connection's own;
// otherwise the buffer goes back to the pool at once.
func (c *conn) readFrames() error {
	buf, n, err := c.rd.read(c.pend, c.npend)
	if err != nil {
		return err
	}
	c.pend, c.npend = nil, 0
	c.lastRead.Store(time.Now().UnixNano())
	b := (*buf)[:n]
	off := 0
	if !c.prefaced {
		if n < len(preface)+headerLen {
			c.pend, c.npend = buf, n
			return nil
		}
		if string(b[:len(preface)]) != preface {
			putReadBuf(buf)
			return errors.New("not an HTTP/2 client preface")
		}
		if h := parseHeader(b[len(preface):]); h.typ != frameSettings || h.flags&flagAck != 0 {
			putReadBuf(buf)
			return protocolError("the preface is not followed by SETTINGS")
		}
		off = len(preface)
	}
	for n-off >= headerLen {
		h := parseHeader(b[off:])
		if h.length > maxFrame {
			putReadBuf(buf)
			return connError{errFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"}
		}
		end := off + headerLen + int(h.length)
		if end > n {
			break
		}
		if err := c.frame(h, b[off+headerLen:end]); err != nil {
			putReadBuf(buf)
			return err
		}
		off = end
	}
	if off == n {
		putReadBuf(buf)
		return nil
	}
	if !c.prefaced { // SETTINGS not yet whole: the preface is read again with it
		c.pend, c.npend = buf, n
		return nil
	}
	c.npend = copy(b, b[off:])
	c.pend = buf
	return nil
}

func (c *conn) frame(h frameHeader, p []byte) error {
	if c.hb.active && h.typ != frameContinuation {
		return protocolError("frame type %d inside a header block", h.typ)
	}
	switch h.typ {
	case frameData:
		return c.data(h, p)
	case frameHeaders:
		return c.headers(h, p)
	case frameContinuation:
		if !c.hb.active || h.stream != c.hb.stream {
			return protocolError("CONTINUATION without HEADERS")
		}
		return c.fragment(h, p)
	case frameRSTStream:
		if len(p) != 4 {
			return connError{errFrameSize, "RST_STREAM of a wrong size"}
		}
		if h.stream == 0 || h.stream > c.lastID {
			return protocolError("RST_STREAM of an idle stream")
		}
		if st := c.find(h.stream); st != nil {
			st.reset(errCanceledByClient)
		}
	case frameSettings:
		return c.settings(h, p)
	case framePing:
		return c.ping(h, p)
	case frameWindowUpdate:
		return c.windowUpdate(h, p)
	case framePushPromise:
		return protocolError("PUSH_PROMISE from a client")
	}
	return nil // PRIORITY, GOAWAY (the client closes), unknown types
}

func (c *conn) find(id uint32) *Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.streams {
		if st.id == id {
			return st
		}
	}
	return nil
}

func (c *conn) settings(h frameHeader, p []byte) error {
	if h.stream != 0 {
		return protocolError("SETTINGS on a stream")
	}
	if h.flags&flagAck != 0 {
		if len(p) != 0 {
			return connError{errFrameSize, "SETTINGS ACK with a payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return connError{errFrameSize, "SETTINGS of a wrong size"}
	}
	c.mu.Lock()
	for ; len(p) > 0; p = p[6:] {
		id, v := binary.BigEndian.Uint16(p), int64(binary.BigEndian.Uint32(p[2:]))
		switch id {
		case settingInitialWindowSize:
			if v > 1<<31-1 {
				c.mu.Unlock()
				return connError{errFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"}
			}
			for _, st := range c.streams {
				if st.sendWin += v - c.initWin; st.sendWin > 1<<31-1 {
					c.mu.Unlock()
					return connError{errFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE takes a window above 2^31-1"}
				}
			}
			c.initWin = v
		case settingMaxFrameSize:
			if v < maxFrame || v > 1<<24-1 {
				c.mu.Unlock()
				return protocolError("SETTINGS_MAX_FRAME_SIZE out of range")
			}
			c.maxOut = int(v)
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if !c.prefaced {
		c.prefaced = true
		c.nc.SetReadDeadline(time.Time{})
		c.dec = hpack.NewDecoder(4096, c.field)
		c.dec.SetMaxStringLength(maxHeaderList)
		c.startKeepalive()
	}
	return c.write(appendHeader(nil, 0, frameSettings, flagAck, 0))
}

func (c *conn) windowUpdate(h frameHeader, p []byte) error {
	if len(p) != 4 {
		return connError{errFrameSize, "WINDOW_UPDATE of a wrong size"}
	}
	inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
	if h.stream == 0 {
		if inc == 0 {
			return protocolError("WINDOW_UPDATE of 0")
		}
		c.mu.Lock()
		c.sendConn += inc
		over := c.sendConn > 1<<31-1
		c.cond.Broadcast()
		c.mu.Unlock()
		if over {
			return connError{errFlowControl, "connection window above 2^31-1"}
		}
		return nil
	}
	if h.stream > c.lastID {
		return protocolError("WINDOW_UPDATE of an idle stream")
	}
	st := c.find(h.stream)
	if st == nil {
		return nil // closed: a late update
	}
	c.mu.Lock()
	st.sendWin += inc
	bad := inc == 0 || st.sendWin > 1<<31-1
	c.cond.Broadcast()
	c.mu.Unlock()
	if bad {
		st.reset(errFlowControlled)
		return c.write(appendRST(nil, st.id, errFlowControl))
	}
	return nil
}

// write writes b whole, or closes the connection.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	// A deadline moved on only once half of it has gone: setting it costs
	// a timer update, on every response of a fan-out.
	if now := time.Now(); c.deadline.Sub(now) < c.cfg.WriteTimeout/2 {
		c.deadline = now.Add(c.cfg.WriteTimeout)
		c.nc.SetWriteDeadline(c.deadline)
	}
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
	}
	return err
}

// close ends the connection and its streams; a connError is told to the
// client first (GOAWAY).
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	streams := slices.Clone(c.streams) // finish removes from c.streams in place
	last := c.lastID
	c.cond.Broadcast()
	c.mu.Unlock()
	// GOAWAY, unless a write is under way (it may wait for a client that
	// does not read): the close must not wait for it.
	var ce connError
	if errors.As(err, &ce) && c.wmu.TryLock() {
		c.deadline = time.Now().Add(time.Second)
		c.nc.SetWriteDeadline(c.deadline)
		c.nc.Write(appendGoAway(nil, last, ce.code, ce.msg))
		c.wmu.Unlock()
	}
	c.nc.Close()
	close(c.closedc)
	c.mu.Lock()
	ka := c.ka
	c.mu.Unlock()
	if ka != nil {
		ka.Stop()
	}
	for _, st := range streams {
		st.reset(errConnClosed)
	}
}

// goAway tells the client to open no more streams here, and closes the
// connection once those it has end.
func (c *conn) goAway() {
	c.mu.Lock()
	if c.closed || c.goneAway {
		c.mu.Unlock()
		return
	}
	c.goneAway = true
	last, idle := c.lastID, len(c.streams) == 0
	c.mu.Unlock()
	if c.write(appendGoAway(nil, last, errNo, "")) == nil && idle {
		c.close(nil)
	}
}
