//go:build !linux

package wire

// rawReads: reads go through net.Conn.Read.
const rawReads = false

func rawRead(uintptr, []byte) (int, error) { panic("unreachable") }

func wouldBlock(error) bool { return false }
