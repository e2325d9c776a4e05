// Package serve runs a whole agent process: the pipeline (package agent),
// the ADS server (xds), and the admin, probe and debug ports (admin); and
// drains ADS on the way out.
package serve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/admin"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
	"github.com/nodexds/nodexds/internal/schedwait"
)

// Options configure a whole agent process.
type Options struct {
	agent.Config
	Source discovery.Source
	// XDS is where ADS is served. Admin (optional) serves /metrics, /healthz
	// and /readyz: what probes and Prometheus need, nothing about Services or
	// clients. Debug (optional; keep it on loopback) serves /debug/services,
	// /debug/clients and, on the same listener, gRPC: CSDS
	// (envoy.service.status.v3).
	XDS, Admin, Debug net.Listener
	// ListenXDS, used when XDS is nil, opens the ADS listener once the
	// initial state is applied: with SO_REUSEPORT, a socket listening before
	// the agent can answer would get its share of new connections and keep
	// them waiting.
	ListenXDS func() (net.Listener, error)
	// Probe (optional) serves only /healthz and /readyz, for probes that
	// must reach this agent when another one shares the node's ports (a
	// unix socket in the pod's own directory).
	Probe net.Listener
	// DrainDelay and DrainTimeout shape the exit once ctx is done (see
	// drain).
	DrainDelay, DrainTimeout time.Duration
	// Pprof adds net/http/pprof's handlers under /debug/pprof/ on Debug.
	Pprof bool
	// SteadyGCPercent, if positive, is the GOGC set once the initial state
	// is applied (the start keeps the process's, for speed).
	SteadyGCPercent int
	// StuckAfter is how long the event loop may make no progress before
	// /healthz fails; 0 means agent.DefaultStuckAfter.
	StuckAfter time.Duration

	Reporter agent.Reporter
	Checker  health.Checker
	// Admit decides which clients are served (nil: all); Limits bound what
	// each may cost.
	Admit  xds.AdmitFunc
	Limits xds.Limits
	// Registry is served on /metrics; Metrics must be registered with it.
	// When both are nil, fresh ones are made.
	Registry *prometheus.Registry
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	// Synced, if set, runs in a goroutine of its own once the initial state
	// is applied, with the agent, until ctx is done (e.g. the route status
	// writer, which reads the agent's model).
	Synced func(ctx context.Context, a *agent.Agent)
}

// MaxRequestBytes is the largest ADS request accepted (RESOURCE_EXHAUSTED
// beyond): 10,000 names of 100 bytes.
const MaxRequestBytes = 1 << 20

// NewRegistry returns a registry with the Go runtime and process
// collectors, and the time the process's threads waited for a CPU.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		schedwait.NewCollector())
	return reg
}

// Run runs an agent until ctx is done. ADS is served only after the source's
// initial state has been applied: a client reconnecting to a restarted agent
// must never be told about a half-read cluster.
func Run(ctx context.Context, o Options) error {
	reg, m := o.Registry, o.Metrics
	if reg == nil {
		reg = NewRegistry()
	}
	if m == nil {
		m = metrics.New(reg)
	}
	cache := xds.NewCache()
	a := agent.New(o.Config, cache, o.Checker, o.Reporter, m, o.Log)

	// The agent and its source outlive ctx while ADS drains, so the streams
	// still open keep getting updates. Until ADS is served, ctx stops all.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	detach := context.AfterFunc(ctx, cancel)
	var ready atomic.Bool
	errc := make(chan error, 5) // one per goroutine that sends: Run, admin, debug, probe, ADS
	go func() { errc <- a.Run(runCtx) }()

	ads := xds.NewServer(cache, m, o.Log, xds.Options{Limits: o.Limits.WithDefaults(), Admit: o.Admit, Absent: a.Absent, Key: a.CacheKey})
	stuckAfter := cmp.Or(o.StuckAfter, agent.DefaultStuckAfter)
	probes := admin.Probes{Ready: ready.Load, Live: func() error { return a.LoopHealth(stuckAfter) }}
	defer servePorts(o, reg, probes, a, ads, errc)()

	start := time.Now()
	if err := o.Source.Start(runCtx, a.Enqueue); err != nil {
		return err
	}
	if err := a.Sync(runCtx); err != nil {
		return err
	}
	if !detach() {
		return ctx.Err()
	}
	m.SourceSyncDuration.Set(time.Since(start).Seconds())
	if o.Synced != nil {
		go o.Synced(ctx, a)
	}
	o.Log.Info("initial state applied", "took", time.Since(start).Round(time.Millisecond))
	// The initial lists leave garbage several times the model's size:
	// collect it and hand its pages back now, once, rather than keep them
	// resident until the runtime's background scavenger gets to them.
	if o.SteadyGCPercent > 0 {
		debug.SetGCPercent(o.SteadyGCPercent)
	}
	go debug.FreeOSMemory()
	go releaseAfterBursts(runCtx)
	return serveADS(ctx, o, ads, &ready, errc)
}

// servePorts serves the admin, debug and probe ports that o has listeners
// for; an error other than their closing goes to errc. It returns what
// closes them.
func servePorts(o Options, reg prometheus.Gatherer, p admin.Probes, v admin.Views, ads *xds.Server, errc chan<- error) (closeAll func()) {
	var closers []func()
	serve := func(name string, srv *http.Server, lis net.Listener) {
		go func() {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s server: %w", name, err)
			}
		}()
		closers = append(closers, func() { srv.Close() })
	}
	if o.Admin != nil {
		serve("admin", admin.Server(reg, p), o.Admin)
	}
	if o.Debug != nil {
		d := admin.NewDebug(v, ads, o.Names, o.Pprof)
		closers = append(closers, d.Stop) // after its server is closed
		serve("debug", d.Server(), o.Debug)
	}
	if o.Probe != nil {
		serve("probe", admin.ProbeServer(p), o.Probe)
	}
	return func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}
}

// serveADS serves ADS and reports ready until ctx is done, then drains; or
// until one of the process's servers fails, which it returns.
func serveADS(ctx context.Context, o Options, ads *xds.Server, ready *atomic.Bool, errc chan error) error {
	g := ads.Transport(MaxRequestBytes)
	raw := o.XDS
	if raw == nil {
		var err error
		if raw, err = o.ListenXDS(); err != nil {
			return fmt.Errorf("ADS listener: %w", err)
		}
	}
	lis := ads.Listener(raw)
	go func() { errc <- g.Serve(lis) }()
	ready.Store(true)
	o.Log.Info("serving ADS", "addr", raw.Addr().String(), "node", o.NodeName)

	select {
	case <-ctx.Done():
	case err := <-errc:
		ready.Store(false)
		g.Stop()
		return err
	}
	ready.Store(false)
	drain(g, lis, o.DrainDelay, o.DrainTimeout, o.Log)
	return nil
}
