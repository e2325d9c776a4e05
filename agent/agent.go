// Package agent is nodexds' pipeline for one node: discovery events in,
// per-node topology-prioritized xDS resources out, into an xds.Cache that the
// ADS server answers from.
//
// One goroutine (Run) owns the model. Sources only enqueue Events; the cache
// only enqueues Interests (which names clients subscribe to). Work is demand
// driven: only Service ports some client on this node subscribes to are built,
// and a change to one Service rebuilds only that Service's resources.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
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
	// Coalesce is the burst window: the first change after a quiet period is
	// applied at once, later ones are batched until the window ends.
	Coalesce time.Duration
	// Visibility says which clients see a Service: every client
	// (VisibilityCluster, the default) or those in its namespace and the
	// namespaces it exports itself to (VisibilityNamespace).
	Visibility Visibility
	// MaxPickerEndpoints bounds the endpoint picker: a Service port with more
	// endpoints gets no picker routes (each member costs clients a route, a
	// cluster and a load assignment).
	MaxPickerEndpoints int
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
	beat     *heartbeat // Run's; read by /healthz

	// Owned by Run.
	store    *discovery.Store
	here     topology.Here
	subs     *subscriptions
	dirty    map[discovery.ServiceKey]bool
	dirtyAll bool
	observed time.Time                  // first change not yet flushed
	reported map[string]string          // report key → errors last reported
	failOpen map[string]bool            // clusters whose endpoints all fail checks
	merged   map[portKey]*portEndpoints // this iteration's merged endpoints; see endpoints
	barriers []chan struct{}
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
	return &Agent{
		cfg:      cfg,
		cache:    cache,
		checker:  checker,
		reporter: reporter,
		metrics:  m,
		log:      log,
		queue:    make(chan queued, 4096),
		debug:    make(chan viewRequest),
		beat:     newHeartbeat(),
		store:    discovery.NewStore(),
		here:     topology.Here{Node: cfg.NodeName},
		subs:     newSubscriptions(),
		dirty:    map[discovery.ServiceKey]bool{},
		reported: map[string]string{},
		failOpen: map[string]bool{},
		merged:   map[portKey]*portEndpoints{},
	}
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
	select {
	case a.queue <- queued{done: done}:
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

// Run processes events and interests until ctx is done.
//
// Changes — discovery events and health transitions alike — are coalesced:
// the first change after a quiet period is flushed at once, later ones are
// batched until the window ends, so a flapping endpoint pushes at most once
// per window, not at its flap rate.
func (a *Agent) Run(ctx context.Context) error {
	window := time.NewTimer(0)
	<-window.C
	windowOpen := false
	tick := time.NewTicker(heartbeatEvery) // an idle loop beats too
	defer tick.Stop()
	changed := func(barrier bool) {
		if barrier || !windowOpen {
			a.flush()
			window.Reset(a.cfg.Coalesce)
			windowOpen = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil

		case q := <-a.queue:
			barrier := a.take(q)
			// Drain what is already queued: a free batch.
			for drained := false; !drained; {
				select {
				case q := <-a.queue:
					barrier = a.take(q) || barrier
				default:
					drained = true
				}
			}
			changed(barrier)
			if barrier {
				a.cache.Publish() // what Sync promises is visible
				a.releaseBarriers()
			}

		case <-window.C:
			windowOpen = false
			if a.pending() {
				changed(false)
			}

		case <-a.cache.Interests():
			a.interests(a.cache.TakeInterests())

		case req := <-a.debug:
			req.reply <- a.view(req.q)

		case <-tick.C: // nothing to do but beat, below

		case <-a.checker.Changed():
			// Only the Services whose endpoints changed health are rebuilt (their
			// load assignment, and picker routes if any; the rest is unchanged
			// and not resent).
			now := time.Now()
			for _, cluster := range a.checker.TakeChanged() {
				if k, ok := a.subs.service(xds.EndpointType, cluster); ok {
					a.markDirty(k, now)
				}
			}
			changed(false)
		}
		// Everything this iteration built becomes visible to streams at once.
		a.cache.Publish()
		clear(a.merged)
		a.beat.now()
	}
}

// take applies one queued item; it reports whether it was a barrier.
func (a *Agent) take(q queued) bool {
	a.beat.now() // a long drain (the initial list) is progress
	if q.done != nil {
		a.barriers = append(a.barriers, q.done)
		return true
	}
	a.apply(q.ev, q.at)
	return false
}

func (a *Agent) releaseBarriers() {
	for _, d := range a.barriers {
		close(d)
	}
	a.barriers = nil
}

func (a *Agent) pending() bool { return a.dirtyAll || len(a.dirty) > 0 }

// apply records an event in the store and marks what it touched.
func (a *Agent) apply(e discovery.Event, at time.Time) {
	kind, op := eventLabels(e)
	a.metrics.DiscoveryEvents.WithLabelValues(kind, op).Inc()
	ch := a.store.Apply(e)
	clear(a.merged) // the store changed under them
	for _, k := range a.store.TakeMoved() {
		a.markDirty(k, at)
	}
	switch {
	case ch.Service != nil:
		a.markDirty(*ch.Service, at)
	case ch.Node != "":
		if ch.Node == a.cfg.NodeName {
			n, _ := a.store.Node(ch.Node)
			a.here = topology.Here{Node: a.cfg.NodeName, Zone: n.Zone, Region: n.Region}
		}
		// A node's zone or region moves every endpoint on it between tiers;
		// rare enough to rebuild whatever is subscribed.
		a.dirtyAll = true
		if a.observed.IsZero() {
			a.observed = at
		}
	}
}

// markDirty records that a Service must be rebuilt at the next flush.
func (a *Agent) markDirty(k discovery.ServiceKey, at time.Time) {
	a.dirty[k] = true
	if a.observed.IsZero() {
		a.observed = at
	}
}

// flush rebuilds the subscribed resources of every dirty Service.
func (a *Agent) flush() {
	if !a.pending() {
		return
	}
	if a.dirtyAll {
		for _, k := range a.subs.services() {
			a.rebuild(k, a.observed)
		}
	} else {
		for k := range a.dirty {
			if a.subs.has(k) {
				a.rebuild(k, a.observed)
			}
		}
	}
	clear(a.dirty)
	a.dirtyAll = false
	a.observed = time.Time{}
}

// interests follows subscription changes from the cache: build what became
// wanted, forget what is no longer wanted.
func (a *Agent) interests(in []xds.Interest) {
	now := time.Now()
	for _, i := range in {
		if !i.Wanted {
			a.subs.remove(i.Type, i.Name)
			if i.Type == xds.EndpointType {
				a.checker.Track(i.Name, nil) // nobody here uses it: stop checking
				a.setFailOpen(i.Name, false)
			}
			continue
		}
		var key discovery.ServiceKey
		var err error
		if i.Type == xds.ListenerType {
			key, err = a.subs.addListener(i.Name, a.cfg.Names)
		} else {
			key, err = a.subs.addCanonical(i.Type, i.Name, a.cfg.Names)
		}
		if err != nil {
			// Not a name we could ever serve: say so once, and answer "none".
			a.metrics.UnresolvedNames.Inc()
			// Debug only: clients choose these names, so a warning per name
			// would let any client fill the logs; the metric counts them.
			a.log.Debug("client asked for a name that cannot be served", "type", i.Type, "name", i.Name, "error", err)
			a.set(i.Type, i.Name, nil, xds.Scope{}, now)
			continue
		}
		a.build(key, i.Type, i.Name, now)
	}
}

// rebuild rebuilds every subscribed resource of one Service.
func (a *Agent) rebuild(k discovery.ServiceKey, observed time.Time) {
	a.metrics.Rebuilds.Inc()
	for typ, names := range a.subs.of(k) {
		for _, n := range names {
			a.build(k, typ, n, observed)
		}
	}
}

// build computes one resource and stores it in the cache.
func (a *Agent) build(k discovery.ServiceKey, typ, name string, observed time.Time) {
	svc, _ := a.store.Service(k)
	var scope xds.Scope
	if svc != nil {
		scope = a.scope(svc)
	}
	set := func(res proto.Message) { a.set(typ, name, res, scope, observed) }
	switch typ {
	case xds.ListenerType:
		// name may be another node's view of the listener the client named.
		listener, view := splitView(name)
		canonical, err := a.resolve(listener, svc)
		if err != nil {
			a.log.Debug("listener name does not resolve (yet)", "name", name, "error", err)
			a.set(typ, name, nil, xds.Scope{}, observed)
			return
		}
		set(resources.Listener(listener, withView(canonical, view)))

	case xds.RouteType, xds.ClusterType, xds.EndpointType:
		ref, _ := a.subs.ref(typ, name)
		canonical, _, _ := strings.Cut(name, subsetSep)
		var p discovery.Port
		exists := false
		if svc != nil {
			p, exists = svc.PortNumber(ref.port)
		}
		if !exists {
			if typ == xds.EndpointType && ref.subset == "" {
				a.checker.Track(name, nil)
			}
			a.set(typ, name, a.absent(typ, name), xds.Scope{}, observed)
			return
		}
		cfg := a.config(svc)
		switch {
		case typ == xds.RouteType:
			picks, fail := a.picks(svc, p, canonical, cfg)
			set(resources.RouteConfig(name, name, cfg.lb, picks, fail))
		case typ == xds.ClusterType && ref.subset == "":
			set(resources.Cluster(name, cfg.lb))
		case typ == xds.ClusterType:
			set(resources.Cluster(name, resources.DefaultLB))
		case ref.subset == "":
			set(a.loadAssignment(svc, p, name, ref.view, cfg))
		case ref.subset == subsetNone:
			set(resources.LoadAssignment(name, nil, nil))
		default:
			set(a.pickedEndpoint(svc, p, canonical, name, ref.subset, cfg))
		}
	}
}

// absent is what clients are told of a name whose Service port does not
// exist (and, by the ADS server, of one they may not see). Clients keep
// deleted listeners and clusters (ignore_resource_deletion), so the load
// assignment of a name the agent hands out says "no endpoints": RPCs fail
// fast. Everything else is absent.
func (a *Agent) absent(typ, name string) proto.Message {
	if typ != xds.EndpointType {
		return nil
	}
	if _, _, err := parseCanonical(name, a.cfg.Names); err != nil {
		return nil
	}
	return resources.LoadAssignment(name, nil, nil)
}

func (a *Agent) resolve(name string, svc *discovery.Service) (string, error) {
	t, err := a.cfg.Names.Parse(name)
	if err != nil {
		return "", err
	}
	if svc == nil {
		return "", errors.New("no such service " + t.Service.String())
	}
	p, err := names.Resolve(t, svc)
	if err != nil {
		return "", err
	}
	return a.cfg.Names.Canonical(svc.Key, p.Port), nil
}

// serviceConfig is everything a Service's annotations decide.
type serviceConfig struct {
	policy topology.Policy
	health health.ServiceConfig
	lb     resources.LBConfig
}

// readConfig reads a Service's annotations, and returns the ones it cannot use.
func (a *Agent) readConfig(svc *discovery.Service) (serviceConfig, []*discovery.AnnotationError) {
	policy, errs := topology.PolicyFor(svc, a.cfg.DefaultTiers)
	hc, herrs := health.ConfigFor(svc)
	lb, lerrs := resources.LBConfigFor(svc)
	return serviceConfig{policy: policy, health: hc, lb: lb}, slices.Concat(errs, herrs, lerrs)
}

// config is readConfig, reporting the annotations it cannot use.
func (a *Agent) config(svc *discovery.Service) serviceConfig {
	cfg, errs := a.readConfig(svc)
	a.report(svc.Key.String(), svc, errs)
	return cfg
}

// loadAssignment prioritizes a Service port's endpoints for this node, with
// what active health checking knows about them.
func (a *Agent) loadAssignment(svc *discovery.Service, p discovery.Port, name, view string, cfg serviceConfig) proto.Message {
	prios := topology.Prioritize(a.endpoints(svc.Key, p.Name).list, cfg.policy, a.hereFor(view))
	var targets []health.Target
	if cfg.health.Enabled {
		for _, pr := range prios {
			for _, e := range pr.Endpoints {
				targets = append(targets, health.Target{Addr: e.Addr, Service: cfg.health.Name})
			}
		}
	}
	a.checker.Track(name, targets)
	list := make([]health.Status, len(targets))
	for i, t := range targets {
		list[i] = a.checker.Status(t)
	}
	if failOpen := health.FailOpen(list); failOpen != a.failOpen[name] {
		if failOpen {
			a.log.Warn("every endpoint fails its health checks: serving them all rather than none", "cluster", name, "endpoints", len(list))
		} else {
			a.log.Info("health checks pass again: no longer failing open", "cluster", name)
		}
		a.setFailOpen(name, failOpen)
	}
	return resources.LoadAssignment(name, prios, a.status(name, cfg))
}

// setFailOpen records whether a cluster is failing open, for status and the
// metric.
func (a *Agent) setFailOpen(cluster string, failOpen bool) {
	if failOpen {
		a.failOpen[cluster] = true
	} else {
		delete(a.failOpen, cluster)
	}
	a.metrics.HealthFailOpen.Set(float64(len(a.failOpen)))
}

// status is what clients are told of an endpoint's health in cluster.
func (a *Agent) status(cluster string, cfg serviceConfig) func(netip.AddrPort) health.Status {
	if !cfg.health.Enabled || a.failOpen[cluster] {
		return nil // all Unknown
	}
	return func(ap netip.AddrPort) health.Status {
		return a.checker.Status(health.Target{Addr: ap, Service: cfg.health.Name})
	}
}

// picks lists the endpoints a request may pick by header, and the cluster for
// requests that name none when the Service fails them closed. Members are the
// Service port's serving endpoints, minus those failing health checks.
func (a *Agent) picks(svc *discovery.Service, p discovery.Port, canonical string, cfg serviceConfig) ([]resources.Pick, string) {
	if cfg.lb.EndpointHeader == "" {
		return nil, ""
	}
	eps := a.endpoints(svc.Key, p.Name).list
	if len(eps) > a.cfg.MaxPickerEndpoints {
		a.report(canonical+"/picker", svc, []*discovery.AnnotationError{{
			Key: resources.AnnotationEndpointHeader, Value: cfg.lb.EndpointHeader,
			Err: fmt.Errorf("port %d has %d endpoints, more than the agent's limit of %d: endpoint picking is off", p.Port, len(eps), a.cfg.MaxPickerEndpoints),
		}})
		return nil, ""
	}
	a.report(canonical+"/picker", svc, nil)
	status := a.status(canonical, cfg)
	var picks []resources.Pick
	for _, e := range eps {
		if !e.Serving || (status != nil && status(e.Addr) == health.Unhealthy) {
			continue
		}
		pk := resources.Pick{Cluster: pickCluster(canonical, e.Addr), Values: []string{e.Addr.String()}}
		if e.Pod != "" {
			pk.Values = append([]string{e.Pod}, pk.Values...)
		}
		picks = append(picks, pk)
	}
	fail := ""
	if cfg.lb.PickerFailClosed {
		fail = noneCluster(canonical)
	}
	return picks, fail
}

// pickedEndpoint is the load assignment of one endpoint-picker cluster.
func (a *Agent) pickedEndpoint(svc *discovery.Service, p discovery.Port, canonical, name, addr string, cfg serviceConfig) proto.Message {
	pe := a.endpoints(svc.Key, p.Name)
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if i, ok := pe.index()[ap]; ok && pe.list[i].Serving {
			return resources.SingleEndpoint(name, &pe.list[i], a.status(canonical, cfg))
		}
	}
	return resources.SingleEndpoint(name, nil, nil)
}

// portEndpoints is a Service port's merged endpoints, with an index by
// address built on first use.
type portEndpoints struct {
	list   []discovery.Endpoint
	byAddr map[netip.AddrPort]int
}

func (pe *portEndpoints) index() map[netip.AddrPort]int {
	if pe.byAddr == nil {
		pe.byAddr = make(map[netip.AddrPort]int, len(pe.list))
		for i, e := range pe.list {
			pe.byAddr[e.Addr] = i
		}
	}
	return pe.byAddr
}

// endpoints returns a Service port's endpoints, merged from its slices once
// per loop iteration however many resources are built from them: the
// endpoint picker builds one load assignment per member, which would
// otherwise merge (and scan) every slice per member.
func (a *Agent) endpoints(k discovery.ServiceKey, port string) *portEndpoints {
	key := portKey{k, port}
	if pe := a.merged[key]; pe != nil {
		return pe
	}
	pe := &portEndpoints{list: a.store.Endpoints(k, port)}
	a.merged[key] = pe
	return pe
}

type portKey struct {
	svc  discovery.ServiceKey
	port string
}

// report logs, counts and reports errors about a Service once per distinct
// set, under key (several builds of one Service report the same set).
func (a *Agent) report(key string, svc *discovery.Service, errs []*discovery.AnnotationError) {
	var sig string
	for _, e := range errs {
		sig += e.Error() + "\n"
	}
	if a.reported[key] == sig {
		return
	}
	if sig == "" {
		delete(a.reported, key)
		return
	}
	a.reported[key] = sig
	for _, e := range errs {
		a.metrics.AnnotationErrors.WithLabelValues(e.Key).Inc()
		a.log.Warn("ignoring service annotation", "service", svc.Key.String(), "annotation", e.Key, "value", e.Value, "error", e.Err)
		a.reporter.AnnotationError(svc, e)
	}
}

func (a *Agent) set(typ, name string, res proto.Message, scope xds.Scope, observed time.Time) {
	if err := a.cache.Set(typ, name, res, scope, observed); err != nil {
		a.log.Error("cannot store resource", "type", typ, "name", name, "error", err)
	}
}

func eventLabels(e discovery.Event) (kind, op string) {
	op = "upsert"
	if e.Deleted {
		op = "delete"
	}
	switch {
	case e.Service != nil:
		return "service", op
	case e.Slice != nil:
		return "endpointslice", op
	case e.Node != nil:
		return "node", op
	}
	return "unknown", op
}
