package wire

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// readSize is a read buffer's size: room for the largest frame a client may
// send (maxFrame and its header) twice, so a frame begun in one read always
// ends in the next.
const readSize = 32 << 10

var (
	readBufs = sync.Pool{New: func() any { b := make([]byte, readSize); return &b }}
	// readBufsOut counts the read buffers connections hold: tests see
	// that idle ones hold none.
	readBufsOut atomic.Int64
)

func getReadBuf() *[]byte {
	readBufsOut.Add(1)
	return readBufs.Get().(*[]byte)
}

func putReadBuf(b *[]byte) {
	readBufsOut.Add(-1)
	readBufs.Put(b)
}

// reader reads a connection's bytes. On a socket (Linux), it waits for the
// socket to be readable before taking a buffer from the pool: an idle
// connection holds none. Elsewhere it holds one while blocked in Read.
type reader struct {
	nc  net.Conn
	raw syscall.RawConn
	fn  func(fd uintptr) bool
	// the read in progress, kept here so that a read allocates nothing
	buf     *[]byte
	off, n  int
	err     error
	pending bool // buf was passed in (bytes of a frame begun): never pooled here
}

func newReader(nc net.Conn) reader {
	r := reader{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok && rawReads {
		r.raw, _ = sc.SyscallConn()
	}
	return r
}

// read reads into buf after its first off bytes (buf nil: a pooled buffer,
// off 0), and returns the buffer and how many bytes it now holds, or an
// error (the buffer then back in the pool unless it was passed in).
func (r *reader) read(buf *[]byte, off int) (*[]byte, int, error) {
	if r.raw == nil {
		if buf == nil {
			buf = getReadBuf()
		}
		n, err := r.nc.Read((*buf)[off:])
		if n > 0 {
			return buf, off + n, nil // an error comes again with the next read
		}
		if off == 0 {
			putReadBuf(buf)
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return nil, 0, err
	}
	if r.fn == nil {
		r.fn = r.ready
	}
	r.buf, r.off, r.pending = buf, off, buf != nil
	err := r.raw.Read(r.fn)
	buf, n, rerr := r.buf, r.n, r.err
	r.buf, r.err = nil, nil
	if err == nil {
		err = rerr
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err != nil {
		if buf != nil && off == 0 {
			putReadBuf(buf)
		}
		return nil, 0, err
	}
	return buf, off + n, nil
}

// ready is RawConn.Read's callback: one read; false asks to be called again
// once the socket is readable.
func (r *reader) ready(fd uintptr) bool {
	if r.buf == nil {
		r.buf = getReadBuf()
	}
	r.n, r.err = rawRead(fd, (*r.buf)[r.off:])
	if r.n < 0 {
		r.n = 0
	}
	if wouldBlock(r.err) {
		if !r.pending {
			putReadBuf(r.buf)
			r.buf = nil
		}
		return false
	}
	return true
}
