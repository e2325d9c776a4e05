package health

import (
	"context"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/agent/metrics"
)

// Config tunes active checking.
type Config struct {
	// Interval between Check calls where Watch is not implemented, and the
	// idle time after which TCP keepalive probes a quiet Watch connection: a
	// Watch stream is silent while nothing changes, so only probes can tell a
	// quiet server from a dead link. Kernel probes cost the agent nothing.
	Interval time.Duration
	// LivenessInterval is how often an open Watch stream is confirmed with a
	// Check call, which catches servers that hang with their sockets open
	// (TCP keepalive cannot). 0 disables it. It is an RPC per endpoint, so it
	// is kept slower than Interval.
	LivenessInterval time.Duration
	// Timeout bounds each Check, and the wait for a Watch stream's first message.
	Timeout time.Duration
	// UnhealthyThreshold failed checks in a row make an endpoint Unhealthy;
	// HealthyThreshold passed ones make it Healthy again. A status pushed on a
	// Watch stream counts at once: the server said so.
	UnhealthyThreshold, HealthyThreshold int
	// Jitter spreads checks by ±Jitter×Interval so thousands of endpoints are
	// not checked in lockstep.
	Jitter float64
	// MaxDials bounds connection attempts in flight across all endpoints.
	MaxDials int
	// MaxEndpoints bounds the endpoints checked at once; beyond it the least
	// recently needed are dropped (and served as Unknown).
	MaxEndpoints int
}

// DefaultConfig is what the agent's flags default to.
var DefaultConfig = Config{
	Interval: 5 * time.Second, LivenessInterval: 30 * time.Second, Timeout: time.Second,
	UnhealthyThreshold: 2, HealthyThreshold: 1,
	// About 85 KiB per endpoint (mostly gRPC's per-connection goroutines, see
	// docs/BENCHMARKS.md): 4000 fit the DaemonSet's memory limit.
	Jitter: 0.2, MaxDials: 32, MaxEndpoints: 4000,
}

// Prober checks endpoints with the gRPC health protocol: one long-lived
// Watch stream per endpoint (the server pushes changes), falling back to
// periodic Check where Watch is not implemented. It only checks what Track
// asks for, so only endpoints some client of this node uses.
type Prober struct {
	cfg     Config
	metrics *metrics.Metrics
	log     *slog.Logger
	dials   chan struct{} // semaphore for connection attempts

	mu       sync.Mutex
	probes   *simplelru.LRU[Target, *probe]
	clusters map[string]map[Target]bool
	// over holds evicted targets still listed by clusters (with how many),
	// left unchecked until room frees up: re-adding them on every rebuild
	// would evict another, whose change would trigger a rebuild, forever.
	over     map[Target]int
	changed  map[string]bool
	signal   chan struct{}
	evicting bool // set while Track adds, so removals there count as evictions
}

var _ Checker = (*Prober)(nil)

// probe is one endpoint being checked.
type probe struct {
	target   Target
	status   Status
	clusters map[string]bool
	cancel   context.CancelFunc
}

// NewProber returns a Prober; call Close to stop all checks.
func NewProber(cfg Config, m *metrics.Metrics, log *slog.Logger) *Prober {
	p := &Prober{
		cfg:      cfg,
		metrics:  m,
		log:      log,
		dials:    make(chan struct{}, max(cfg.MaxDials, 1)),
		clusters: map[string]map[Target]bool{},
		over:     map[Target]int{},
		changed:  map[string]bool{},
		signal:   make(chan struct{}, 1),
	}
	p.probes, _ = simplelru.NewLRU[Target, *probe](max(cfg.MaxEndpoints, 1), p.onRemove)
	return p
}

// Track implements Checker.
func (p *Prober) Track(cluster string, targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := make(map[Target]bool, len(targets))
	for _, t := range targets {
		want[t] = true
	}
	old := p.clusters[cluster]
	for t := range old {
		if !want[t] {
			p.untrack(cluster, t)
		}
	}
	if len(want) == 0 {
		delete(p.clusters, cluster)
	} else {
		p.clusters[cluster] = want
	}
	for t := range want {
		if pr, ok := p.probes.Get(t); ok { // Get marks it recently used
			pr.clusters[cluster] = true
			continue
		}
		if n, ok := p.over[t]; ok {
			if p.probes.Len() >= p.cfg.MaxEndpoints {
				if !old[t] {
					p.over[t] = n + 1
				}
				continue // still no room: it stays Unknown
			}
			delete(p.over, t) // room again: check it
		}
		ctx, cancel := context.WithCancel(context.Background())
		pr := &probe{target: t, clusters: map[string]bool{}, cancel: cancel}
		for c, ts := range p.clusters {
			if ts[t] {
				pr.clusters[c] = true
			}
		}
		p.evicting = true
		p.probes.Add(t, pr) // at the bound, evicts the least recently used
		p.evicting = false
		go p.run(ctx, pr)
	}
	p.metrics.HealthTracked.Set(float64(p.probes.Len()))
}

// untrack drops one cluster's interest in t, stopping its checks when no
// cluster is left.
func (p *Prober) untrack(cluster string, t Target) {
	if n, ok := p.over[t]; ok {
		if n <= 1 {
			delete(p.over, t)
		} else {
			p.over[t] = n - 1
		}
		return
	}
	if pr, ok := p.probes.Peek(t); ok {
		delete(pr.clusters, cluster)
		if len(pr.clusters) == 0 {
			p.probes.Remove(t)
		}
	}
}

// onRemove stops a probe that is no longer needed or was evicted. Called with
// p.mu held.
func (p *Prober) onRemove(t Target, pr *probe) {
	pr.cancel()
	if !p.evicting {
		return
	}
	// Evicted while still needed: it stays unchecked (Unknown) until there is
	// room, rather than coming back on the next rebuild and evicting another.
	p.metrics.HealthEvictions.Inc()
	p.log.Warn("health: tracking bound reached, no longer checking an endpoint", "addr", t.Addr.String(), "bound", p.cfg.MaxEndpoints)
	p.over[t] += len(pr.clusters)
	if pr.status != Unknown {
		for c := range pr.clusters {
			p.markChanged(c)
		}
	}
}

// Status implements Checker.
func (p *Prober) Status(t Target) Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr, ok := p.probes.Peek(t); ok {
		return pr.status
	}
	return Unknown
}

// Changed implements Checker.
func (p *Prober) Changed() <-chan struct{} { return p.signal }

// TakeChanged implements Checker.
func (p *Prober) TakeChanged() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Collect(maps.Keys(p.changed))
	clear(p.changed)
	return out
}

// Close stops every check.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes.Purge()
	clear(p.clusters)
	clear(p.over)
}

func (p *Prober) markChanged(cluster string) {
	p.changed[cluster] = true
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// set records a probe's new status and tells its clusters.
func (p *Prober) set(pr *probe, s Status) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr.status == s {
		return
	}
	if cur, ok := p.probes.Peek(pr.target); !ok || cur != pr {
		return // stopped meanwhile
	}
	pr.status = s
	p.metrics.HealthTransitions.WithLabelValues(s.String()).Inc()
	p.log.Info("health: endpoint changed", "addr", pr.target.Addr.String(), "service", pr.target.Service, "status", s.String())
	for c := range pr.clusters {
		p.markChanged(c)
	}
}

// run checks one endpoint until ctx is cancelled.
func (p *Prober) run(ctx context.Context, pr *probe) {
	dialer := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     p.cfg.Interval,
		Interval: p.cfg.Timeout,
		Count:    p.cfg.UnhealthyThreshold,
	}}
	conn, err := grpc.NewClient(pr.target.Addr.String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"pick_first": {}}]}`),
	)
	if err != nil { // only for malformed targets, which an AddrPort never is
		p.log.Error("health: cannot create client", "addr", pr.target.Addr.String(), "error", err)
		return
	}
	defer conn.Close()
	c := &checker{p: p, pr: pr, conn: conn, client: healthpb.NewHealthClient(conn)}
	c.loop(ctx)
}

// checker holds one probe's counters; only its goroutine touches them.
type checker struct {
	p                   *Prober
	pr                  *probe
	conn                *grpc.ClientConn
	client              healthpb.HealthClient
	failures, successes int
}

func (c *checker) loop(ctx context.Context) {
	watch := true
	for ctx.Err() == nil {
		var err error
		if watch {
			err = c.watch(ctx)
			if status.Code(err) == codes.Unimplemented {
				watch = false
				continue
			}
		} else {
			err = c.check(ctx)
			if status.Code(err) == codes.Unimplemented {
				c.p.metrics.HealthUnimplemented.Inc()
				c.p.log.Warn("health: endpoint has no gRPC health service; treating it as healthy (set nodexds.io/health-check: \"off\" to skip it)",
					"addr", c.pr.target.Addr.String())
				c.p.set(c.pr, Healthy)
				<-ctx.Done()
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.fail(watch)
		}
		// Confirm a first failure quickly; otherwise keep the interval.
		delay := c.p.cfg.Interval
		if c.failures > 0 && c.failures < c.p.cfg.UnhealthyThreshold {
			delay = min(delay, time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.jitter(delay)):
		}
	}
}

// watch runs one Watch stream until it fails. It returns the stream's error;
// results it receives are applied as they come.
func (c *checker) watch(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	release := c.dial(ctx)
	type result struct {
		resp *healthpb.HealthCheckResponse
		err  error
	}
	results := make(chan result, 1)
	go func() {
		stream, err := c.client.Watch(ctx, &healthpb.HealthCheckRequest{Service: c.pr.target.Service})
		for err == nil {
			var r *healthpb.HealthCheckResponse
			if r, err = stream.Recv(); err == nil {
				select {
				case results <- result{resp: r}:
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case results <- result{err: err}:
		case <-ctx.Done():
		}
	}()
	first := time.NewTimer(c.p.cfg.Timeout)
	defer first.Stop()
	var live <-chan time.Time
	if c.p.cfg.LivenessInterval > 0 {
		t := time.NewTicker(c.jitter(c.p.cfg.LivenessInterval))
		defer t.Stop()
		live = t.C
	}
	for {
		select {
		case <-ctx.Done():
			release()
			return ctx.Err()
		case r := <-results:
			release()
			first.Stop()
			if r.err != nil {
				return r.err
			}
			c.apply("watch", r.resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, true)
		case <-first.C:
			release()
			return status.Error(codes.DeadlineExceeded, "no health status within the timeout")
		case <-live:
			// A server can hang with its sockets open: only a call tells.
			if err := c.check(ctx); err != nil && status.Code(err) != codes.Unimplemented {
				if c.failures >= c.p.cfg.UnhealthyThreshold {
					return err // reconnect
				}
			}
		}
	}
}

// check runs one Check call and applies its result.
func (c *checker) check(ctx context.Context) error {
	release := c.dial(ctx)
	ctx, cancel := context.WithTimeout(ctx, c.p.cfg.Timeout)
	defer cancel()
	r, err := c.client.Check(ctx, &healthpb.HealthCheckRequest{Service: c.pr.target.Service})
	release()
	if status.Code(err) == codes.Unimplemented {
		return err
	}
	if err != nil {
		c.fail(false)
		return err
	}
	c.apply("check", r.GetStatus() == healthpb.HealthCheckResponse_SERVING, false)
	return nil
}

// dial takes a connection-attempt slot when the channel is not connected,
// and returns the function that gives it back.
func (c *checker) dial(ctx context.Context) func() {
	if c.conn.GetState() == connectivity.Ready {
		return func() {}
	}
	select {
	case c.p.dials <- struct{}{}:
	case <-ctx.Done():
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { <-c.p.dials }) }
}

func (c *checker) fail(watch bool) {
	mode := "check"
	if watch {
		mode = "watch"
	}
	c.p.metrics.HealthChecks.WithLabelValues(mode, "fail").Inc()
	c.successes = 0
	c.failures++
	if c.failures >= c.p.cfg.UnhealthyThreshold {
		c.p.set(c.pr, Unhealthy)
	}
}

// apply records a result. Pushed results (Watch) count at once.
func (c *checker) apply(mode string, serving, pushed bool) {
	if !serving {
		c.p.metrics.HealthChecks.WithLabelValues(mode, "fail").Inc()
		c.successes = 0
		c.failures++
		if pushed || c.failures >= c.p.cfg.UnhealthyThreshold {
			c.failures = max(c.failures, c.p.cfg.UnhealthyThreshold)
			c.p.set(c.pr, Unhealthy)
		}
		return
	}
	c.p.metrics.HealthChecks.WithLabelValues(mode, "ok").Inc()
	c.failures = 0
	c.successes++
	if pushed || c.successes >= c.p.cfg.HealthyThreshold {
		c.p.set(c.pr, Healthy)
	}
}

func (c *checker) jitter(d time.Duration) time.Duration {
	j := c.p.cfg.Jitter
	if j <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
}
