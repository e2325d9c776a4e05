package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// listenTCP listens on addr. With reusePort the socket sets SO_REUSEPORT, so
// that a second agent on the same node (a surge rollout's new pod, on the
// host network) can listen on the same address while this one still serves;
// the kernel spreads new connections over both. Linux admits only sockets
// of the same user into such a group.
func listenTCP(addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = setReusePort
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// listenWhenFree listens on addr now if it can; if another process holds
// addr, it returns a listener whose Accept waits until that process has let
// go (retrying every interval). It is for the admin port under a surge
// rollout: the port is not shared, so its metrics are always one agent's,
// and the new agent takes it over when the old one exits.
func listenWhenFree(addr string, interval time.Duration, log *slog.Logger) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if !errors.Is(err, syscall.EADDRINUSE) {
		return l, err
	}
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	log.Info("address in use (another agent on this node?); taking it when it is free", "addr", addr)
	p := &pendingListener{addr: tcp, bound: make(chan struct{}), closed: make(chan struct{})}
	go p.retry(interval, log)
	return p, nil
}

// pendingListener is a listener that is not bound yet: see listenWhenFree.
type pendingListener struct {
	addr   *net.TCPAddr
	bound  chan struct{} // closed once l or err is set
	closed chan struct{} // closed by Close

	mu   sync.Mutex
	l    net.Listener
	err  error
	once sync.Once
}

func (p *pendingListener) retry(interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		}
		l, err := net.Listen("tcp", p.addr.String())
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		p.mu.Lock()
		select {
		case <-p.closed: // Close won the race: nobody will close l
			if l != nil {
				l.Close()
			}
		default:
			p.l, p.err = l, err
			close(p.bound)
			if err == nil {
				log.Info("address free now; listening", "addr", p.addr.String())
			}
		}
		p.mu.Unlock()
		return
	}
}

func (p *pendingListener) Accept() (net.Conn, error) {
	select {
	case <-p.bound:
	case <-p.closed:
		return nil, net.ErrClosed
	}
	if p.err != nil {
		return nil, p.err
	}
	return p.l.Accept()
}

func (p *pendingListener) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.once.Do(func() { close(p.closed) })
	if p.l != nil {
		return p.l.Close()
	}
	return nil
}

func (p *pendingListener) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		return p.l.Addr()
	}
	return p.addr
}

// listenUnix listens on a unix socket at path, replacing a socket file left
// by an earlier run of this container (its directory is the pod's own, so
// no live agent can own it).
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	return net.Listen("unix", path)
}
