package xds

import (
	"context"
	"fmt"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nodexds/nodexds/internal/poll"
)

// bulkyWorld serves n load assignments of about 4 KB each: together, more
// than a client's flow-control window and the server's write quota, so a
// response to all of them waits on a client that does not read.
func bulkyWorld(t *testing.T, o Options, n int) (*testServer, []string) {
	t.Helper()
	s := startServerWith(t, o)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bulky-%03d", i)
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: names[i]}
		loc := &endpointv3.LocalityLbEndpoints{}
		for e := range 100 {
			loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
				Endpoint: &endpointv3.Endpoint{Hostname: fmt.Sprintf("endpoint-%d.%s", e, names[i])}}})
		}
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
		s.world.mu.Lock()
		s.world.data[names[i]] = cla
		s.world.mu.Unlock()
	}
	return s, names
}

// dialDeaf opens an ADS stream whose client never reads: with gRPC's
// smallest windows, the server's Sends soon wait on it.
func dialDeaf(t *testing.T, s *testServer) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// subscribed is what the server has recorded of the stream's load
// assignment subscription.
func subscribed(s *testServer) []string {
	var out []string
	for _, c := range s.srv.Clients() {
		for _, ts := range c.Types {
			if ts.TypeURL == EndpointType {
				for _, r := range ts.Resources {
					out = append(out, r.Name)
				}
			}
		}
	}
	return out
}

// A stream reads and handles its client's requests while a response waits
// for that client to read: requests never queue behind a Send (before,
// they waited in an inbox, bounded per address, until the Send returned).
func TestRequestsAreHandledWhileAResponseWaitsForTheClient(t *testing.T) {
	s, names := bulkyWorld(t, Options{}, 100)
	c := dialDeaf(t, s)
	node := &corev3.Node{Id: "deaf"}
	if err := c.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: EndpointType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	// 400 KB: more than the client's window and the server's write quota.
	// Changes wake the stream name by name, so they may be sent in several
	// responses; the client's window fills before all are handed to gRPC.
	poll.Until(t, "responses carrying all 100 names are being sent, or one waits for the client", func() bool {
		prepared, pushed := responses(s)
		return sentNames(s) == 100 || pushed < prepared
	})
	more := append(slices.Clone(names), "one-more")
	if err := c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: EndpointType, ResourceNames: more}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the second request is handled while the first response waits", func() bool {
		return slices.Contains(subscribed(s), "one-more")
	})
}

// A client that takes no response within SendTimeout loses its connection,
// and the stream's goroutines and state go with it. (gRPC takes a response
// whatever its size while it has write quota; once the client's window is
// full and the quota spent, the Send of the next one waits.)
func TestAClientThatDoesNotReadLosesItsConnection(t *testing.T) {
	s, names := bulkyWorld(t, Options{Limits: Limits{SendTimeout: 200e6}}, 100)
	c := dialDeaf(t, s)
	if err := c.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "deaf"}, TypeUrl: EndpointType, ResourceNames: names[:99]}); err != nil {
		t.Fatal(err)
	}
	// The 99 names may be sent in several responses (changes wake the stream
	// name by name), and gRPC may take them all: only a response handed
	// over after them all, once the client's window is full, surely waits.
	poll.Until(t, "responses carrying all 99 names are being sent, or one waited too long", func() bool {
		return sentNames(s) == 99 || testutil.ToFloat64(s.metrics.LimitHits.WithLabelValues("send_timeout")) == 1
	})
	// One more name calls for that response. If the timeout has already
	// ended the stream, this request finds it gone: the outcome is the
	// same, so only the outcome is waited for, whenever the timeout fires.
	_ = c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: EndpointType, ResourceNames: names})
	poll.Check(t, func() string {
		timeouts := testutil.ToFloat64(s.metrics.LimitHits.WithLabelValues("send_timeout"))
		streams, connected := len(s.srv.Clients()), testutil.ToFloat64(s.metrics.ConnectedClients)
		if timeouts == 1 && streams == 0 && connected == 0 {
			return ""
		}
		return fmt.Sprintf("the send timeout ends the stream and its client is gone: send_timeout counted %v times, %d streams open, %v clients connected",
			timeouts, streams, connected)
	})
	for {
		if _, err := c.Recv(); err != nil {
			break // what was sent before the connection closed, then its end
		}
	}
}

// responses counts the responses the server has prepared, and those of
// them gRPC has taken.
func responses(s *testServer) (prepared, pushed int) {
	s.srv.mu.Lock()
	for _, st := range s.srv.streams {
		st.state.Lock()
		prepared += int(st.nonce)
		st.state.Unlock()
	}
	s.srv.mu.Unlock()
	return prepared, int(testutil.ToFloat64(s.metrics.Pushes.WithLabelValues("EDS")))
}

// sentNames counts the subscribed names the server has sent.
func sentNames(s *testServer) int {
	sent := 0
	for _, c := range s.srv.Clients() {
		for _, ts := range c.Types {
			for _, r := range ts.Resources {
				if r.Version != "" {
					sent++
				}
			}
		}
	}
	return sent
}
