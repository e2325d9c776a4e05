package xds

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/nodexds/nodexds/internal/poll"
)

// Names are bounded in all, not only per address: many addresses would
// otherwise multiply MaxNamesPerPeer (issue 11, attack a over 25 addresses).
func TestNamesBeyondTheTotalEndTheStreamThatAddsThem(t *testing.T) {
	s := startServerWith(t, Options{Limits: Limits{MaxNames: 3}}, "a", "b", "c", "d")
	first := dial(t, s)
	first.request("a", "b")
	first.expect("a", "b")

	second := dial(t, s)
	second.request("c", "d") // 4 in all
	second.expectEnd(codes.ResourceExhausted, "more than 3 names in all")

	third := dial(t, s)
	third.request("c") // 3 in all: the refused stream's names were never counted
	third.expect("c")
}

func TestNamesLongerThanAnyServiceAreIgnored(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("be1", strings.Repeat("x", maxNameLen+1))
	c.expect("be1")
	if n := testutil.ToFloat64(s.metrics.LimitHits.WithLabelValues("name_length")); n != 1 {
		t.Errorf("name_length limit hit %v times, want 1", n)
	}
	if n := len(s.srv.Clients()[0].Types[0].Resources); n != 1 {
		t.Errorf("the stream keeps %d names, want 1", n)
	}
}

// Requests wait in a stream's inbox only until it handles them; their bytes
// count against the peer while they wait, and no longer.
func TestPendingRequestBytesAreBoundedPerPeer(t *testing.T) {
	names := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("name-%04d", i)
		}
		return out
	}
	limit := pendingSize(&discoveryv3.DiscoveryRequest{ResourceNames: names(100)}) + 100
	s := startServerWith(t, Options{Limits: Limits{MaxPendingBytesPerPeer: limit}}, "name-0000")
	for range 3 { // each handled, so the next fits again
		c := dial(t, s)
		c.request(names(100)...)
		c.expectHolding("name-0000")
	}
	c := dial(t, s)
	c.request(names(110)...)
	c.expectEnd(codes.ResourceExhausted, "wait unhandled")
	if n := testutil.ToFloat64(s.metrics.LimitHits.WithLabelValues("pending_bytes_per_peer")); n != 1 {
		t.Errorf("pending_bytes_per_peer limit hit %v times, want 1", n)
	}
}

// expectHolding waits for a response that holds name, past others (names
// are resolved one by one, each answered as it comes).
func (c *adsClient) expectHolding(name string) {
	c.t.Helper()
	timeout := time.After(poll.Timeout)
	for {
		select {
		case r, ok := <-c.responses:
			if !ok {
				c.t.Fatalf("stream ended, want a response holding %s", name)
			}
			c.last = r
			if slices.Contains(c.got(), name) {
				return
			}
		case <-timeout:
			c.t.Fatalf("no response holding %s", name)
		}
	}
}
