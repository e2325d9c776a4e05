package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nodexds/nodexds/internal/poll"
)

// accepted dials l's address and returns the listener (one of ls) that
// accepted the connection.
func acceptedBy(t *testing.T, addr string, ls ...net.Listener) net.Listener {
	t.Helper()
	got := make(chan net.Listener, len(ls))
	for _, l := range ls {
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Close()
				got <- l
			}
		}()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	select {
	case l := <-got:
		return l
	case <-time.After(poll.Timeout):
		t.Fatal("no listener accepted the connection")
		return nil
	}
}

func TestReusePortLetsASecondAgentListenBesideTheFirst(t *testing.T) {
	old, err := listenTCP("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	addr := old.Addr().String()
	if l, err := listenTCP(addr, false); !errors.Is(err, syscall.EADDRINUSE) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("a listener without -reuse-port on %s: err %v, want EADDRINUSE", addr, err)
	}
	replacement, err := listenTCP(addr, true)
	if err != nil {
		t.Fatalf("second -reuse-port listener on %s: %v", addr, err)
	}
	defer replacement.Close()

	// Once the old agent closes its listener, every new connection goes
	// to the replacement.
	old.Close()
	for i := range 20 {
		if got := acceptedBy(t, addr, replacement); got != replacement {
			t.Fatalf("connection %d not accepted by the replacement", i)
		}
	}
}

func TestListenWhenFreeTakesTheAddressOnceItsHolderLetsGo(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := holder.Addr().String()
	l, err := listenWhenFree(addr, 10*time.Millisecond, log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Addr().String() != addr {
		t.Errorf("Addr() = %s before binding, want %s", l.Addr(), addr)
	}
	// Served by a real HTTP server, as the admin port is.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "new") })}
	go srv.Serve(l)
	defer srv.Close()

	// While held, the holder gets the connections.
	if got := acceptedBy(t, addr, holder); got != holder {
		t.Fatal("the holder did not accept")
	}
	holder.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	poll.Check(t, func() string {
		resp, err := client.Get("http://" + addr)
		if err != nil {
			return fmt.Sprintf("the address is not taken over: %v", err)
		}
		resp.Body.Close()
		return ""
	})
}

// On synctest's clock: "five retry intervals" are five retries, however busy
// the machine, and take no time.
func TestListenWhenFreeClosedBeforeBindingStopsTrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		holder, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		const interval = 10 * time.Millisecond
		l, err := listenWhenFree(holder.Addr().String(), interval, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			accepted <- err
		}()
		l.Close()
		select {
		case err := <-accepted:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("Accept still blocked after Close")
		}
		// Released now, the address must stay free: the closed listener
		// must not grab it.
		holder.Close()
		time.Sleep(5 * interval)
		synctest.Wait()
		again, err := net.Listen("tcp", holder.Addr().String())
		if err != nil {
			t.Fatalf("address taken after the pending listener was closed: %v", err)
		}
		again.Close()
	})
}

func TestProbeAsksThePodsOwnAgentOverItsSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "probe.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !ready {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})}
	go srv.Serve(l)
	ctx := context.Background()
	if err := probe(ctx, []string{"--socket", sock, "/readyz"}); err == nil {
		t.Error("probe /readyz of an agent that is not ready succeeded")
	}
	if err := probe(ctx, []string{"--socket", sock, "/healthz"}); err != nil {
		t.Errorf("probe /healthz: %v", err)
	}
	// A socket file left by an earlier run (a container restart keeps the
	// pod's emptyDir) is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	srv.Close()
	if l, err = listenUnix(sock); err != nil {
		t.Fatalf("listen again on a stale socket: %v", err)
	}
	l.Close()
	if err := probe(ctx, []string{"--socket", sock, "/healthz"}); err == nil {
		t.Error("probe succeeded with no agent on the socket")
	}
}
