package agent_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/echo"
)

// funcSource hands the agent's sink to the test.
type funcSource struct {
	initial []discovery.Event
	sink    chan func(discovery.Event)
}

func (s *funcSource) Start(_ context.Context, sink func(discovery.Event)) error {
	for _, e := range s.initial {
		sink(e)
	}
	s.sink <- sink
	return nil
}

// BenchmarkChangeToClient measures, in process, the time from a discovery
// event reaching the agent to a real grpc-go xDS client's next RPC landing
// where the change says: the agent's work, the ADS push, the client's
// balancer update and one RPC. Each iteration moves the node-local endpoint
// between two backends.
func BenchmarkChangeToClient(b *testing.B) {
	key := discovery.ServiceKey{Namespace: "default", Name: "be1"}
	var backends []netip.AddrPort
	for _, name := range []string{"x", "y"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := echo.Serve(lis, name)
		b.Cleanup(srv.Stop)
		backends = append(backends, netip.MustParseAddrPort(lis.Addr().String()))
	}
	// slice puts backend local on this node (a1) and the other on a2. The
	// two listen on different ports, so each gets a slice of its own.
	slices := func(local int) []discovery.Event {
		var evs []discovery.Event
		for i, ap := range backends {
			node := "a2"
			if i == local {
				node = "a1"
			}
			evs = append(evs, discovery.Event{Slice: &discovery.Slice{
				Service: key, Name: []string{"x", "y"}[i], AddressType: "IPv4",
				Ports:     []discovery.Port{{Name: "grpc", Port: int32(ap.Port())}},
				Endpoints: []discovery.SliceEndpoint{{Addr: ap.Addr(), Node: node, Ready: true, Serving: true, Pod: []string{"x", "y"}[i]}},
			}})
		}
		return evs
	}
	src := &funcSource{sink: make(chan func(discovery.Event), 1), initial: append([]discovery.Event{
		{Node: &discovery.Node{Name: "a1", Zone: "a", Region: "r"}},
		{Node: &discovery.Node{Name: "a2", Zone: "a", Region: "r"}},
		{Service: &discovery.Service{Key: key, IPFamily: "IPv4", Ports: []discovery.Port{{Name: "grpc", Port: 8080}}}},
	}, slices(0)...)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go serve.Run(ctx, serve.Options{
		Config: agent.Config{
			NodeName: "a1", Names: names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
			DefaultTiers: topology.DefaultTiers, Coalesce: 10 * time.Millisecond,
		},
		Source: src, XDS: lis, Log: slog.New(slog.DiscardHandler),
	})
	sink := <-src.sink

	bs, _ := bootstrap.JSON(bootstrap.Options{Server: lis.Addr().String(), NodeID: "bench"})
	r, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		b.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///be1:8080", grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	until := func(want string) {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := echo.Hello(rctx, cc, grpc.WaitForReady(true))
			rcancel()
			if err != nil {
				b.Fatal(err)
			}
			if got == want {
				return
			}
		}
		b.Fatalf("RPCs never reached %s", want)
	}
	// Warm up: reach both backends once, so iterations measure updates, not dials.
	until("x")
	for _, e := range slices(1) {
		sink(e)
	}
	until("y")
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		local := i % 2
		// Wait out the coalescing window so every change is a leading edge.
		b.StopTimer()
		time.Sleep(15 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		for _, e := range slices(local) {
			sink(e)
		}
		until([]string{"x", "y"}[local])
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slicesSort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func slicesSort(d []time.Duration) { slices.Sort(d) }
