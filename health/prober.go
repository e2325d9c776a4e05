package health

import (
	"context"
	"crypto/tls"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
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
	// Timeout bounds each connection attempt, each Check, and the wait for a
	// Watch stream's first message. A connection that lets it pass is closed
	// and dialled afresh.
	Timeout time.Duration
	// UnhealthyThreshold failed results in a row make an endpoint Unhealthy;
	// HealthyThreshold passed ones make it Healthy again. A result is a
	// message pushed on a Watch stream, a Check answer, or a failure to get
	// either; all count alike. A result that does not settle the status yet
	// is confirmed with Check calls ConfirmInterval apart.
	UnhealthyThreshold, HealthyThreshold int
	// Jitter spreads checks by ±Jitter×Interval so thousands of endpoints are
	// not checked in lockstep.
	Jitter float64
	// MaxDials bounds connection attempts in flight across all endpoints.
	MaxDials int
	// MaxEndpoints is the budget of endpoints checked at once, shared fairly
	// among the clusters tracked (see allocate). Endpoints beyond it are not
	// checked: Status reports Unknown, and Unchecked lists them.
	MaxEndpoints int
	// Linger keeps an endpoint checked for this long after the last cluster
	// listing it is untracked, in whatever the budget leaves over: a client
	// that comes back (a job, a restarted pod) is then served what the agent
	// still knows, not an endpoint it last saw healthy. 0 stops checks at
	// once.
	Linger time.Duration
	// TLS gives the TLS settings of the checks of targets with an Identity
	// (the agent's certificate, and the server certificates it accepts),
	// read at every connection so that rotated files are used. nil: such
	// targets are checked in plaintext.
	TLS func(identity string) (*tls.Config, error)
}

// ConfirmInterval is the pace of the Check calls that confirm a result which
// has not reached its threshold yet: short, so that a threshold of 2 costs
// about half a second, not a whole Interval.
func (c Config) ConfirmInterval() time.Duration { return min(c.Interval, 500*time.Millisecond) }

// DefaultConfig is what the agent's flags default to.
var DefaultConfig = Config{
	Interval: 5 * time.Second, LivenessInterval: 30 * time.Second, Timeout: time.Second,
	UnhealthyThreshold: 2, HealthyThreshold: 1, Linger: 5 * time.Minute,
	// Each checked endpoint holds a goroutine and a connection
	// (BenchmarkWatch, docs/health-cost.md): MaxEndpoints keeps what
	// checking costs a small part of the agent's memory limit.
	Jitter: 0.2, MaxDials: 32, MaxEndpoints: 4000,
}

// Prober checks endpoints with the gRPC health protocol: one long-lived
// Watch stream per endpoint (the server pushes changes), falling back to
// periodic Check where Watch is not implemented. It only checks what Track
// asks for, so only endpoints some client of this node uses, and at most
// Config.MaxEndpoints of them.
type Prober struct {
	cfg     Config
	metrics *Metrics
	log     *slog.Logger
	dials   chan struct{} // semaphore for connection attempts

	mu       sync.Mutex
	clusters map[string][]Target // as tracked: priority order, no repeats
	names    []string            // the keys of clusters, sorted: the budget's fixed order
	probes   map[Target]*probe   // the endpoints checked, lingering ones included
	changed  map[string]bool
	signal   chan struct{}
	expiry   *time.Timer // ends the earliest linger; nil when none lingers
	closed   bool
}

var _ Checker = (*Prober)(nil)

// probe is one endpoint being checked. Its goroutine owns the checking; the
// fields below are guarded by Prober.mu.
type probe struct {
	target   Target
	status   Status
	clusters []string  // clusters listing target, told when status changes
	until    time.Time // when no cluster lists it: the end of its linger
	cancel   context.CancelFunc
}

// NewProber returns a Prober; call Close to stop all checks.
func NewProber(cfg Config, m *Metrics, log *slog.Logger) *Prober {
	return &Prober{
		cfg:      cfg,
		metrics:  m,
		log:      log,
		dials:    make(chan struct{}, max(cfg.MaxDials, 1)),
		clusters: map[string][]Target{},
		probes:   map[Target]*probe{},
		changed:  map[string]bool{},
		signal:   make(chan struct{}, 1),
	}
}

// Track implements Checker. targets must be in the cluster's priority order
// (this node's endpoints first): within the cluster's share of the budget,
// the first ones are checked.
func (p *Prober) Track(cluster string, targets []Target) (stale bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, had := p.clusters[cluster]
	if p.closed || slices.Equal(old, targets) && (had || len(targets) == 0) {
		return false // a rebuild that changed nothing here (e.g. after a health change)
	}
	targets = unique(targets)
	i, found := slices.BinarySearch(p.names, cluster)
	switch {
	case len(targets) == 0 && found:
		delete(p.clusters, cluster)
		p.names = slices.Delete(p.names, i, i+1)
	case len(targets) > 0:
		if !found {
			p.names = slices.Insert(p.names, i, cluster)
		}
		p.clusters[cluster] = targets
	}
	return p.reallocate(cluster)
}

// unique returns a copy of ts without repeats, in order.
func unique(ts []Target) []Target {
	out := make([]Target, 0, len(ts))
	seen := make(map[Target]bool, len(ts))
	for _, t := range ts {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// reallocate shares the budget anew, starting and stopping probes to match.
// caller is the cluster being tracked: it is not told of changes, but
// reallocate reports whether one of its endpoints lost a known status (its
// check stopped for the budget).
func (p *Prober) reallocate(caller string) (stale bool) {
	lists := make([][]Target, len(p.names))
	for i, n := range p.names {
		lists[i] = p.clusters[n]
	}
	checked := allocate(p.cfg.MaxEndpoints, lists)
	now := time.Now()
	var listed map[Target]bool // built only when some probe is not checked
	var lingering []*probe
	for t, pr := range p.probes {
		if checked[t] {
			pr.clusters, pr.until = pr.clusters[:0], time.Time{}
			continue
		}
		if listed == nil {
			listed = listedIn(lists)
		}
		if !listed[t] && p.cfg.Linger > 0 {
			if pr.until.IsZero() {
				pr.until = now.Add(p.cfg.Linger)
			}
			if pr.until.After(now) {
				lingering = append(lingering, pr)
				continue
			}
		}
		if pr.status != Unknown && listed[t] && slices.Contains(p.clusters[caller], t) {
			stale = true
		}
		p.stop(pr, caller)
	}
	// Lingering probes take only what the clusters in use leave of the
	// budget, the most recently released first.
	slices.SortFunc(lingering, func(a, b *probe) int { return b.until.Compare(a.until) })
	room := max(p.cfg.MaxEndpoints-len(checked), 0)
	for i, pr := range lingering {
		if i < room {
			pr.clusters = nil
		} else {
			p.stop(pr, caller)
		}
	}
	lingering = lingering[:min(room, len(lingering))]
	p.expireAt(lingering)

	unchecked := 0
	var seen map[Target]bool // unchecked targets counted, when some are shared
	for i, n := range p.names {
		for _, t := range lists[i] {
			if !checked[t] {
				if len(p.names) == 1 {
					unchecked++
				} else if !seen[t] {
					if seen == nil {
						seen = map[Target]bool{}
					}
					seen[t] = true
					unchecked++
				}
				continue
			}
			pr := p.probes[t]
			if pr == nil {
				ctx, cancel := context.WithCancel(context.Background())
				pr = &probe{target: t, cancel: cancel}
				p.probes[t] = pr
				go p.run(ctx, pr)
			}
			pr.clusters = append(pr.clusters, n)
		}
	}
	p.metrics.Checked.Set(float64(len(p.probes)))
	p.metrics.Unchecked.Set(float64(unchecked))
	p.metrics.Lingering.Set(float64(len(lingering)))
	return stale
}

// stop ends a probe: its endpoint is no longer listed (or its linger is
// over), or it is beyond the budget now. Its clusters go back to what
// Kubernetes reports.
func (p *Prober) stop(pr *probe, caller string) {
	pr.cancel()
	delete(p.probes, pr.target)
	if pr.status != Unknown {
		for _, c := range pr.clusters {
			if c != caller && p.clusters[c] != nil {
				p.markChanged(c)
			}
		}
	}
}

// listedIn returns the set of targets the lists name.
func listedIn(lists [][]Target) map[Target]bool {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	out := make(map[Target]bool, n)
	for _, l := range lists {
		for _, t := range l {
			out[t] = true
		}
	}
	return out
}

// expireAt arms the timer that ends the earliest of these lingers.
func (p *Prober) expireAt(lingering []*probe) {
	if p.expiry != nil {
		p.expiry.Stop()
		p.expiry = nil
	}
	if len(lingering) == 0 {
		return
	}
	first := lingering[len(lingering)-1].until // sorted latest first
	p.expiry = time.AfterFunc(time.Until(first), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.closed {
			p.reallocate("")
		}
	})
}

// Status implements Checker.
func (p *Prober) Status(t Target) Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr, ok := p.probes[t]; ok {
		return pr.status
	}
	return Unknown
}

// UncheckedReason says why Unchecked lists an endpoint.
const UncheckedReason = "beyond the health-check budget (-health-max-endpoints), shared fairly among the Services in use; served with the health Kubernetes reports"

// Unchecked returns the endpoints of cluster that are not checked because
// they are beyond the cluster's share of the budget (UncheckedReason), in
// the cluster's priority order. nil means every endpoint is checked, or the
// cluster is not tracked.
func (p *Prober) Unchecked(cluster string) []Target {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Target
	for _, t := range p.clusters[cluster] {
		if p.probes[t] == nil {
			out = append(out, t)
		}
	}
	return out
}

// Changed implements Checker.
func (p *Prober) Changed() <-chan struct{} { return p.signal }

// TakeChanged implements Checker. The clusters are sorted.
func (p *Prober) TakeChanged() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Sorted(maps.Keys(p.changed))
	clear(p.changed)
	return out
}

// Close stops every check.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.expireAt(nil)
	for _, pr := range p.probes {
		pr.cancel()
	}
	clear(p.probes)
	clear(p.clusters)
	p.names = nil
	p.metrics.Checked.Set(0)
	p.metrics.Unchecked.Set(0)
	p.metrics.Lingering.Set(0)
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
	if pr.status == s || p.probes[pr.target] != pr {
		return // no change, or stopped meanwhile
	}
	pr.status = s
	p.metrics.Transitions.WithLabelValues(strings.ToLower(s.String())).Inc()
	p.log.Info("health: endpoint changed", "addr", pr.target.Addr.String(), "service", pr.target.Service, "status", s.String())
	for _, c := range pr.clusters {
		p.markChanged(c)
	}
}
