package agent_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/poll"
)

// TestDrainOnShutdown: once serve.Run's ctx is done (SIGTERM), the agent at once
// reports not ready and refuses new connections, keeps serving and updating
// the ADS streams it has until the drain delay is over, then sends GOAWAY,
// cuts the streams (ADS streams never end by themselves) and returns, within
// the drain timeout however long the delay.
func TestDrainOnShutdown(t *testing.T) {
	for _, tc := range []struct {
		name           string
		delay, timeout time.Duration
		// goAwayAfter is the least time from SIGTERM to GOAWAY.
		goAwayAfter time.Duration
	}{
		// The delay leaves the test seconds to see the stream served before
		// GOAWAY, and the timeout seconds between the cut (by 90% of it, see
		// TestDrainPlan) and its end, so that a busy machine cannot make
		// either look late.
		{"open streams are served for the delay, then told to go away", 3 * time.Second, 20 * time.Second, 3 * time.Second},
		{"a delay beyond the timeout is cut short by the timeout", time.Minute, 10 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testDrain(t, tc.delay, tc.timeout, tc.goAwayAfter)
		})
	}
}

func testDrain(t *testing.T, delay, timeout, goAwayAfter time.Duration) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-local", "a1")
	w.write()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "probe.sock")
	probeLis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx, sigterm := context.WithCancel(context.Background())
	defer sigterm()
	returned := make(chan error, 1)
	go func() {
		returned <- serve.Run(ctx, serve.Options{
			Config: agent.Config{
				NodeName:     "a1",
				Names:        names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
				DefaultTiers: topology.DefaultTiers,
				Coalesce:     10 * time.Millisecond,
			},
			Source:     &discovery.FileSource{Path: w.path, Poll: 10 * time.Millisecond, Log: log},
			XDS:        lis,
			Probe:      probeLis,
			DrainDelay: delay, DrainTimeout: timeout,
			Log: log,
		})
	}()
	probe := probeClient(sock)
	pollUntil(t, "/readyz on the probe socket answers 200", func() bool { return probe("/readyz") == http.StatusOK })

	// A real grpc-go ADS stream, subscribed to be1's endpoints.
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	eds := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "drain-test"}, TypeUrl: xds.EndpointType, ResourceNames: []string{be1Cluster}}
	if err := ads.Send(eds); err != nil {
		t.Fatal(err)
	}
	responses := make(chan *discoveryv3.DiscoveryResponse, 10)
	streamEnd := make(chan error, 1)
	go func() {
		for {
			resp, err := ads.Recv()
			if err != nil {
				streamEnd <- err
				return
			}
			responses <- resp
		}
	}()
	first := receive(t, responses, streamEnd)
	if n := endpointsIn(t, first); n != 1 {
		t.Fatalf("first EDS response has %d endpoints, want 1", n)
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.EndpointType, ResourceNames: []string{be1Cluster},
		VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	sigterm()

	// At once: not ready, and no new connection is accepted, while the
	// stream is still open (GOAWAY comes after the delay).
	pollUntil(t, "/readyz answers 503 once draining", func() bool { return probe("/readyz") == http.StatusServiceUnavailable })
	if code := probe("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining = %d, want 200", code)
	}
	pollUntil(t, "new connections are refused once draining", func() bool {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	// The stream is still served: a change made now reaches it.
	w.startBackend(be1, "be1-zone", "a2")
	w.write()
	if n := endpointsIn(t, receive(t, responses, streamEnd)); n != 2 {
		t.Errorf("EDS response while draining has %d endpoints, want 2", n)
	}
	updated := time.Now()

	// GOAWAY: the channel's connection goes idle while the stream lives on.
	for s := conn.GetState(); s == connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(sctx, s) {
			t.Fatal("the connection never left READY: no GOAWAY")
		}
	}
	goAway := time.Now()
	select {
	case err := <-streamEnd:
		t.Fatalf("the stream ended (%v) before GOAWAY was seen", err)
	default:
	}
	if updated.After(goAway) {
		t.Errorf("GOAWAY came before the update was received")
	}
	if goAway.Sub(start) < goAwayAfter {
		t.Errorf("GOAWAY %s after SIGTERM, want no sooner than %s", goAway.Sub(start), goAwayAfter)
	}

	// Then the stream is cut, and Serve returns within the timeout.
	select {
	case err := <-streamEnd:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v, want Unavailable", err)
		}
	case <-time.After(poll.Timeout):
		t.Fatal("the ADS stream was never cut: GracefulStop is waiting for a stream that never ends")
	}
	select {
	case err := <-returned:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(poll.Timeout):
		t.Fatal("Serve did not return")
	}
	took := time.Since(start)
	if took > timeout {
		t.Errorf("Serve returned %s after SIGTERM, want within the %s drain timeout", took, timeout)
	}
	t.Logf("SIGTERM → GOAWAY %s, → Serve returned %s (delay %s, timeout %s)",
		goAway.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond), delay, timeout)
}

// probeClient returns a function that GETs a path over the unix socket and
// returns the status code (0 when the request fails).
func probeClient(sock string) func(path string) int {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	return func(path string) int {
		resp, err := c.Get("http://agent" + path)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
}

// pollUntil waits until cond holds; see poll.Until.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, cond)
}

// receive returns the stream's next response, failing if the stream ends or
// none comes within poll.Timeout.
func receive(t *testing.T, responses <-chan *discoveryv3.DiscoveryResponse, end <-chan error) *discoveryv3.DiscoveryResponse {
	t.Helper()
	select {
	case r := <-responses:
		return r
	case err := <-end:
		t.Fatalf("ADS stream ended: %v", err)
	case <-time.After(poll.Timeout):
		t.Fatalf("no ADS response within %v", poll.Timeout)
	}
	return nil
}

// endpointsIn counts the endpoints of an EDS response with one resource.
func endpointsIn(t *testing.T, r *discoveryv3.DiscoveryResponse) int {
	t.Helper()
	if len(r.GetResources()) != 1 {
		t.Fatalf("EDS response holds %d resources, want 1", len(r.GetResources()))
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := r.GetResources()[0].UnmarshalTo(&cla); err != nil {
		t.Fatal(errors.Join(errors.New("EDS resource"), err))
	}
	n := 0
	for _, l := range cla.GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	return n
}
