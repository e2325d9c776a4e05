package xds

import (
	"slices"
	"strings"
	"testing"
	"time"

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
