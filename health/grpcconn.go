package health

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// grpcConn is a minimal gRPC client connection for the health service: calls
// with one small request and small responses, over HTTP/2 spoken directly.
// A grpc-go ClientConn costs ≈100 KiB and ≈8 goroutines per endpoint (its
// resolver, balancer, transport reader and writer, keepalive, and 32 KiB
// buffers); this costs a few KiB and no goroutine of its own: the goroutine
// that calls next reads, writes and keeps time.
//
// It never sends DATA beyond one request message per call, so it ignores the
// server's flow-control windows (a server grants at least 64 KiB by default);
// it grants the server small windows, returned as each frame is consumed.
type grpcConn struct {
	conn net.Conn
	raw  syscall.RawConn // to wait for data without a buffer; nil if conn has none
	// br is taken from brPool while a frame is read, and given back while
	// the connection waits: thousands of quiet connections hold no buffer.
	br        *bufio.Reader
	fr        *http2.Framer
	authority string
	timeout   time.Duration // bounds each write, and each frame once begun
	nextID    uint32
	calls     [2]call // a Watch and a Check at most
}

// call is one open call's receive side.
type call struct {
	id      uint32
	buf     []byte // response bytes not yet returned as messages
	headers bool   // response headers received
	ended   bool
	code    codes.Code
	detail  string
}

// event is what next read: a message of call id, or its end (with the call's
// status).
type event struct {
	id     uint32
	msg    []byte
	end    bool
	code   codes.Code
	detail string
}

const (
	// maxMessage bounds one response message; health responses are a few
	// bytes.
	maxMessage = 1 << 10
	// window is the flow-control window granted per call: a server cannot
	// make the agent buffer more.
	window        = 2 * maxMessage
	maxHeaderList = 8 << 10
	readBuffer    = 512
	userAgent     = "nodexds-health"
)

var (
	brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBuffer) }}
	// The agent asks servers for no HPACK dynamic table (header table size
	// 0), so a decoder keeps nothing between header blocks and can be shared.
	// Servers apply the setting before they read any request, so no
	// response refers to a table entry.
	decoders = sync.Pool{New: func() any { return hpack.NewDecoder(0, nil) }}
)

var (
	// errDue: next returned because its deadline came, with nothing read.
	errDue = errors.New("deadline reached")
	// errGoAway: the server is closing the connection gracefully.
	errGoAway = errors.New("server sent GOAWAY")
)

// newGRPCConn starts HTTP/2 on conn.
func newGRPCConn(conn net.Conn, authority string, timeout time.Duration) (*grpcConn, error) {
	g := &grpcConn{conn: conn, authority: authority, timeout: timeout, nextID: 1}
	if sc, ok := conn.(syscall.Conn); ok && canPeek {
		g.raw, _ = sc.SyscallConn() // on failure, wait with a buffer instead
	}
	g.fr = http2.NewFramer(conn, g)
	g.fr.MaxHeaderListSize = maxHeaderList
	g.fr.SetMaxReadFrameSize(16 << 10) // the protocol's minimum
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return nil, err
	}
	err := g.fr.WriteSettings(
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: window},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	if err != nil {
		return nil, err
	}
	return g, nil
}

// start opens a call of method (e.g. "/grpc.health.v1.Health/Check") and
// sends its one request message. timeout, if not 0, is sent as grpc-timeout.
func (g *grpcConn) start(method string, req []byte, timeout time.Duration) (uint32, error) {
	slot := -1
	for i := range g.calls {
		if g.calls[i].id == 0 {
			slot = i
			break
		}
	}
	if slot < 0 {
		return 0, errors.New("too many calls")
	}
	if g.nextID > 1<<31-1 {
		return 0, errors.New("stream ids exhausted")
	}
	id := g.nextID
	g.nextID += 2

	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	field := func(name, value string) {
		// Never indexed: this encoder keeps no table across calls, so it
		// must not ask the server's decoder to keep one either.
		enc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: true})
	}
	field(":method", "POST")
	field(":scheme", "http")
	field(":path", method)
	field(":authority", g.authority)
	field("content-type", "application/grpc")
	field("te", "trailers")
	field("user-agent", userAgent)
	if timeout > 0 {
		field("grpc-timeout", strconv.FormatInt(timeout.Milliseconds(), 10)+"m")
	}
	msg := make([]byte, 5+len(req))
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(req)))
	copy(msg[5:], req)

	g.conn.SetWriteDeadline(time.Now().Add(g.timeout))
	if err := g.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return 0, err
	}
	if err := g.fr.WriteData(id, true, msg); err != nil {
		return 0, err
	}
	g.calls[slot] = call{id: id}
	return id, nil
}

// next returns the next message or call end. It returns errDue when deadline
// (if not zero) comes first, errGoAway when the server goes away, and any
// other error when the connection is no longer usable.
func (g *grpcConn) next(deadline time.Time) (event, error) {
	for {
		if ev, ok := g.pending(); ok {
			return ev, nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return event{}, errDue
		}
		// Wait for a frame to begin without consuming anything, so that a
		// deadline never cuts a frame in half; a frame once begun must then
		// arrive within the timeout.
		if err := g.wait(deadline); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return event{}, errDue
			}
			return event{}, err
		}
		g.conn.SetReadDeadline(time.Now().Add(g.timeout))
		dec := decoders.Get().(*hpack.Decoder)
		g.fr.ReadMetaHeaders = dec
		f, err := g.fr.ReadFrame()
		if err != nil {
			return event{}, err // dec is dropped: its state is unknown
		}
		decoders.Put(dec)
		if err := g.handle(f); err != nil {
			return event{}, err
		}
	}
}

// Read is what the Framer reads from: the connection, through a buffer
// taken from the pool.
func (g *grpcConn) Read(p []byte) (int, error) {
	if g.br == nil {
		g.br = brPool.Get().(*bufio.Reader)
		g.br.Reset(g.conn)
	}
	return g.br.Read(p)
}

// wait returns when data can be read, or with an error when deadline (zero:
// none) passes first. It gives the buffer back meanwhile.
func (g *grpcConn) wait(deadline time.Time) error {
	if g.br != nil && g.br.Buffered() > 0 {
		return nil
	}
	g.release()
	g.conn.SetReadDeadline(deadline)
	if g.raw == nil {
		g.Read(nil) // grows no buffer; fills it when data comes
		_, err := g.br.Peek(1)
		return err
	}
	return g.raw.Read(readable)
}

// release gives the read buffer back to the pool.
func (g *grpcConn) release() {
	if g.br != nil && g.br.Buffered() == 0 {
		g.br.Reset(nil)
		brPool.Put(g.br)
		g.br = nil
	}
}

// pending returns a complete message or an end already read.
func (g *grpcConn) pending() (event, bool) {
	for i := range g.calls {
		c := &g.calls[i]
		if c.id == 0 {
			continue
		}
		if len(c.buf) >= 5 {
			n := int(binary.BigEndian.Uint32(c.buf[1:5]))
			if len(c.buf) >= 5+n {
				ev := event{id: c.id, msg: bytes.Clone(c.buf[5 : 5+n])}
				c.buf = append(c.buf[:0], c.buf[5+n:]...)
				return ev, true
			}
		}
		if c.ended {
			ev := event{id: c.id, end: true, code: c.code, detail: c.detail}
			if len(c.buf) > 0 && c.code == codes.OK {
				ev.code, ev.detail = codes.Internal, "response ends within a message"
			}
			*c = call{}
			return ev, true
		}
	}
	return event{}, false
}

func (g *grpcConn) call(id uint32) *call {
	for i := range g.calls {
		if g.calls[i].id == id && id != 0 {
			return &g.calls[i]
		}
	}
	return nil
}

// handle applies one frame.
func (g *grpcConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			g.conn.SetWriteDeadline(time.Now().Add(g.timeout))
			return g.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			g.conn.SetWriteDeadline(time.Now().Add(g.timeout))
			return g.fr.WritePing(true, f.Data)
		}
	case *http2.GoAwayFrame:
		return errGoAway
	case *http2.PushPromiseFrame:
		return errors.New("server pushed, though push is disabled")
	case *http2.RSTStreamFrame:
		if c := g.call(f.StreamID); c != nil && !c.ended {
			c.ended, c.code, c.detail = true, rstCode(f.ErrCode), "stream reset: "+f.ErrCode.String()
		}
	case *http2.DataFrame:
		// Every byte counts against the windows, padding included: give
		// them back, or a long Watch would stall.
		if n := f.Length; n > 0 {
			g.conn.SetWriteDeadline(time.Now().Add(g.timeout))
			if err := g.fr.WriteWindowUpdate(0, n); err != nil {
				return err
			}
			if c := g.call(f.StreamID); c != nil && !c.ended && !f.StreamEnded() {
				if err := g.fr.WriteWindowUpdate(f.StreamID, n); err != nil {
					return err
				}
			}
		}
		c := g.call(f.StreamID)
		if c == nil || c.ended {
			return nil
		}
		if !c.headers {
			return errors.New("DATA before response headers")
		}
		c.buf = append(c.buf, f.Data()...)
		if len(c.buf) >= 5 {
			if c.buf[0] != 0 {
				return errors.New("compressed response, though no compression was offered")
			}
			if binary.BigEndian.Uint32(c.buf[1:5]) > maxMessage {
				return fmt.Errorf("response message over %d bytes", maxMessage)
			}
		}
		if len(c.buf) > 4*maxMessage { // a frame is at most a window: unreachable by a server that keeps to it
			return errors.New("response data beyond the flow-control window")
		}
		if f.StreamEnded() {
			c.ended, c.code, c.detail = true, codes.Internal, "response ends without a status"
		}
	case *http2.MetaHeadersFrame:
		if f.Truncated {
			return errors.New("response headers too large")
		}
		c := g.call(f.StreamID)
		if c == nil || c.ended {
			return nil
		}
		g.headers(c, f)
	}
	return nil
}

// headers applies response headers or trailers to c, following gRPC's
// HTTP/2 mapping: a non-gRPC response ends the call with the code its HTTP
// status maps to (404 is Unimplemented).
func (g *grpcConn) headers(c *call, f *http2.MetaHeadersFrame) {
	if !c.headers {
		c.headers = true
		st := f.PseudoValue("status")
		ct := ""
		for _, hf := range f.RegularFields() {
			if hf.Name == "content-type" {
				ct = hf.Value
			}
		}
		if st != "200" || !(ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")) {
			c.ended, c.code, c.detail = true, httpCode(st), "not a gRPC response: HTTP status "+st+", content-type "+strconv.Quote(ct)
			return
		}
	}
	var status, message string
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "grpc-status":
			status = hf.Value
		case "grpc-message":
			message, _ = url.PathUnescape(hf.Value)
		}
	}
	if status != "" {
		code, err := strconv.ParseUint(status, 10, 32)
		if err != nil {
			code, message = uint64(codes.Unknown), "malformed grpc-status "+strconv.Quote(status)
		}
		c.ended, c.code, c.detail = true, codes.Code(code), message
		return
	}
	if f.StreamEnded() {
		c.ended, c.code, c.detail = true, codes.Internal, "response ends without a status"
	}
}

// httpCode maps an HTTP status to a gRPC code, as gRPC clients do.
func httpCode(status string) codes.Code {
	switch status {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

func rstCode(c http2.ErrCode) codes.Code {
	switch c {
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	}
	return codes.Internal
}
