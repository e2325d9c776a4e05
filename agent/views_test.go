package agent_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/discovery"
)

func TestAnotherNodesClientGetsItsNodesView(t *testing.T) {
	w, _, _, _ := localAndZone(t) // be1: on-a1 (node a1), on-a2 (node a2)
	a := startAgent(t, w)         // the agent of node a1
	own := dialWith(t, bootstrap.Options{Server: a.Addr, NodeName: "a1"}, "be1:8080")
	eventually(t, own, "on-a1")
	// A client of node a2 that reaches a1's agent (as its fallback) is
	// prioritized for a2, not for a1.
	other := dialWith(t, bootstrap.Options{Server: a.Addr, NodeName: "a2"}, "be1:8080")
	eventually(t, other, "on-a2")
	eventually(t, own, "on-a1")
}

// nodeAgent is an agent of one node that can be stopped and started again
// on the same address.
type nodeAgent struct {
	t       testing.TB
	w       *world
	node    string
	addr    string
	metrics *metrics.Metrics
	stop    func()
}

func (n *nodeAgent) start() {
	n.t.Helper()
	lis, err := net.Listen("tcp", n.addr)
	if err != nil {
		n.t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	reg := prometheus.NewRegistry()
	n.metrics = metrics.New(reg)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("NODEXDS_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", n.node)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, serve.Options{
			Config: agent.Config{
				NodeName:     n.node,
				Names:        names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
				DefaultTiers: topology.DefaultTiers,
				Coalesce:     10 * time.Millisecond,
			},
			Source:   &discovery.FileSource{Path: n.w.path, Poll: 10 * time.Millisecond, Log: log},
			XDS:      lis,
			Registry: reg, Metrics: n.metrics, Log: log,
		})
	}()
	n.stop = func() {
		cancel()
		if err := <-done; err != nil {
			n.t.Errorf("agent of %s: %v", n.node, err)
		}
		n.stop = nil
	}
	n.t.Cleanup(func() {
		if n.stop != nil {
			n.stop()
		}
	})
}

func TestFallbackServesThisNodesViewAndTheClientReturns(t *testing.T) {
	w, be1, local, _ := localAndZone(t)
	w.write()
	primary := &nodeAgent{t: t, w: w, node: "a1", addr: "127.0.0.1:0"}
	primary.start()
	fallback := &nodeAgent{t: t, w: w, node: "a2", addr: "127.0.0.1:0"}
	fallback.start()
	opts := bootstrap.Options{Server: primary.addr, Fallback: fallback.addr, NodeName: "a1"}

	early := dialWith(t, opts, "be1:8080")
	eventually(t, early, "on-a1")

	// The node's agent goes away. A client that starts now is served by
	// the fallback, with node a1's priorities.
	primary.stop()
	started := time.Now()
	late := dialWith(t, opts, "be1:8080")
	eventually(t, late, "on-a1")
	t.Logf("a client started while its agent is down reached its node's pod through the fallback in %v", time.Since(started).Round(time.Millisecond))
	eventually(t, early, "on-a1")

	// The agent comes back: the clients return to it, and follow what it
	// says from then on (names differ between the views, so they subscribe
	// afresh there rather than keep a listener without its routes).
	primary.start()
	waitFor(t, "the clients return to their node's agent", func() bool {
		return testutil.ToFloat64(primary.metrics.ConnectedClients) == 2 &&
			testutil.ToFloat64(fallback.metrics.ConnectedClients) == 0
	})
	w.remove(be1, local)
	w.write()
	eventually(t, late, "on-a2")
	eventually(t, early, "on-a2")
}
