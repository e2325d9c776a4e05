package health

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent/metrics"
)

func TestBoundIsKeptWithoutChurn(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	cfg := DefaultConfig
	cfg.MaxEndpoints = 2
	p := NewProber(cfg, m, slog.New(slog.DiscardHandler))
	defer p.Close()
	target := func(i int) Target {
		return Target{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+i))}
	}
	three := []Target{target(1), target(2), target(3)}

	p.Track("a", three)
	if got := testutil.ToFloat64(m.HealthTracked); got != 2 {
		t.Fatalf("tracking %v endpoints, want the bound, 2", got)
	}
	// Rebuilding the cluster again and again must not evict anew each time.
	for range 5 {
		p.Track("a", three)
	}
	if got := testutil.ToFloat64(m.HealthEvictions); got != 1 {
		t.Errorf("%v evictions after repeated rebuilds, want 1", got)
	}
	if got := p.Status(target(1)); got != Unknown {
		t.Errorf("the evicted endpoint is %v, want Unknown", got)
	}

	// Room frees up: the endpoint left over is checked again.
	p.Track("a", []Target{target(1)})
	if got := testutil.ToFloat64(m.HealthTracked); got != 1 {
		t.Errorf("tracking %v endpoints, want 1", got)
	}
	p.Track("a", nil)
	p.Track("b", nil)
	if got := testutil.ToFloat64(m.HealthTracked); got != 0 {
		t.Errorf("tracking %v endpoints after every cluster left, want 0", got)
	}
	if len(p.over) != 0 || len(p.clusters) != 0 {
		t.Errorf("state left behind: over %v, clusters %v", p.over, p.clusters)
	}
}
