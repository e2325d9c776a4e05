package wire

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// headers starts a header block: a new stream's request, or a client's
// trailers (which only end its side).
func (c *conn) headers(h frameHeader, p []byte) error {
	if h.stream == 0 || h.stream%2 == 0 {
		return protocolError("HEADERS on stream %d", h.stream)
	}
	if h.flags&flagPadded != 0 {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return protocolError("HEADERS padding longer than the frame")
		}
		p = p[1 : len(p)-int(p[0])]
	}
	if h.flags&flagPriority != 0 {
		if len(p) < 5 {
			return connError{errFrameSize, "HEADERS too short for its priority"}
		}
		p = p[5:]
	}
	c.hb = headerBlock{active: true, stream: h.stream, endStream: h.flags&flagEndStream != 0}
	return c.fragment(h, p)
}

// fragment decodes one piece of a header block (every block goes through
// the decoder, whatever becomes of its stream: HPACK's table is the
// connection's).
func (c *conn) fragment(h frameHeader, p []byte) error {
	if c.hb.size += len(p); c.hb.size > maxHeaderBlock {
		return connError{errEnhanceCalm, "header block too large"}
	}
	if _, err := c.dec.Write(p); err != nil {
		return connError{errCompression, "HPACK: " + err.Error()}
	}
	if h.flags&flagEndHeaders == 0 {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return connError{errCompression, "HPACK: " + err.Error()}
	}
	hb := c.hb
	c.hb = headerBlock{}
	return c.request(hb)
}

// field is the decoder's callback: it keeps what a request is routed by.
func (c *conn) field(f hpack.HeaderField) {
	c.hb.list += len(f.Name) + len(f.Value) + 32
	if c.hb.list > maxHeaderList {
		return
	}
	switch f.Name {
	case ":method":
		c.hb.method = f.Value
	case ":path":
		c.hb.path = f.Value
	case "content-type":
		c.hb.ctype = f.Value
	}
}

// request opens the stream a header block asks for, or answers it at once.
func (c *conn) request(hb headerBlock) error {
	if hb.stream <= c.lastID { // trailers of an open stream: its end
		if !hb.endStream {
			return protocolError("HEADERS on stream %d, not new, without END_STREAM", hb.stream)
		}
		if st := c.find(hb.stream); st != nil {
			st.endRecv(nil)
		}
		return nil
	}
	c.mu.Lock()
	c.lastID = hb.stream
	refuse := c.goneAway || len(c.streams) >= c.cfg.MaxStreams
	c.mu.Unlock()
	var answer error
	switch {
	case refuse:
		return c.write(appendRST(nil, hb.stream, errRefusedStream))
	case hb.list > maxHeaderList:
		answer = status.Errorf(codes.ResourceExhausted, "request headers larger than %d bytes", maxHeaderList)
	case hb.method != "POST" || !isGRPC(hb.ctype):
		answer = status.Errorf(codes.Internal, "not a gRPC request (:method %q, content-type %q)", clip(hb.method), clip(hb.ctype))
	case hb.path != c.cfg.Method:
		msg, ok := c.cfg.Unimplemented[hb.path]
		if !ok {
			msg = fmt.Sprintf("unknown method %s", clip(hb.path))
		}
		answer = status.Error(codes.Unimplemented, msg)
	}
	if answer != nil {
		st := &Stream{c: c, id: hb.stream}
		return c.write(st.trailers(answer, !hb.endStream))
	}
	st := c.open(hb.stream, hb.endStream)
	if st == nil {
		return errConnClosed
	}
	go c.run(st)
	return nil
}

func isGRPC(ctype string) bool {
	return ctype == "application/grpc" || strings.HasPrefix(ctype, "application/grpc+") || strings.HasPrefix(ctype, "application/grpc;")
}

func clip(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}

// open adds a stream, or returns nil if the connection has closed: its
// close reset the streams it had, and one opened after would wait forever.
func (c *conn) open(id uint32, endStream bool) *Stream {
	st := &Stream{c: c, id: id, recvWin: window, ready: make(chan struct{}, 1)}
	st.ctx, st.cancel = context.WithCancel(c.ctx)
	if endStream {
		st.ended, st.recvDone, st.recvErr = true, true, errEOF
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		st.cancel()
		return nil
	}
	st.sendWin = c.initWin
	c.streams = append(c.streams, st)
	c.srv.wg.Add(1)
	return st
}

// run serves one stream with the handler.
func (c *conn) run(st *Stream) {
	defer c.srv.wg.Done()
	st.finish(c.cfg.Handle(st))
}

// data takes a DATA frame: the connection's window, then the stream's
// messages.
func (c *conn) data(h frameHeader, p []byte) error {
	if h.stream == 0 {
		return protocolError("DATA on stream 0")
	}
	if h.stream > c.lastID {
		return protocolError("DATA on an idle stream")
	}
	size := int64(len(p))
	if c.recvConn -= size; c.recvConn < 0 {
		return connError{errFlowControl, "DATA beyond the connection window"}
	}
	if c.unacked += uint32(size); c.unacked >= window/4 {
		c.recvConn += int64(c.unacked)
		inc := c.unacked
		c.unacked = 0
		if err := c.write(appendWindowUpdate(nil, 0, inc)); err != nil {
			return err
		}
	}
	pad := 0
	if h.flags&flagPadded != 0 {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return protocolError("DATA padding longer than the frame")
		}
		pad = int(p[0]) + 1
		p = p[1 : len(p)-int(p[0])]
	}
	st := c.find(h.stream)
	if st == nil {
		return nil // ended here before the client knew: dropped
	}
	if err := st.take(size, pad, p); err != nil {
		return err
	}
	if h.flags&flagEndStream != 0 {
		st.endRecv(nil)
	}
	return nil
}

// take adds a DATA frame's payload to the stream's messages (reader only).
func (st *Stream) take(size int64, pad int, p []byte) error {
	c := st.c
	switch {
	case st.ended:
		st.reset(errStreamClosedFrame)
		return c.write(appendRST(nil, st.id, errStreamClosed))
	case st.failed:
		return nil
	}
	c.mu.Lock()
	if st.recvDone { // reset, or too slow (see slowLarge): dropped
		c.mu.Unlock()
		return nil
	}
	if st.recvWin -= size; st.recvWin < 0 {
		c.mu.Unlock()
		st.reset(errFlowControlled)
		return c.write(appendRST(nil, st.id, errFlowControl))
	}
	st.unacked += pad
	c.mu.Unlock()
	for len(p) > 0 && !st.failed {
		var err error
		if p, err = st.assemble(p); err != nil {
			return err
		}
	}
	return st.giveBack()
}

// assemble adds bytes to the message being read and queues it once whole;
// it returns the bytes past it.
func (st *Stream) assemble(p []byte) ([]byte, error) {
	c := st.c
	if st.npfx < 5 {
		k := copy(st.pfx[st.npfx:], p)
		st.npfx += k
		p = p[k:]
		if st.npfx < 5 {
			return p, nil
		}
		n := int64(binary.BigEndian.Uint32(st.pfx[1:]))
		switch {
		case st.pfx[0] != 0:
			st.fail(status.Error(codes.Unimplemented, "compressed message: this server takes none"))
			return nil, nil
		case n > int64(c.cfg.MaxRecvMsg):
			st.fail(status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, c.cfg.MaxRecvMsg))
			return nil, nil
		}
		st.need = int(n)
		st.msg = make([]byte, 0, min(n, 4096))
		if n+5 > window { // cannot fit the window: read under the budget, whole
			if !c.acquire(n) {
				return nil, errBudget
			}
			c.mu.Lock()
			gone := st.sendDone // finished or reset meanwhile
			if !gone {
				c.held += n
				st.large = n
				st.unacked += 5
			}
			c.mu.Unlock()
			if gone {
				c.release(n)
				st.failed, st.msg = true, nil
				return nil, nil
			}
			st.msg = make([]byte, 0, n) // what the budget counts, not grown by append
			st.slow = time.AfterFunc(c.cfg.LargeTimeout, st.tooSlow)
		}
	}
	k := min(len(p), st.need)
	st.msg = append(st.msg, p[:k]...)
	st.need -= k
	p = p[k:]
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.large > 0 {
		st.unacked += k
	}
	if st.need > 0 {
		return p, nil
	}
	if st.recvDone { // ended meanwhile (too slow): not received
		st.msg, st.npfx = nil, 0
		return nil, nil
	}
	m := message{b: st.msg, budget: st.large}
	if st.large == 0 {
		m.wire = len(st.msg) + 5
	} else {
		c.held -= st.large
		st.slow.Stop()
	}
	st.queue = append(st.queue, m)
	st.msg, st.npfx, st.large = nil, 0, 0
	select {
	case st.ready <- struct{}{}:
	default:
	}
	return p, nil
}

// acquire takes n bytes of budget for a large message, waiting while the
// connection is not in the middle of another (see Config.HeldWait).
func (c *conn) acquire(n int64) bool {
	b := c.cfg.Budget
	if b == nil {
		return true
	}
	c.mu.Lock()
	limit := time.Duration(0)
	if c.held > 0 {
		limit = c.cfg.HeldWait
	}
	c.mu.Unlock()
	if !b.Acquire(n, limit, c.closedc) {
		if limit > 0 && c.cfg.Exceeded != nil {
			select {
			case <-c.closedc:
			default:
				c.cfg.Exceeded(c.nc)
			}
		}
		return false
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		b.Release(n)
	}
	return !closed
}
