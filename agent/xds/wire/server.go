// Package wire serves one bidirectional-streaming gRPC method over HTTP/2
// cleartext, and nothing else: the agent's ADS port.
//
// It exists for what a node's clients cost. gRPC-Go's server holds four
// goroutines per connection with a stream (reader, writer, keepalive and the
// handler, whose stack gRPC's own frames keep at 8 KiB) and about 9 KiB of
// transport state: over 30 KiB per idle client before any of the agent's.
// Here a connection is one goroutine blocked on its socket with no buffer
// (one is taken from a pool once bytes arrive), its stream's handler a
// second one with a shallow stack, and a timer; a response is written by the
// goroutine that sends it, in one write, with no writer to wake.
//
// What it speaks is what gRPC clients send: the connection preface and
// SETTINGS, HEADERS with CONTINUATION, DATA, WINDOW_UPDATE, PING,
// RST_STREAM and GOAWAY; requests for any other method are answered
// UNIMPLEMENTED. Flow-control windows are HTTP/2's initial 65,535 bytes
// and never grow, so a client can make a stream hold at most that much
// unread, or one message larger than the window, read only once a shared
// Budget has room for it.
package wire

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Config says what a Server serves and how it bounds its clients.
type Config struct {
	// Method is the one method served ("/package.Service/Method"); Handle
	// serves each of its streams, in a goroutine of its own, and its error
	// (a gRPC status, see status.FromError) ends the stream.
	Method string
	Handle func(*Stream) error
	// Unimplemented is the message a request for another method is
	// answered with (by method), if set; otherwise "unknown method".
	Unimplemented map[string]string
	// MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS: streams a connection
	// may have open, counting those whose handler has not returned; gRPC
	// clients wait for room, others are refused (REFUSED_STREAM).
	MaxStreams int
	// MaxRecvMsg is the largest message accepted: a larger one ends its
	// stream RESOURCE_EXHAUSTED.
	MaxRecvMsg int
	// Budget, if set, bounds the messages larger than the window being
	// read, across connections (see Budget).
	Budget Budget
	// HeldWait is how long a connection reading one large message may wait
	// for budget for another (it cannot finish the first meanwhile); then
	// it is closed and Exceeded told.
	HeldWait time.Duration
	Exceeded func(net.Conn)
	// LargeTimeout bounds how long a message larger than the window may
	// take to arrive once it holds budget: beyond, its stream ends
	// RESOURCE_EXHAUSTED and the budget is given back, so that a client
	// trickling bytes cannot keep it.
	LargeTimeout time.Duration
	// Context returns a stream's parent context for its connection (peer
	// information, say); nil: context.Background.
	Context func(net.Conn) context.Context
	// Keepalive: a connection that has sent nothing for KeepaliveTime is
	// pinged, and closed if nothing comes within KeepaliveTimeout. A client
	// pinging more often than MinPingInterval (while nothing is sent to
	// it) more than twice is sent GOAWAY ENHANCE_YOUR_CALM ("too_many_pings")
	// and closed, as gRPC servers do.
	KeepaliveTime, KeepaliveTimeout, MinPingInterval time.Duration
	// HandshakeTimeout bounds the wait for a client's preface and
	// SETTINGS; WriteTimeout each write to a
	// connection (a write may have from half of it to all of it).
	HandshakeTimeout, WriteTimeout time.Duration
}

// Budget is bytes of large messages being read, shared by connections.
type Budget interface {
	// Acquire takes n bytes, waiting for them; false if it gave up (after
	// limit, if positive, or once closed is closed).
	Acquire(n int64, limit time.Duration, closed <-chan struct{}) bool
	Release(n int64)
}

// Server serves Config's method on the connections of its listeners.
type Server struct {
	cfg      Config
	settings []byte // the server's first frame

	mu       sync.Mutex
	lis      map[net.Listener]struct{}
	conns    map[*conn]struct{}
	stopping bool
	wg       sync.WaitGroup // connections' readers and streams' handlers
}

// ErrServerStopped is Serve's error once Stop or GracefulStop was called.
var ErrServerStopped = errors.New("wire: server stopped")

// New returns a Server; cfg's zero durations take gRPC's server defaults
// where it has one (keepalive 2 h and 20 s, pings every 5 min, handshake
// 120 s), and 30 s for writes, 1 s of HeldWait, 10 s for a large message;
// 100 streams a connection, messages up to 4 MiB.
func New(cfg Config) *Server {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.KeepaliveTime, 2*time.Hour)
	def(&cfg.KeepaliveTimeout, 20*time.Second)
	def(&cfg.MinPingInterval, 5*time.Minute)
	def(&cfg.HandshakeTimeout, 120*time.Second)
	def(&cfg.WriteTimeout, 30*time.Second)
	def(&cfg.HeldWait, time.Second)
	def(&cfg.LargeTimeout, 10*time.Second)
	if cfg.MaxRecvMsg <= 0 {
		cfg.MaxRecvMsg = 4 << 20
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 100
	}
	return &Server{cfg: cfg, settings: serverSettings(cfg.MaxStreams), lis: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
}

// Serve accepts connections on l until it fails or the server stops.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		l.Close()
		return ErrServerStopped
	}
	s.lis[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lis, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				return ErrServerStopped
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() { // EMFILE and the like: back off
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// GracefulStop stops accepting, tells every connection GOAWAY, and waits
// for their streams to end.
func (s *Server) GracefulStop() { s.stop(func(c *conn) { c.goAway() }) }

// Stop stops accepting and closes every connection, ending their streams.
func (s *Server) Stop() { s.stop(func(c *conn) { c.close(nil) }) }

func (s *Server) stop(each func(*conn)) {
	s.mu.Lock()
	s.stopping = true
	for l := range s.lis {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		each(c)
	}
	s.wg.Wait()
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}
