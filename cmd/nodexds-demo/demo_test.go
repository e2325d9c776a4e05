package main

import (
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the demo's client process too: the demo
// starts it as os.Executable() with clientCommand, as it does its own binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == clientCommand {
		if err := demoClient(context.Background(), os.Args[2:]); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDemo runs the demo as `make demo` does and reads what it printed: the
// client stays on its node, fails over to its zone when node-a's backends
// die, and returns when they come back. The demo itself fails if traffic
// does not move within 30 s. Then a GRPCRoute splits 90/10 to a canary and
// gives it everything, node-first on both sides.
func TestDemo(t *testing.T) {
	// The backends listen on 127.0.10.x: all of 127/8 is loopback on Linux,
	// not on every OS.
	lis, err := net.Listen("tcp", "127.0.10.1:0")
	if err != nil {
		t.Skipf("the demo's backend addresses are not available here: %v", err)
	}
	lis.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	if err := demo(ctx, []string{"-rpcs", "6"}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []*regexp.Regexp{
		// Round 1: only node-a's backends answer.
		regexp.MustCompile(`1\. all pods up[^\n]*\n(  Hello from be1-a-\d\n)+  6 RPCs: (be1-a-\d \(node-a\) ×\d(, )?)+\n`),
		regexp.MustCompile(`failed over to the zone tier by itself in \S+`),
		// Round 2: node-b (same zone) only; never node-c in the other zone.
		regexp.MustCompile(`failed over[^\n]*\n(  Hello from be1-b-0\n)+  6 RPCs: be1-b-0 \(node-b\) ×6\n`),
		regexp.MustCompile(`traffic returned to node-a in \S+`),
		regexp.MustCompile(`returned to node-a[^\n]*\n(  Hello from be1-a-\d\n)+  6 RPCs: (be1-a-\d \(node-a\) ×\d(, )?)+\n`),
		// Round 4: a 90/10 split, each side on node-a only: be1's local pods
		// and the canary's local pod, never canary-c-0 on node-c.
		regexp.MustCompile(`4\. a GRPCRoute[^\n]*\n(  Hello from (be1-a-\d|canary-a-0)\n)+  60 RPCs: (be1-a-\d \(node-a\) ×\d+, )+canary-a-0 \(node-a\) ×\d+\n`),
		// Round 5: the canary takes all, still node-first.
		regexp.MustCompile(`every RPC goes to the canary[^\n]*\n(  Hello from canary-a-0\n)+  6 RPCs: canary-a-0 \(node-a\) ×6\n`),
	} {
		if !want.MatchString(got) {
			t.Errorf("the demo's output does not match %s:\n%s", want, got)
		}
	}
}
