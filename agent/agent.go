// Package agent is nodexds' pipeline for one node: discovery events in,
// per-node topology-prioritized xDS resources out, into an xds.Cache that the
// ADS server answers from.
//
// One goroutine (Run) owns the model. Sources only enqueue Events; the cache
// only enqueues Interests (which names clients subscribe to). Work is demand
// driven: only Service ports some client subscribes to (a client of this node,
// or of another node using this agent as its fallback) are built,
// and a change to one Service rebuilds only that Service's resources.
package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// Config is what the agent needs to know about its place in the cluster.
type Config struct {
	// NodeName is the node this agent serves clients on.
	NodeName string
	// Names says how listener names map to Services.
	Names names.Parser
	// DefaultTiers is the topology of Services that ask for none.
	DefaultTiers topology.Tiers
	// Coalesce is the burst window, per Service: a Service's first change
	// after a quiet period is applied at once, its later ones are batched
	// until its window ends. Other Services' changes never wait for it.
	Coalesce time.Duration
	// Visibility says which clients see a Service: every client
	// (VisibilityCluster, the default) or those in its namespace and the
	// namespaces it exports itself to (VisibilityNamespace).
	Visibility Visibility
	// MaxPickerEndpoints bounds the endpoint picker: a Service port with more
	// endpoints gets no picker routes (each member costs clients a route, a
	// cluster and a load assignment).
	MaxPickerEndpoints int
	// TrustDomain is the SPIFFE trust domain of the cluster's identities
	// (trust.DefaultTrustDomain when empty).
	TrustDomain string
	// Handover is how long servers wait for their clients when a Service's
	// connections change between plaintext and TLS (DefaultHandover when
	// zero; see servers.go).
	Handover time.Duration
	// HealthIdentity is the SPIFFE ID with which the agent's health checks
	// present themselves to mTLS servers (the Checker was given its
	// certificate): their Listeners allow it the health service. Empty: the
	// agent has no certificate, and the endpoints of mTLS Services are not
	// checked (Kubernetes' readiness decides alone).
	HealthIdentity string
	// PodsAdmitted says every client is known to be a pod of this node (or
	// of the node it names): admission checked it. Without it, a server
	// listener is served only to a pod some Service's endpoints place here.
	PodsAdmitted bool
}

// DefaultMaxPickerEndpoints is the endpoint picker's default size limit.
const DefaultMaxPickerEndpoints = 1000

// Reporter is told about Service annotations that could not be used, so they
// can be surfaced where their authors look (Kubernetes Events).
type Reporter interface {
	AnnotationError(svc *discovery.Service, err *discovery.AnnotationError)
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(*discovery.Service, *discovery.AnnotationError)

func (f ReporterFunc) AnnotationError(s *discovery.Service, e *discovery.AnnotationError) { f(s, e) }

var _ Reporter = ReporterFunc(nil)

// Agent builds resources for one node. Create it with New, feed it with
// Enqueue, and run it with Run.
type Agent struct {
	cfg      Config
	cache    *xds.Cache
	checker  health.Checker
	reporter Reporter
	metrics  *metrics.Metrics
	log      *slog.Logger
	queue    chan queued
	debug    chan viewRequest
	reads    chan func() // run on the loop: see read
	beat     *heartbeat  // Run's; read by /healthz

	// Owned by Run.
	store *discovery.Store
	here  topology.Here
	subs  *subscriptions
	// Changes waiting to be built, with when each was first seen. A
	// Service rebuilt less than a coalescing window ago waits in dirty until
	// its window ends (see flush); pushed says when each was rebuilt.
	dirty       map[discovery.ServiceKey]pending
	dirtyPeak   int // see shrink.Map
	pushed      map[discovery.ServiceKey]time.Time
	dirtyAll    bool      // a topology change: rebuild every subscribed load assignment
	observedAll time.Time // when dirtyAll was first set
	pushedAll   time.Time
	builder     *builder
	configs     map[discovery.ServiceKey]*serviceConfig // read once per change of each Service
	reported    map[string]string                       // report key → errors last reported
	failOpen    map[string]bool                         // clusters whose endpoints all fail checks
	merged      map[portKey]*portEndpoints              // this iteration's merged endpoints; see endpoints
	barriers    []chan struct{}
	// servers are the subscribed server listeners by cache name; serverDue
	// when the earliest held transport change is due (see servers.go).
	servers      map[string]*serverState
	serverDue    time.Time
	serversDirty bool
	// tlsMoves are the Services moving between plaintext and TLS whose
	// late clients wait for the servers (latetls.go), lateGens the
	// generation of each one's clusters that late clients' routes name,
	// and unread the Services whose configuration changed since it was
	// last read.
	tlsMoves map[discovery.ServiceKey]tlsMove
	lateGens map[discovery.ServiceKey]uint32 // kept: a name reused could meet a client's stale cluster
	unread   map[discovery.ServiceKey]seenChange
}

// queued is an Event, or a barrier (done) that Sync waits on.
type queued struct {
	ev   discovery.Event
	at   time.Time
	done chan struct{}
}

// New returns an Agent writing into cache. reporter may be nil.
func New(cfg Config, cache *xds.Cache, checker health.Checker, reporter Reporter, m *metrics.Metrics, log *slog.Logger) *Agent {
	if reporter == nil {
		reporter = ReporterFunc(func(*discovery.Service, *discovery.AnnotationError) {})
	}
	if checker == nil {
		checker = health.None{}
	}
	if cfg.MaxPickerEndpoints <= 0 {
		cfg.MaxPickerEndpoints = DefaultMaxPickerEndpoints
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = trust.DefaultTrustDomain
	}
	if cfg.Handover <= 0 {
		cfg.Handover = DefaultHandover
	}
	// Every label value the agent counts under starts at 0, so a dashboard
	// shows 0 rather than "No data" before the first bad annotation.
	for _, k := range Annotations {
		m.AnnotationErrors.WithLabelValues(k)
	}
	m.Routes.WithLabelValues("usable")
	m.Routes.WithLabelValues("refused")
	for _, kind := range eventKinds {
		m.DiscoveryEvents.WithLabelValues(kind, "upsert")
		m.DiscoveryEvents.WithLabelValues(kind, "delete")
	}
	a := &Agent{
		cfg:      cfg,
		cache:    cache,
		checker:  checker,
		reporter: reporter,
		metrics:  m,
		log:      log,
		queue:    make(chan queued, 4096),
		debug:    make(chan viewRequest),
		reads:    make(chan func()),
		beat:     newHeartbeat(),
		store:    discovery.NewStore(),
		here:     topology.Here{Node: cfg.NodeName},
		subs:     newSubscriptions(),
		dirty:    map[discovery.ServiceKey]pending{},
		pushed:   map[discovery.ServiceKey]time.Time{},
		reported: map[string]string{},
		failOpen: map[string]bool{},
		merged:   map[portKey]*portEndpoints{},
		configs:  map[discovery.ServiceKey]*serviceConfig{},
		servers:  map[string]*serverState{},
		tlsMoves: map[discovery.ServiceKey]tlsMove{},
		lateGens: map[discovery.ServiceKey]uint32{},
		unread:   map[discovery.ServiceKey]seenChange{},
	}
	a.store.SetLocalNode(cfg.NodeName) // which Services select a server pod of this node
	a.builder = newBuilder(a)
	return a
}

// Enqueue hands an event to the agent. It is what sources call; it blocks
// only when the agent is far behind.
func (a *Agent) Enqueue(e discovery.Event) {
	a.queue <- queued{ev: e, at: time.Now()}
}

// Sync returns once every event enqueued before it has been applied and
// flushed into the cache.
func (a *Agent) Sync(ctx context.Context) error {
	done := make(chan struct{})
	return roundTrip(ctx, a.queue, queued{done: done}, done)
}

// roundTrip hands item to the event loop on ch and waits until done closes.
func roundTrip[T any](ctx context.Context, ch chan<- T, item T, done <-chan struct{}) error {
	select {
	case ch <- item:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
