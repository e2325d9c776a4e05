package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	errEOF               = io.EOF
	errCanceledByClient  = status.Error(codes.Canceled, "the client reset the stream")
	errConnClosed        = status.Error(codes.Canceled, "the connection closed")
	errFlowControlled    = status.Error(codes.Internal, "the client sent beyond its flow-control window")
	errStreamClosedFrame = status.Error(codes.Internal, "the client sent DATA after ending its side")
	errTruncated         = status.Error(codes.Internal, "the client ended its side inside a message")
	errBudget            = errors.New("gave up waiting for reading budget")
)

// Stream is one call of the served method.
type Stream struct {
	c      *conn
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{} // a message or the end was queued (cap 1)

	// The message being read (reader only).
	pfx    [5]byte
	npfx   int
	msg    []byte
	need   int
	failed bool        // reading ended with an error: what comes is dropped
	slow   *time.Timer // for the large message being read (tooSlow)

	// Under c.mu.
	large    int64     // budget of the message being read, if large
	queue    []message // whole, not yet received
	recvWin  int64     // window left to the client
	unacked  int       // window to give back
	ended    bool      // the client ended its side (END_STREAM)
	recvDone bool      // nothing more is received: ended, failed or reset
	recvErr  error     // Recv's once the queue is empty
	sendWin  int64
	sendDone bool // ended or reset: nothing more is written

	smu         sync.Mutex // one Send or the trailers at a time
	headersSent bool
}

type message struct {
	b      []byte
	wire   int   // window it gives back once received (small messages)
	budget int64 // budget it gives back once received (large ones)
}

// Context is the stream's: done once the stream ends or its connection
// closes.
func (st *Stream) Context() context.Context { return st.ctx }

// Recv returns the next message, io.EOF once the client has ended its
// side, or the error that ended the stream (a status).
func (st *Stream) Recv() ([]byte, error) {
	c := st.c
	for {
		c.mu.Lock()
		if len(st.queue) > 0 {
			m := st.queue[0]
			st.queue[0] = message{}
			if st.queue = st.queue[1:]; len(st.queue) == 0 {
				st.queue = nil
			}
			st.unacked += m.wire
			c.mu.Unlock()
			c.release(m.budget)
			st.giveBack()
			return m.b, nil
		}
		err := st.recvErr
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		<-st.ready
	}
}

// giveBack returns what the stream has read to the client's window, once
// it is a quarter of it, or at once while the window is below half (the
// client may be waiting for it to finish a message).
func (st *Stream) giveBack() error {
	c := st.c
	c.mu.Lock()
	inc := st.unacked
	if inc == 0 || st.recvDone || (inc < window/4 && st.recvWin >= window/2) {
		c.mu.Unlock()
		return nil
	}
	st.unacked = 0
	st.recvWin += int64(inc)
	c.mu.Unlock()
	return c.write(appendWindowUpdate(nil, st.id, uint32(inc)))
}

func (st *Stream) signal() {
	select {
	case st.ready <- struct{}{}:
	default:
	}
}

// endRecv ends the client's side: END_STREAM (err nil).
func (st *Stream) endRecv(err error) {
	if err == nil && st.npfx > 0 {
		err = errTruncated
	}
	if err == nil {
		err = errEOF
	}
	c := st.c
	c.mu.Lock()
	st.ended, st.recvDone = true, true
	if st.recvErr == nil {
		st.recvErr = err
	}
	c.mu.Unlock()
	st.signal()
}

// fail ends reading with err (a status Recv returns, and the handler
// with it), and drops the stream's further DATA.
func (st *Stream) fail(err error) {
	st.failed, st.msg = true, nil
	c := st.c
	c.mu.Lock()
	large := st.large
	st.large = 0
	c.held -= large
	st.recvDone = true
	if st.recvErr == nil || st.recvErr == errEOF {
		st.recvErr = err
	}
	c.mu.Unlock()
	c.release(large)
	st.signal()
}

// tooSlow ends reading a large message that holds budget for longer than
// LargeTimeout: Recv and the handler say RESOURCE_EXHAUSTED, the budget is
// given back, and what else comes on the stream is dropped.
func (st *Stream) tooSlow() {
	c := st.c
	c.mu.Lock()
	large := st.large
	if large == 0 { // whole meanwhile, or the stream ended
		c.mu.Unlock()
		return
	}
	st.large = 0
	c.held -= large
	st.recvDone = true
	if st.recvErr == nil {
		st.recvErr = status.Errorf(codes.ResourceExhausted, "a request of %d bytes not received within %v", large, c.cfg.LargeTimeout)
	}
	c.mu.Unlock()
	c.release(large)
	st.signal()
}

// reset ends the stream both ways: the client reset it, it broke a rule, or
// the connection closed.
func (st *Stream) reset(err error) {
	c := st.c
	c.mu.Lock()
	st.recvDone, st.sendDone = true, true
	if st.recvErr == nil || st.recvErr == errEOF {
		st.recvErr = err
	}
	held := st.drop()
	c.cond.Broadcast()
	c.mu.Unlock()
	c.release(held)
	st.cancel()
	st.signal()
}

// drop forgets what the stream holds and returns its budget (under c.mu).
func (st *Stream) drop() int64 {
	held := st.large
	st.c.held -= st.large
	st.large = 0
	for _, m := range st.queue {
		held += m.budget
	}
	st.queue = nil
	return held
}

// writeChunk bounds one write of a response (and what it holds in memory).
const writeChunk = 64 << 10

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// Send writes one message, within the client's flow-control windows: it
// waits for them, or returns the error that ended the stream.
func (st *Stream) Send(msg []byte) error {
	st.smu.Lock()
	defer st.smu.Unlock()
	c := st.c
	var pfx [5]byte
	binary.BigEndian.PutUint32(pfx[1:], uint32(len(msg)))
	total, sent := 5+len(msg), 0
	out := writeBufs.Get().(*[]byte)
	defer func() {
		if cap(*out) <= 4*writeChunk {
			writeBufs.Put(out)
		}
	}()
	for sent < total {
		c.mu.Lock()
		for !st.sendDone && !c.closed && (c.sendConn <= 0 || st.sendWin <= 0) {
			c.cond.Wait()
		}
		if st.sendDone || c.closed {
			err := st.recvErr
			c.mu.Unlock()
			if err == nil || err == errEOF {
				err = errConnClosed
			}
			return err
		}
		n := min(total-sent, int(min(c.sendConn, st.sendWin)), writeChunk)
		c.sendConn -= int64(n)
		st.sendWin -= int64(n)
		frame := c.maxOut
		c.mu.Unlock()

		b := (*out)[:0]
		if !st.headersSent {
			b = appendHeader(b, len(responseHeaders), frameHeaders, flagEndHeaders, st.id)
			b = append(b, responseHeaders...)
			st.headersSent = true
		}
		for end := sent + n; sent < end; {
			k := min(end-sent, frame)
			b = appendHeader(b, k, frameData, 0, st.id)
			if sent < 5 {
				p := pfx[sent:min(5, sent+k)]
				b = append(b, p...)
				b = append(b, msg[:k-len(p)]...)
			} else {
				b = append(b, msg[sent-5:sent-5+k]...)
			}
			sent += k
		}
		*out = b
		c.sentData.Store(true)
		if err := c.write(b); err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
	}
	return nil
}

// finish ends the stream with the handler's error: trailers (after the
// response's headers if none were sent), then RST_STREAM NO_ERROR if the
// client has not ended its side, so it stops sending.
func (st *Stream) finish(err error) {
	st.smu.Lock()
	c := st.c
	c.mu.Lock()
	write := !st.sendDone && !c.closed
	st.sendDone = true
	rst := !st.ended // a stream that failed or was reset may still be sent on
	c.cond.Broadcast()
	c.mu.Unlock()
	if write {
		c.write(st.trailers(err, rst))
	}
	st.smu.Unlock()

	c.mu.Lock()
	for i, s := range c.streams {
		if s == st {
			c.streams = append(c.streams[:i], c.streams[i+1:]...)
			break
		}
	}
	if len(c.streams) == 0 {
		c.streams = nil
	}
	st.recvDone = true
	held := st.drop()
	idle := c.goneAway && len(c.streams) == 0
	c.mu.Unlock()
	c.release(held)
	st.cancel()
	if idle {
		c.close(nil)
	}
}

// trailers are the frames that end a response with err's status.
func (st *Stream) trailers(err error, rst bool) []byte {
	s := status.Convert(err)
	msg := s.Message()
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	var block []byte
	if !st.headersSent {
		block = append(block, responseHeaders...)
		st.headersSent = true
	}
	block = appendTrailers(block, uint32(s.Code()), msg)
	b := appendHeader(make([]byte, 0, 2*headerLen+len(block)+4), len(block), frameHeaders, flagEndHeaders|flagEndStream, st.id)
	b = append(b, block...)
	if rst {
		b = appendRST(b, st.id, errNo)
	}
	return b
}
