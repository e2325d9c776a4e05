package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A packet capture in pure Go: an AF_PACKET socket opened inside a node's
// network namespace, reading the TCP connections to one address off that
// node's interface (the veth), so a test can tell what a connection starts
// with on the wire — a TLS record or the HTTP/2 preface.

// inNetns runs fn on an OS thread switched into network namespace netns
// (an `ip netns` name): sockets fn creates belong to that namespace for
// their whole life, whichever thread later uses them.
func inNetns(netns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + netns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", netns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so the runtime ends it with this
		// goroutine instead of running other goroutines in netns.
		return errors.Join(ferr, fmt.Errorf("setns back from %s: %w", netns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// flow is a TCP connection whose SYN the capture saw.
type flow struct {
	Src   netip.AddrPort
	SYN   time.Time
	First []byte // the first bytes of the client's first segment with data; nil if none came
}

// capture records the TCP connections opened to one address.
type capture struct {
	fd   int
	dst  netip.AddrPort
	done chan struct{}

	mu    sync.Mutex
	stop  bool
	flows map[netip.AddrPort]*flow
	order []netip.AddrPort
	err   error
}

// firstBytes is how much of a connection's first payload is kept.
const firstBytes = 24

// startCapture starts capturing, on interface ifname of network namespace
// netns, the connections opened to dst: every IPv4 packet the interface
// sends or receives reaches the socket (ETH_P_IP), and those of TCP to dst
// are parsed by hand (IPv4 and TCP headers; no libpcap). Stop it with Stop.
func startCapture(t testing.TB, netns, ifname string, dst netip.AddrPort) *capture {
	t.Helper()
	c := &capture{fd: -1, dst: dst, done: make(chan struct{}), flows: map[netip.AddrPort]*flow{}}
	err := inNetns(netns, func() error {
		ifi, err := net.InterfaceByName(ifname) // this namespace's
		if err != nil {
			return err
		}
		// SOCK_DGRAM: packets without their link-layer header, so both
		// directions and any link type start at the IP header.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind AF_PACKET to %s: %w", ifname, err)
		}
		// Reads time out, so Stop is seen.
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("e2e: capture on %s in %s: %v", ifname, netns, err)
	}
	go c.read()
	t.Cleanup(func() { c.Stop() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) read() {
	defer close(c.done)
	defer unix.Close(c.fd)
	buf := make([]byte, 1<<16)
	for {
		c.mu.Lock()
		stop := c.stop
		c.mu.Unlock()
		if stop {
			return
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		c.packet(buf[:n], time.Now())
	}
}

// packet parses one IPv4 packet and records what it says of a connection
// to c.dst.
func (c *capture) packet(b []byte, at time.Time) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total > len(b) || total == 0 {
		total = len(b) // offloaded segments may say 0
	}
	if ihl < 20 || total < ihl+20 {
		return
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	tcp := b[ihl:total]
	sport, dport := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
	if dst != c.dst.Addr() || dport != c.dst.Port() {
		return
	}
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return
	}
	const syn, ack = 0x02, 0x10
	flags := tcp[13]
	from := netip.AddrPortFrom(src, sport)
	payload := tcp[off:]
	c.mu.Lock()
	defer c.mu.Unlock()
	if flags&syn != 0 && flags&ack == 0 {
		if _, seen := c.flows[from]; !seen {
			c.order = append(c.order, from)
		}
		c.flows[from] = &flow{Src: from, SYN: at} // a reused port is a new connection
		return
	}
	if f := c.flows[from]; f != nil && f.First == nil && len(payload) > 0 {
		f.First = append([]byte(nil), payload[:min(len(payload), firstBytes)]...)
	}
}

// Stop ends the capture and returns the connections it saw opened, in the
// order of their SYNs.
func (c *capture) Stop() ([]flow, error) {
	c.mu.Lock()
	c.stop = true
	c.mu.Unlock()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	flows := make([]flow, 0, len(c.order))
	for _, k := range c.order {
		flows = append(flows, *c.flows[k])
	}
	return flows, c.err
}

// Flows returns, without stopping, the connections seen so far.
func (c *capture) Flows() []flow {
	c.mu.Lock()
	defer c.mu.Unlock()
	flows := make([]flow, 0, len(c.order))
	for _, k := range c.order {
		flows = append(flows, *c.flows[k])
	}
	return flows
}

// What a client's first bytes on a connection can be.
var (
	// tlsHandshake is a TLS record of type handshake (22) with a 3.x
	// record version: a ClientHello.
	tlsHandshake = []byte{0x16, 0x03}
	// h2Preface is the start of the HTTP/2 client connection preface,
	// which a plaintext gRPC client sends first.
	h2Preface = []byte("PRI * HTTP/2.0")
)

func (f flow) String() string {
	return fmt.Sprintf("%s (SYN %s): first bytes %q", f.Src, f.SYN.Format("15:04:05.000"), f.First)
}
