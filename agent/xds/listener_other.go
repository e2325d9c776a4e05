//go:build !linux

package xds

// rawReads: reads go through net.Conn.Read (see limitedConn.ReadOnReady).
const rawReads = false

func rawRead(uintptr, []byte) (int, error) { panic("raw reads are Linux-only") }

func wouldBlock(error) bool { return false }
