package agent_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/health"
	"github.com/nodexds/nodexds/internal/poll"
)

// flapper is a Checker whose first tracked endpoint flips between healthy
// and unhealthy each time flip is called: a health checker reporting an
// endpoint that flaps as fast as it likes.
type flapper struct {
	mu      sync.Mutex
	cluster string
	target  health.Target
	flips   atomic.Int64
	changed chan struct{}
}

func newFlapper() *flapper { return &flapper{changed: make(chan struct{}, 1)} }

func (f *flapper) Track(cluster string, targets []health.Target) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cluster == "" && len(targets) > 0 {
		f.cluster, f.target = cluster, targets[0]
	}
	return false
}

func (f *flapper) Status(t health.Target) health.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t == f.target && f.flips.Load()%2 == 1 {
		return health.Unhealthy
	}
	return health.Healthy
}

func (f *flapper) Changed() <-chan struct{} { return f.changed }

func (f *flapper) TakeChanged() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []string{f.cluster}
}

func (f *flapper) tracking() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cluster != ""
}

func (f *flapper) flip() {
	f.flips.Add(1)
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func TestFlappingEndpointPushesAtMostOncePerWindow(t *testing.T) {
	const (
		window   = 100 * time.Millisecond
		rate     = 100 // flips per second
		duration = 2 * time.Second
	)
	w, _, _, _ := localAndZone(t)
	f := newFlapper()
	a := startAgent(t, w, func(o *serve.Options) { o.Checker, o.Coalesce = f, window })
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "on-a1")
	waitFor(t, "the checker tracks be1", f.tracking)

	eds := func() float64 { return testutil.ToFloat64(a.Metrics.Pushes.WithLabelValues("EDS")) }
	rebuilds := func() float64 { return testutil.ToFloat64(a.Metrics.Rebuilds) }
	before, rebuiltBefore := eds(), rebuilds()
	// Flip for duration, and on until flaps are seen (5 rebuilds) and reach
	// the client (a push), however slowly the machine lets the agent go.
	start := time.Now()
	tick := time.NewTicker(time.Second / rate)
	for time.Since(start) < duration || rebuilds()-rebuiltBefore < 5 || eds()-before < 1 {
		if time.Since(start) > poll.Timeout {
			t.Fatalf("%d flips in %v gave %v rebuilds and %v EDS pushes, want at least 5 and 1: flaps unseen",
				f.flips.Load(), poll.Timeout, rebuilds()-rebuiltBefore, eds()-before)
		}
		<-tick.C
		f.flip()
	}
	tick.Stop()
	// Pushes first: a push counted has its rebuild counted too. Then the
	// time: every rebuild counted began within it.
	pushes, rebuilt := eds()-before, rebuilds()-rebuiltBefore
	elapsed := time.Since(start)

	// One rebuild at the first flip, then at most one per window; a flip
	// handled at its own rate would be one per flip. Pushes are fewer than
	// rebuilds: a window holding an even number of flips ends where it
	// began.
	limit := float64(elapsed/window) + 3
	if rebuilt > limit {
		t.Errorf("%d flips in %v gave %v rebuilds, want at most %v (one per %v window)",
			f.flips.Load(), elapsed.Round(time.Millisecond), rebuilt, limit, window)
	}
	if pushes > rebuilt {
		t.Errorf("%d flips gave %v EDS pushes, want at most one per rebuild (%v)", f.flips.Load(), pushes, rebuilt)
	}
	t.Logf("%d flips in %v: %v rebuilds (at most %v allowed), %v EDS pushes with a %v window",
		f.flips.Load(), elapsed.Round(time.Millisecond), rebuilt, limit, pushes, window)
}
