package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/internal/poll"
)

const echoMethod = "/test.Echo/Chat"

// echo answers each message with itself, and ends with the status a
// message "status:N" asks for.
func echo(st *Stream) error {
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if code, ok := bytes.CutPrefix(m, []byte("status:")); ok {
			n, _ := strconv.Atoi(string(code))
			return status.Error(codes.Code(n), "asked for 100% of it")
		}
		if err := st.Send(m); err != nil {
			return err
		}
	}
}

func serve(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Method == "" {
		cfg.Method = echoMethod
	}
	if cfg.Handle == nil {
		cfg.Handle = echo
	}
	s := New(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return s, l.Addr().String()
}

// rawCodec passes bytes through, so that a grpc-go client can call the echo.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)   { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = bytes.Clone(b); return nil }
func (rawCodec) Name() string                    { return "raw" }

var _ encoding.Codec = rawCodec{}

func grpcChat(t testing.TB, addr string) grpc.ClientStream {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cs, err := cc.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, echoMethod)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// A grpc-go client is served: messages of every size around the frame and
// window sizes come back whole, and the stream ends with the handler's
// status, its message percent-decoded.
func TestAGRPCClientIsServed(t *testing.T) {
	_, addr := serve(t, Config{MaxRecvMsg: 1 << 20})
	cs := grpcChat(t, addr)
	for _, n := range []int{0, 1, 100, maxFrame - 5, maxFrame, window - 5, window, 200 << 10, 1 << 20} {
		m := bytes.Repeat([]byte{byte(n)}, n)
		if err := cs.SendMsg(&m); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
		var got []byte
		if err := cs.RecvMsg(&got); err != nil {
			t.Fatalf("receive %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("sent %d bytes, got %d back, not the same", n, len(got))
		}
	}
	m := []byte("status:9")
	cs.SendMsg(&m)
	var got []byte
	err := cs.RecvMsg(&got)
	if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "asked for 100% of it" {
		t.Errorf("stream ended with %v, want FailedPrecondition: asked for 100%% of it", err)
	}
}

// A message larger than MaxRecvMsg ends its stream RESOURCE_EXHAUSTED; the
// connection serves other streams.
func TestAMessageOverTheLimitEndsItsStream(t *testing.T) {
	_, addr := serve(t, Config{MaxRecvMsg: 100 << 10})
	cs := grpcChat(t, addr)
	m := make([]byte, 100<<10+1)
	cs.SendMsg(&m)
	var got []byte
	if err := cs.RecvMsg(&got); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("got %v, want ResourceExhausted", err)
	}
	cs = grpcChat(t, addr)
	m = []byte("fine")
	cs.SendMsg(&m)
	if err := cs.RecvMsg(&got); err != nil || string(got) != "fine" {
		t.Errorf("the next stream got %q, %v", got, err)
	}
}

// h2 is a client speaking frames, for what grpc-go would never send.
type h2 struct {
	t      testing.TB
	conn   net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	frames chan *frame
	dec    *hpack.Decoder
}

func dialH2(t testing.TB, addr string, settings ...http2.Setting) *h2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2{t: t, conn: c, fr: http2.NewFramer(c, c), frames: make(chan *frame, 1000)}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings(settings...)
	go func() {
		defer close(h.frames)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				return
			}
			h.frames <- copyFrame(f)
		}
	}()
	return h
}

// frame is what the tests read of a frame (the framer reuses its buffers).
type frame struct {
	http2.FrameHeader
	data  []byte // DATA's, PING's
	code  http2.ErrCode
	debug string
	last  uint32 // GOAWAY's last stream
	meta  *http2.MetaHeadersFrame
}

func copyFrame(f http2.Frame) *frame {
	out := &frame{FrameHeader: f.Header()}
	switch f := f.(type) {
	case *http2.DataFrame:
		out.data = bytes.Clone(f.Data())
	case *http2.PingFrame:
		out.data = bytes.Clone(f.Data[:])
	case *http2.GoAwayFrame:
		out.code, out.debug, out.last = f.ErrCode, string(f.DebugData()), f.LastStreamID
	case *http2.RSTStreamFrame:
		out.code = f.ErrCode
	case *http2.MetaHeadersFrame:
		out.meta = f
	}
	return out
}

func (h *h2) headers(stream uint32, path string, end bool) {
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: h.hbuf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		h.t.Fatal(err)
	}
}

func grpcMessage(m []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(m))), m...)
}

// next returns the next frame of one of the types, skipping others
// (SETTINGS, WINDOW_UPDATE...), or nil if the connection closed.
func (h *h2) next(types ...http2.FrameType) *frame {
	h.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case f, ok := <-h.frames:
			if !ok {
				return nil
			}
			if len(types) == 0 {
				return f
			}
			for _, typ := range types {
				if f.Type == typ {
					return f
				}
			}
		case <-timeout:
			h.t.Fatalf("no frame of %v in 30s", types)
		}
	}
}

// trailers returns the status a stream's trailers carry.
func (h *h2) trailers(stream uint32) (code, msg string) {
	h.t.Helper()
	for {
		f := h.next(http2.FrameHeaders)
		if f == nil {
			h.t.Fatal("connection closed before trailers")
		}
		if f.meta == nil || f.StreamID != stream || !f.meta.StreamEnded() {
			continue
		}
		return f.meta.PseudoValue("status"), headerValue(f.meta, "grpc-status") + " " + headerValue(f.meta, "grpc-message")
	}
}

func headerValue(mh *http2.MetaHeadersFrame, name string) string {
	for _, f := range mh.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func (h *h2) goAway() *frame {
	h.t.Helper()
	f := h.next(http2.FrameGoAway)
	if f == nil {
		h.t.Fatal("connection closed without GOAWAY")
	}
	return f
}

// Requests the server does not serve are answered at once, each with its
// status, on a connection that goes on.
func TestOtherRequestsAreAnsweredWithAStatus(t *testing.T) {
	_, addr := serve(t, Config{Unimplemented: map[string]string{"/test.Echo/Delta": "no delta here"}})
	h := dialH2(t, addr)
	for i, c := range []struct{ path, status, msg string }{
		{"/test.Echo/Delta", "12", "no delta here"},
		{"/nope", "12", "unknown method /nope"},
	} {
		id := uint32(2*i + 1)
		h.headers(id, c.path, false)
		if _, got := h.trailers(id); got != c.status+" "+c.msg {
			t.Errorf("%s: trailers say %q, want %q", c.path, got, c.status+" "+c.msg)
		}
	}
	h.headers(5, echoMethod, false)
	h.fr.WriteData(5, true, grpcMessage([]byte("hi")))
	if f := h.next(http2.FrameData); f == nil || !bytes.Equal(f.data, grpcMessage([]byte("hi"))) {
		t.Errorf("the echo after them got %v", f)
	}
	if _, got := h.trailers(5); got != "0 " {
		t.Errorf("the echo ended with %q, want status 0", got)
	}
}

// What breaks HTTP/2's rules ends the connection with GOAWAY and the code
// the RFC gives.
func TestProtocolErrorsEndTheConnection(t *testing.T) {
	_, addr := serve(t, Config{})
	for name, c := range map[string]struct {
		send func(h *h2)
		code http2.ErrCode
	}{
		"DATA on an idle stream": {func(h *h2) { h.fr.WriteData(7, false, []byte("x")) }, http2.ErrCodeProtocol},
		"a frame over the maximum size": {func(h *h2) {
			h.conn.Write([]byte{0, 0x40, 1, 0, 0, 0, 0, 0, 1})
		}, http2.ErrCodeFrameSize},
		"PUSH_PROMISE": {func(h *h2) {
			h.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		"HEADERS on an even stream": {func(h *h2) { h.headers(2, echoMethod, false) }, http2.ErrCodeProtocol},
		"a header block of 100 KiB": {func(h *h2) {
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}})
			for i := 0; i < 7; i++ {
				h.fr.WriteContinuation(1, false, make([]byte, maxFrame))
			}
		}, http2.ErrCodeEnhanceYourCalm},
		"garbage HPACK": {func(h *h2) {
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression},
	} {
		t.Run(name, func(t *testing.T) {
			h := dialH2(t, addr)
			c.send(h)
			if g := h.goAway(); g.code != c.code {
				t.Errorf("GOAWAY %v (%s), want %v", g.code, g.debug, c.code)
			}
			if f := h.next(); f != nil {
				t.Errorf("the connection goes on after GOAWAY: %v", f.FrameHeader)
			}
		})
	}
}

// A stream whose client sends beyond its window is reset
// FLOW_CONTROL_ERROR; its handler sees the stream end.
func TestDataBeyondTheStreamWindowResetsTheStream(t *testing.T) {
	ended := make(chan error, 1)
	_, addr := serve(t, Config{Handle: func(st *Stream) error {
		<-st.Context().Done()
		_, err := st.Recv()
		ended <- err
		return err
	}})
	h := dialH2(t, addr)
	h.headers(1, echoMethod, false)
	m := grpcMessage(make([]byte, window-5)) // the whole window, unread
	for len(m) > 0 {
		k := min(len(m), maxFrame)
		h.fr.WriteData(1, false, m[:k])
		m = m[k:]
	}
	h.fr.WriteData(1, false, []byte{0})
	f := h.next(http2.FrameRSTStream)
	if f == nil || f.StreamID != 1 || f.code != http2.ErrCodeFlowControl {
		t.Fatalf("got %v, want RST_STREAM FLOW_CONTROL_ERROR on stream 1", f)
	}
	if err := <-ended; status.Code(err) != codes.Internal {
		t.Errorf("the handler's Recv returned %v, want Internal", err)
	}
}

// A client pinging more than twice within MinPingInterval, while nothing is
// sent to it, is told too_many_pings and closed, as gRPC servers do; pings
// are answered until then.
func TestTooManyPingsEndTheConnection(t *testing.T) {
	_, addr := serve(t, Config{MinPingInterval: time.Hour})
	h := dialH2(t, addr)
	for i := range 3 {
		h.fr.WritePing(false, [8]byte{byte(i)})
		if f := h.next(http2.FramePing); f == nil || f.Flags&http2.FlagPingAck == 0 || f.data[0] != byte(i) {
			t.Fatalf("ping %d: got %v", i, f)
		}
	}
	h.fr.WritePing(false, [8]byte{3})
	if g := h.goAway(); g.code != http2.ErrCodeEnhanceYourCalm || g.debug != "too_many_pings" {
		t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", g.code, g.debug)
	}
}

// A connection that answers nothing is pinged once idle for KeepaliveTime,
// and closed KeepaliveTimeout later.
func TestASilentConnectionIsClosed(t *testing.T) {
	_, addr := serve(t, Config{KeepaliveTime: 50 * time.Millisecond, KeepaliveTimeout: 50 * time.Millisecond})
	h := dialH2(t, addr)
	if f := h.next(http2.FramePing); f == nil {
		t.Fatal("closed without a ping")
	}
	if f := h.next(); f != nil {
		t.Errorf("got %v, want the connection closed", f.FrameHeader)
	}
}

// A response waits for the client's windows, and is cut in frames that
// fit them.
func TestSendKeepsToTheClientsWindow(t *testing.T) {
	_, addr := serve(t, Config{})
	h := dialH2(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	h.headers(1, echoMethod, false)
	msg := bytes.Repeat([]byte("abcdefgh"), 4) // 37 bytes on the wire
	h.fr.WriteData(1, false, grpcMessage(msg))
	var got []byte
	for len(got) < len(msg)+5 {
		f := h.next(http2.FrameData)
		if f == nil {
			t.Fatal("closed")
		}
		if len(f.data) > 10 {
			t.Fatalf("a DATA frame of %d bytes, beyond the window of 10", len(f.data))
		}
		got = append(got, f.data...)
		h.fr.WriteWindowUpdate(1, uint32(len(f.data)))
	}
	if !bytes.Equal(got, grpcMessage(msg)) {
		t.Errorf("got %q", got)
	}
}

// countingBudget is a Budget that tells what it holds.
type countingBudget struct {
	mu        sync.Mutex
	max, used int64
	changed   chan struct{}
}

func (b *countingBudget) Acquire(n int64, limit time.Duration, closed <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return true
		}
		ch := b.changed
		b.mu.Unlock()
		var timeout <-chan time.Time
		if limit > 0 {
			timeout = time.After(limit)
		}
		select {
		case <-ch:
		case <-closed:
			return false
		case <-timeout:
			return false
		}
	}
}

func (b *countingBudget) Release(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *countingBudget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Messages larger than the window are read under the budget: a second one
// waits, unread, until the first was received; every byte is given back
// when the streams end.
func TestLargeMessagesWaitForTheBudget(t *testing.T) {
	b := &countingBudget{max: 150 << 10, changed: make(chan struct{})}
	release := make(chan struct{})
	var got atomic.Int64
	_, addr := serve(t, Config{Budget: b, MaxRecvMsg: 1 << 20, Handle: func(st *Stream) error {
		<-release // not received until told
		m, err := st.Recv()
		got.Add(int64(len(m)))
		return err
	}})
	a, c := grpcChat(t, addr), grpcChat(t, addr)
	m := make([]byte, 100<<10)
	go a.SendMsg(&m)
	go c.SendMsg(&m)
	poll.Until(t, "one message's budget is taken", func() bool { return b.held() == 100<<10 })
	close(release)
	poll.Until(t, "both messages are received", func() bool { return got.Load() == 200<<10 })
	poll.Until(t, "the budget is given back", func() bool { return b.held() == 0 })
}

// A stream the client resets ends for its handler: its context is done
// and Recv says Canceled; the connection serves on.
func TestAResetStreamEndsItsHandler(t *testing.T) {
	ended := make(chan error, 1)
	_, addr := serve(t, Config{Handle: func(st *Stream) error {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		st.Send(m)
		<-st.Context().Done()
		_, err = st.Recv()
		ended <- err
		return err
	}})
	h := dialH2(t, addr)
	h.headers(1, echoMethod, false)
	h.fr.WriteData(1, false, grpcMessage([]byte("x")))
	h.next(http2.FrameData)
	h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	if err := <-ended; status.Code(err) != codes.Canceled {
		t.Errorf("Recv after the reset: %v, want Canceled", err)
	}
	h.headers(3, echoMethod, false)
	h.fr.WriteData(3, false, grpcMessage([]byte("y")))
	if f := h.next(http2.FrameData); f == nil || f.StreamID != 3 {
		t.Errorf("the next stream got %v", f)
	}
}

// A client that ends its side inside a message gets INTERNAL.
func TestATruncatedMessageEndsTheStream(t *testing.T) {
	_, addr := serve(t, Config{})
	h := dialH2(t, addr)
	h.headers(1, echoMethod, false)
	h.fr.WriteData(1, true, grpcMessage([]byte("hello"))[:7])
	if _, got := h.trailers(1); got != "13 the client ended its side inside a message" {
		t.Errorf("trailers say %q", got)
	}
}

// GracefulStop tells GOAWAY naming the last stream, refuses streams opened
// after it, serves the open one to its end, then closes the connection.
func TestGracefulStopLetsOpenStreamsEnd(t *testing.T) {
	s, addr := serve(t, Config{})
	h := dialH2(t, addr)
	h.headers(1, echoMethod, false)
	h.fr.WriteData(1, false, grpcMessage([]byte("a")))
	h.next(http2.FrameData)
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	if g := h.goAway(); g.code != http2.ErrCodeNo || g.last != 1 {
		t.Fatalf("GOAWAY %v, last stream %d; want NO_ERROR, 1", g.code, g.last)
	}
	h.headers(3, echoMethod, false)
	if f := h.next(http2.FrameRSTStream); f == nil || f.StreamID != 3 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("a stream after GOAWAY got %v, want RST_STREAM REFUSED_STREAM", f)
	}
	h.fr.WriteData(1, false, grpcMessage([]byte("b")))
	if f := h.next(http2.FrameData); f == nil || !bytes.Equal(f.data, grpcMessage([]byte("b"))) {
		t.Fatalf("the open stream is not served after GOAWAY: %v", f)
	}
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned while a stream was open")
	default:
	}
	h.fr.WriteData(1, true, nil)
	if _, got := h.trailers(1); got != "0 " {
		t.Errorf("the open stream ended %q", got)
	}
	<-stopped
	if f := h.next(); f != nil {
		t.Errorf("the connection goes on after GracefulStop: %v", f.FrameHeader)
	}
}

// An idle connection holds no read buffer: the part of a frame it has not
// yet whole is all it keeps, and only until the frame is.
func TestAnIdleConnectionHoldsNoReadBuffer(t *testing.T) {
	if !rawReads {
		t.Skip("reads hold a buffer where the socket cannot be waited on")
	}
	s, addr := serve(t, Config{})
	h := dialH2(t, addr)
	h.headers(1, echoMethod, false)
	m := grpcMessage([]byte("hello"))
	h.fr.WriteData(1, false, m)
	h.next(http2.FrameData)
	onlyConn(t, s)
	held := func() bool { return readBufsOut.Load() > 0 }
	poll.Until(t, "no read buffer is held after whole frames", func() bool { return !held() })
	h.conn.Write([]byte{0, 0, 10, 0}) // a frame header's first bytes
	poll.Until(t, "the frame begun is held", held)
	h.conn.Write([]byte{0, 0, 0, 0, 1})
	h.conn.Write(make([]byte, 10)) // its payload: ten bytes of a message
	poll.Until(t, "the buffer is given back once the frame is whole", func() bool { return !held() })
}

func onlyConn(t *testing.T, s *Server) *conn {
	t.Helper()
	var c *conn
	poll.Until(t, "one connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for k := range s.conns {
			c = k
		}
		return len(s.conns) == 1
	})
	return c
}

// A connection that answers keepalive's pings stays open, however many
// come.
func TestAConnectionAnsweringPingsStaysOpen(t *testing.T) {
	_, addr := serve(t, Config{KeepaliveTime: 20 * time.Millisecond, KeepaliveTimeout: 10 * time.Second})
	h := dialH2(t, addr)
	for i := range 5 {
		f := h.next(http2.FramePing)
		if f == nil {
			t.Fatalf("closed after %d pings answered", i)
		}
		h.fr.WritePing(true, [8]byte(f.data))
	}
	h.headers(1, echoMethod, false)
	h.fr.WriteData(1, false, grpcMessage([]byte("still here")))
	if f := h.next(http2.FrameData); f == nil || !bytes.Equal(f.data, grpcMessage([]byte("still here"))) {
		t.Errorf("after five pings answered: %v", f)
	}
}

// largeStart sends the prefix and first bytes of a message larger than
// the window on a new stream.
func largeStart(h *h2, id uint32, n int) {
	h.headers(id, echoMethod, false)
	h.fr.WriteData(id, false, grpcMessage(make([]byte, n))[:1000])
}

// A connection closed while a large message is half read gives its budget
// back once, not twice.
func TestStopGivesBackTheBudgetOnce(t *testing.T) {
	b := &countingBudget{max: 1 << 20, changed: make(chan struct{})}
	s, addr := serve(t, Config{Budget: b, MaxRecvMsg: 1 << 20})
	h := dialH2(t, addr)
	largeStart(h, 1, 100<<10)
	poll.Until(t, "the message holds budget", func() bool { return b.held() == 100<<10 })
	s.Stop()
	if got := b.held(); got != 0 {
		t.Errorf("budget held after Stop: %d, want 0", got)
	}
}

// A large message that does not arrive within LargeTimeout ends its stream
// RESOURCE_EXHAUSTED and gives its budget back: a client trickling bytes
// cannot keep it.
func TestASlowLargeMessageLosesItsBudget(t *testing.T) {
	b := &countingBudget{max: 1 << 20, changed: make(chan struct{})}
	_, addr := serve(t, Config{Budget: b, MaxRecvMsg: 1 << 20, LargeTimeout: 50 * time.Millisecond})
	h := dialH2(t, addr)
	largeStart(h, 1, 100<<10)
	if _, got := h.trailers(1); !strings.HasPrefix(got, "8 a request of 102400 bytes not received within") {
		t.Errorf("trailers say %q, want RESOURCE_EXHAUSTED", got)
	}
	poll.Until(t, "the budget is given back", func() bool { return b.held() == 0 })
}

// A SETTINGS frame split across reads is read whole: the preface read
// before it is kept.
func TestSettingsSplitAcrossReads(t *testing.T) {
	_, addr := serve(t, Config{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	http2.NewFramer(&b, nil).WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	all := b.Bytes()
	cut := len(http2.ClientPreface) + 9 + 2 // two bytes into SETTINGS' payload
	c.Write(all[:cut])
	poll.Until(t, "the server holds what it read", func() bool { return readBufsOut.Load() == 1 })
	c.Write(all[cut:])
	fr := http2.NewFramer(nil, c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no SETTINGS ACK: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && s.IsAck() {
			return
		}
	}
}

// A stream the reader finds after its connection closed is not opened: no
// handler would ever see it end.
func TestNoStreamOpensOnAClosedConnection(t *testing.T) {
	s := New(Config{Method: echoMethod, Handle: echo})
	a, b := net.Pipe()
	defer b.Close()
	c := newConn(s, a)
	c.close(nil)
	if st := c.open(1, false); st != nil {
		t.Errorf("a stream opened on a closed connection")
	}
}

// A stream ended for a message over the limit is also reset NO_ERROR, so
// that a client still sending it stops.
func TestAnOversizeMessageResetsItsStream(t *testing.T) {
	_, addr := serve(t, Config{MaxRecvMsg: 1000})
	h := dialH2(t, addr)
	largeStart(h, 1, 2000)
	if _, got := h.trailers(1); !strings.HasPrefix(got, "8 ") {
		t.Fatalf("trailers say %q, want RESOURCE_EXHAUSTED", got)
	}
	if f := h.next(http2.FrameRSTStream); f == nil || f.StreamID != 1 || f.code != http2.ErrCodeNo {
		t.Errorf("got %v, want RST_STREAM NO_ERROR on stream 1", f)
	}
}

// Stop ends every stream even while others are finishing: a close that
// walked the connection's stream list as finishing streams were taken out
// of it in place skipped some, whose handlers then waited forever.
func TestStopWhileStreamsFinish(t *testing.T) {
	for range 20 {
		release := make(chan struct{})
		var opened sync.WaitGroup
		s, addr := serve(t, Config{Handle: func(st *Stream) error {
			opened.Done()
			select {
			case <-release:
				return nil
			case <-st.Context().Done():
				return st.Context().Err()
			}
		}})
		h := dialH2(t, addr)
		opened.Add(50)
		for i := range 50 {
			h.headers(uint32(2*i+1), echoMethod, false)
		}
		opened.Wait()
		go close(release)
		s.Stop() // returns only once every handler has
	}
}
