//go:build unix

package health

import "syscall"

// canPeek: connections can wait for data without a buffer (readable).
const canPeek = true

// readable is a syscall.RawConn Read callback that reports whether the
// socket has data (or an error, or EOF) to read, without reading it: the
// goroutine then waits in the poller holding no buffer.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
	return err != syscall.EAGAIN
}
