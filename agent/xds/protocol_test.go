package xds

import (
	"context"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/internal/poll"
)

// expectEnd waits for the stream to end and checks its status.
func (c *adsClient) expectEnd(code codes.Code, msgPart string) {
	c.t.Helper()
	select {
	case r, ok := <-c.responses:
		if ok {
			c.t.Fatalf("got a response holding %d resources, want the stream to end with %v", len(r.GetResources()), code)
		}
	case <-time.After(poll.Timeout):
		c.t.Fatalf("stream still open, want it to end with %v", code)
	}
	_, err := c.stream.Recv()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		c.t.Fatalf("stream ended with %v, want %v mentioning %q", err, code, msgPart)
	}
}

func TestUnknownListenerNeverHoldsBackTheKnownOne(t *testing.T) {
	s := startServer(t, "known")
	s.world.hold("unknown") // the agent has not got to it yet
	c := dial(t, s)
	c.typ = ListenerType
	c.request("known", "unknown")
	c.expect("known")
	// Once the agent finds it does not exist, the full state says so: the
	// known listener alone.
	s.world.release(ListenerType, "unknown")
	c.expect("known")
	c.request("known", "unknown") // ACK
	c.expectNothing()
}

func TestWildcardSubscriptionsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		typ   string
		names []string
	}{
		{"a first LDS request naming nothing", ListenerType, nil},
		{"a first CDS request naming nothing", ClusterType, nil},
		{"an LDS request for *", ListenerType, []string{"*"}},
		{"a CDS request for * beside a name", ClusterType, []string{"be1", "*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, "be1")
			c := dial(t, s)
			c.typ = tc.typ
			c.request(tc.names...)
			c.expectEnd(codes.InvalidArgument, "name the resources you want")
		})
	}
}

func TestEmptyRequestAfterNamingUnsubscribes(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	c.request() // no names, after naming some: "none", not a wildcard
	waitFor(t, func() bool { return !s.world.cache.Subscribed(ClusterType, "be1") })
	c.request("be1")
	c.expect("be1") // the stream is alive and serves again
}

func TestUnknownTypeURLEndsTheStream(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.typ = "type.googleapis.com/" + strings.Repeat("x", 100<<10)
	c.request("be1")
	c.expectEnd(codes.InvalidArgument, "is not served")
}

func TestStaleAndForgedNoncesNeitherACKNorNACK(t *testing.T) {
	s := startServer(t, "be1", "be2")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	older := c.last
	c.request("be1", "be2")
	c.expect("be1", "be2")
	latest := c.last

	requests := func() uint64 { _, ts := cdsOf(t, s); return ts.Requests }
	n := requests()
	c.last = older // rejects the first response after the second was sent: stale
	c.nack("bad")
	waitFor(t, func() bool { return requests() == n+1 })
	c.last = &discoveryv3.DiscoveryResponse{Nonce: "999999", VersionInfo: "forged"} // never sent
	c.nack("forged")
	waitFor(t, func() bool { return requests() == n+2 })
	c.last = latest
	c.request("be1", "be2") // ACK of the latest
	ts := waitStates(t, s, map[string]ResourceState{"be1": Synced, "be2": Synced})
	// The first response was ACKed by the request that added be2.
	if ts.NACKs != 0 || ts.ACKs != 2 {
		t.Errorf("NACKs = %d, ACKs = %d; want a stale and a forged NACK ignored, two ACKs", ts.NACKs, ts.ACKs)
	}
	if got := testutil.ToFloat64(s.metrics.NACKs.WithLabelValues("CDS", "other")); got != 0 {
		t.Errorf("NACK counter = %v, want 0", got)
	}
	c.expectNothing()
}

func TestNACKRepeatedOnLaterRequestsCountsOnce(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	c.nack("bad")
	waitFor(t, func() bool { _, ts := cdsOf(t, s); return ts.NACKs == 1 })
	n := func() uint64 { _, ts := cdsOf(t, s); return ts.Requests }()
	c.nack("bad") // the client repeats its error with the same nonce
	waitFor(t, func() bool { _, ts := cdsOf(t, s); return ts.Requests == n+1 })
	if got := testutil.ToFloat64(s.metrics.NACKs.WithLabelValues("CDS", "other")); got != 1 {
		t.Errorf("NACK counter = %v, want 1", got)
	}
	c.expectNothing() // a NACKed version is not resent
}

// Delta ADS is refused: every gRPC client speaks state-of-the-world, and
// one asking for delta is told so rather than left waiting.
func TestDeltaADSIsUnimplemented(t *testing.T) {
	s := startServer(t)
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(context.Background())
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "state-of-the-world") {
		t.Errorf("delta stream ended %v, want Unimplemented: state-of-the-world only", err)
	}
}
