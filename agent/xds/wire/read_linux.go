package wire

import "syscall"

// rawReads: a connection's reads can be made on its file descriptor.
const rawReads = true

func rawRead(fd uintptr, p []byte) (int, error) { return syscall.Read(int(fd), p) }

func wouldBlock(err error) bool { return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK }
