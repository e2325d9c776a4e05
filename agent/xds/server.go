package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/internal/shrink"
)

// AdmitFunc decides whether a client may be served, from its address and the
// Node of its first request (trimmed, see MetadataNodeName). To admit, it
// returns the namespaces the client runs in (what Scopes are checked
// against; empty when unknown); to refuse, the error (a status, e.g.
// PERMISSION_DENIED) that ends the stream. It is called once per stream,
// before anything is sent, and may block briefly (ctx ends with the stream).
type AdmitFunc func(ctx context.Context, peer netip.Addr, node *corev3.Node) (namespaces []string, err error)

// Options configure a Server.
type Options struct {
	Limits Limits
	// Admit decides who is served; nil admits every client, in no namespace.
	Admit AdmitFunc
	// Absent returns what a client is told of a name that does not exist
	// (nil: nothing). A resource the client may not see is answered exactly
	// so, as if it did not exist.
	Absent func(typ, name string) proto.Message
	// Key maps a name a client subscribes to onto the cache's name for it
	// (nil: the name itself), so clients may be served different resources
	// under one name — another node's view of a listener, say.
	Key func(client *corev3.Node, typ, name string) string
}

// Server is an ADS server (state-of-the-world) over a Cache. It owns the
// streams: who subscribes to what, and what each was told.
type Server struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	cache   *Cache
	metrics *metrics.Metrics
	log     *slog.Logger
	limits  Limits
	admit   AdmitFunc
	absent  func(typ, name string) proto.Message
	key     func(client *corev3.Node, typ, name string) string
	logs    *limiter // shared by every client's log lines
	ids     atomic.Uint64
	// sent, if set, is told of every response handed to gRPC (benchmarks
	// time a change's fan-out with it).
	sent func(typ string)
	// pushes and pushLatency are the metrics' series per type, in addOrder:
	// looked up once, not on every response.
	pushes      [len(addOrder)]prometheus.Counter
	pushLatency [len(addOrder)]prometheus.Observer

	mu      sync.Mutex
	streams map[uint64]*stream // open streams, for Clients
	perPeer map[netip.Addr]int
	names   map[netip.Addr]int // names subscribed by each peer's streams
	total   int                // names subscribed by all streams

	subMu    sync.Mutex
	subs     map[key]map[*stream]struct{} // who subscribes to each name
	subsPeak int                          // see shrink.Map
	count    map[string]int               // distinct subscribed names per type
}

// NewServer returns a Server answering from cache.
func NewServer(cache *Cache, m *metrics.Metrics, log *slog.Logger, o Options) *Server {
	s := &Server{
		cache: cache, metrics: m, log: log,
		limits:  o.Limits.WithDefaults(),
		admit:   o.Admit,
		absent:  o.Absent,
		key:     o.Key,
		logs:    newLimiter(100, 100*time.Millisecond),
		streams: map[uint64]*stream{},
		perPeer: map[netip.Addr]int{},
		names:   map[netip.Addr]int{},
		subs:    map[key]map[*stream]struct{}{},
		count:   map[string]int{},
	}
	for i, typ := range addOrder {
		s.pushes[i] = m.Pushes.WithLabelValues(ShortType(typ))
		s.pushLatency[i] = m.PushLatency.WithLabelValues(ShortType(typ))
	}
	cache.onChange(s.resourcesChanged)
	return s
}

// Register adds the ADS service to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// DeltaAggregatedResources is not served: every gRPC client speaks
// state-of-the-world.
func (s *Server) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "nodexds serves state-of-the-world ADS only")
}

// StreamAggregatedResources serves one client until it goes away.
//
// This goroutine reads and handles the client's requests; responses are
// sent by a worker that runs only while there is something to send (see
// wake). An idle stream thus costs one goroutine, and the stream always
// reads, even while a Send waits for the client to read: a client that
// stops reading until its own requests are sent (grpc-go's xDS client does,
// under flow control) would otherwise deadlock with us.
func (s *Server) StreamAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	st := &stream{
		id:    s.ids.Add(1),
		srv:   s,
		grpc:  gs,
		dirty: dirty{},
		types: map[string]*typeState{},
	}
	st.log = clientLog{log: s.log.With("stream", st.id), stream: newLimiter(5, 10*time.Second), global: s.logs}
	if p, ok := peer.FromContext(gs.Context()); ok && p.Addr != nil {
		st.peer = peerAddr(p.Addr)
		st.log.log = st.log.log.With("peer", p.Addr.String())
		st.conn, _ = p.AuthInfo.(connInfo)
	}
	st.info.since, st.info.peer = time.Now(), st.peer.String()
	if err := s.open(st); err != nil {
		return err
	}
	defer s.close(st)
	for {
		req, err := gs.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		if n, ok := takeReadSize(req); ok {
			if lc, ok := st.conn.Conn.(*limitedConn); ok {
				lc.consumed(n)
			}
		}
		if !Served(req.GetTypeUrl()) {
			st.log.at(slog.LevelWarn, "request for a type nodexds does not serve: ending the stream", "type", clip(req.GetTypeUrl(), maxLogLen))
			return status.Errorf(codes.InvalidArgument, "type URL %q is not served (nodexds serves LDS, RDS, CDS and EDS)", clip(req.GetTypeUrl(), maxLogLen))
		}
		req, long := compact(req)
		if long > 0 {
			s.limitHit(st, "name_length", "client asked for names longer than any Service's: ignoring them",
				"names", long, "max_bytes", maxNameLen)
		}
		asks, err := st.handle(gs.Context(), req)
		if err != nil {
			return err
		}
		if asks {
			st.wake(req.GetTypeUrl(), "")
		}
	}
}

// open registers a new stream, within the stream limits.
func (s *Server) open(st *stream) error {
	s.mu.Lock()
	var limit string
	switch {
	case len(s.streams) >= s.limits.MaxStreams:
		limit = "streams"
	case s.perPeer[st.peer] >= s.limits.MaxStreamsPerPeer:
		limit = "streams_per_peer"
	default:
		s.streams[st.id] = st
		s.perPeer[st.peer]++
	}
	s.mu.Unlock()
	if limit != "" {
		s.limitHit(st, limit, "too many ADS streams: refusing a new one",
			"max_streams", s.limits.MaxStreams, "max_streams_per_peer", s.limits.MaxStreamsPerPeer)
		return status.Errorf(codes.ResourceExhausted, "too many ADS streams (limit %s)", limit)
	}
	s.metrics.ConnectedClients.Inc()
	return nil
}

// reserveNames adds delta to a peer's subscribed names, unless that would
// exceed MaxNamesPerPeer or MaxNames; it returns the limit that refused it.
func (s *Server) reserveNames(peer netip.Addr, delta int) (refused string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.names[peer] + delta
	switch {
	case delta > 0 && n > s.limits.MaxNamesPerPeer:
		return "names_per_peer"
	case delta > 0 && s.total+delta > s.limits.MaxNames:
		return "names"
	}
	s.total += delta
	if n <= 0 {
		delete(s.names, peer)
	} else {
		s.names[peer] = n
	}
	return ""
}

// close drops a finished stream and all its subscriptions. A worker still
// sending finds nothing more to do.
func (s *Server) close(st *stream) {
	st.mu.Lock()
	st.ended = true
	st.mu.Unlock()
	st.state.Lock()
	for typ, ts := range st.types {
		s.reserveNames(st.peer, -len(ts.names))
		s.subscribe(st, typ, nil, slices.Collect(maps.Keys(ts.names)))
	}
	st.types = nil
	st.state.Unlock()
	s.mu.Lock()
	delete(s.streams, st.id)
	if s.perPeer[st.peer]--; s.perPeer[st.peer] <= 0 {
		delete(s.perPeer, st.peer)
	}
	s.mu.Unlock()
	s.metrics.ConnectedClients.Dec()
	if st.node != nil {
		st.log.at(slog.LevelInfo, "client disconnected", "node", st.node.GetId())
	}
}

// Listener wraps l as ADS must be served: with the connection limits
// (LimitListener), and the budget for large requests being read
// (Limits.MaxReadingBytes).
func (s *Server) Listener(l net.Listener) net.Listener {
	ll := LimitListener(l, s.limits.MaxConnsPerPeer, s.limits.MaxConns, s.ConnRefused).(*limitListener)
	ll.budget, ll.exceeded = newReadBudget(s.limits.MaxReadingBytes), s.readingExceeded
	return ll
}

// readingExceeded reports a connection closed for sending a large request
// while another of its own held the reading budget.
func (s *Server) readingExceeded(peer netip.Addr) {
	s.metrics.LimitHits.WithLabelValues("reading_bytes").Inc()
	if ok, dropped := s.logs.allow(time.Now()); ok {
		s.log.Warn("client sends large requests at once on one connection beyond the reading budget: closing it",
			"peer", peer.String(), "max_bytes", s.limits.MaxReadingBytes, "suppressed", dropped)
	}
}

// ConnRefused counts and reports a connection refused by LimitListener.
func (s *Server) ConnRefused(peer netip.Addr, limit string) {
	s.metrics.LimitHits.WithLabelValues(limit).Inc()
	if ok, dropped := s.logs.allow(time.Now()); ok {
		s.log.Warn("too many connections: closing a new one", "peer", peer.String(), "limit", limit, "suppressed", dropped)
	}
}

// limitHit counts and reports a client reaching one of the Limits.
func (s *Server) limitHit(st *stream, limit, msg string, args ...any) {
	s.metrics.LimitHits.WithLabelValues(limit).Inc()
	st.log.at(slog.LevelWarn, msg, append([]any{"limit", limit}, args...)...)
}

// subscribe updates the index of who subscribes to what; the Cache hears of
// a name's first subscriber and of its last one leaving.
func (s *Server) subscribe(st *stream, typ string, add, remove []string) {
	if len(add)+len(remove) == 0 {
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, n := range add {
		k := key{typ, st.keyOf(typ, n)}
		set := s.subs[k]
		if set == nil {
			set = map[*stream]struct{}{}
			s.subs[k] = set
			s.cache.want(typ, k.name)
			s.count[typ]++
		}
		set[st] = struct{}{}
	}
	for _, n := range remove {
		k := key{typ, st.keyOf(typ, n)}
		set := s.subs[k]
		if _, ok := set[st]; !ok {
			continue
		}
		delete(set, st)
		if len(set) == 0 {
			delete(s.subs, k)
			s.cache.drop(typ, k.name)
			s.count[typ]--
		}
	}
	s.subs = shrink.Map(s.subs, &s.subsPeak)
	s.metrics.Subscriptions.WithLabelValues(ShortType(typ)).Set(float64(s.count[typ]))
}

// resourcesChanged wakes the streams subscribed to resources the Cache changed.
func (s *Server) resourcesChanged(keys []key) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, k := range keys {
		for st := range s.subs[k] {
			st.wake(k.typ, k.name)
		}
	}
}

// stream is one client's ADS stream. The reading goroutine (handle) and the
// worker (respond) share its state under state; dirty, working and ended
// are under mu (taken by wake, under the Server's subMu: never take state
// or subMu under mu); info has its own lock (read by Clients).
type stream struct {
	id   uint64
	srv  *Server
	grpc discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	peer netip.Addr
	conn connInfo // the client's connection, when served with GRPCOptions
	log  clientLog

	state      sync.Mutex
	node       *corev3.Node // trimmed, from the first request naming one
	admitted   bool
	namespaces []string // the client's, from admission
	nonce      uint64   // of the last response, any type
	types      map[string]*typeState

	mu      sync.Mutex
	dirty   dirty
	working bool // a worker runs (see wake)
	ended   bool // the stream is over: no worker starts

	stuck    sync.Once   // a Send outlived SendTimeout
	watchdog *time.Timer // for the worker's Send (see send)

	info clientInfo
}

// typeState is what one stream knows about one resource type.
type typeState struct {
	names    map[string]uint64 // subscribed; values are same's stamps
	stamp    uint64            // see same
	sorted   []string          // names, sorted; nil when names changed
	told     map[string]string // see typeInput.told
	digest   uint64            // see typeInput.digest
	toldPeak int               // see shrink.Map
	nonce    string            // of the latest response of this type
	sent     string            // its version
	answered string            // nonce last ACKed or NACKed, not to count a repeat
	named    bool              // a request has named resources: an empty list is no longer a wildcard
}

// same reports whether names is exactly the subscription (each name once),
// without allocating: state-of-the-world clients repeat every name with
// every ACK, so this is what most requests are.
func (ts *typeState) same(names []string) bool {
	if len(names) != len(ts.names) {
		return false
	}
	ts.stamp++
	for _, n := range names {
		if s, ok := ts.names[n]; !ok || s == ts.stamp { // new, or said twice
			return false
		}
		ts.names[n] = ts.stamp
	}
	return true
}

func (ts *typeState) sortedNames() []string {
	if ts.sorted == nil {
		ts.sorted = slices.Sorted(maps.Keys(ts.names))
	}
	return ts.sorted
}

// keyOf is the cache's name for a name the stream's client subscribes to.
func (st *stream) keyOf(typ, name string) string {
	if st.srv.key == nil {
		return name
	}
	return st.srv.key(st.node, typ, name)
}

// dirty is what changed for a stream since it last looked, per type: the
// cache keys of the Routes and Endpoints that changed, or nil for a type to
// be looked at whole (Listeners and Clusters are full state: any change
// means a response carrying all of them).
type dirty map[string]map[string]struct{}

func (d dirty) all(typ string) { d[typ] = nil }

func (d dirty) add(typ, key string) {
	if fullState(typ) {
		d.all(typ)
		return
	}
	keys, ok := d[typ]
	if ok && keys == nil {
		return // already whole
	}
	if keys == nil {
		keys = map[string]struct{}{}
		d[typ] = keys
	}
	keys[key] = struct{}{}
}

// wake records that the resource key of type typ changed ("" for every
// name of the type), and makes sure a worker will send what that calls for.
// One worker runs at a time; it exits once nothing is left, so an idle
// stream holds no goroutine for sending.
func (st *stream) wake(typ, key string) {
	st.mu.Lock()
	if key == "" {
		st.dirty.all(typ)
	} else {
		st.dirty.add(typ, key)
	}
	start := !st.working && !st.ended
	st.working = st.working || start
	st.mu.Unlock()
	if start {
		go st.work()
	}
}

// work sends what changed until nothing has: it is the only goroutine that
// sends on the stream. A failed Send means the stream is broken, and its
// reader hears of it too.
func (st *stream) work() {
	for {
		st.mu.Lock()
		d := st.dirty
		if len(d) == 0 || st.ended {
			st.working = false
			st.mu.Unlock()
			return
		}
		st.dirty = dirty{}
		st.mu.Unlock()
		if err := st.respond(d); err != nil {
			st.mu.Lock()
			st.working, st.ended = false, true
			st.mu.Unlock()
			return
		}
	}
}

// verdict is what a request says about the latest response of its type.
type verdict int

const (
	noVerdict verdict = iota // first request, or a stale nonce: says nothing
	ack
	nack
)

// handle applies one request. It reports whether the request may call for an
// answer (it subscribed to names), or the error that ends the stream.
func (st *stream) handle(ctx context.Context, req *discoveryv3.DiscoveryRequest) (bool, error) {
	typ := req.GetTypeUrl()
	// Only this goroutine writes node and admitted: it reads them unlocked.
	if st.node == nil && req.GetNode() != nil {
		node := trimNode(req.GetNode())
		st.state.Lock()
		st.node = node
		st.state.Unlock()
		st.info.identify(node)
		st.log.at(slog.LevelInfo, "client connected", "node", node.GetId(),
			localityAttr(node.GetLocality()), "user_agent", st.info.userAgent)
	}
	if st.srv.admit != nil && !st.admitted {
		ns, err := st.srv.admit(ctx, st.peer, st.node)
		if err != nil {
			code := strings.ToLower(strings.ReplaceAll(status.Code(err).String(), "Denied", "_denied"))
			st.srv.metrics.Refused.WithLabelValues(code).Inc()
			st.log.at(slog.LevelWarn, "client refused", "node", st.node.GetId(), "error", clip(err.Error(), maxLogLen))
			return false, err
		}
		st.state.Lock()
		st.namespaces = ns
		st.state.Unlock()
		st.admitted = true
	}

	st.state.Lock()
	defer st.state.Unlock()
	ts := st.types[typ]
	if ts == nil {
		ts = &typeState{names: map[string]uint64{}, told: map[string]string{}}
		st.types[typ] = ts
	}
	names := req.GetResourceNames()
	// In the xDS protocol a first LDS or CDS request naming nothing, or "*",
	// is a wildcard subscription: every Listener (every Service in the
	// cluster). gRPC clients never send one; refuse it rather than misread it.
	if fullState(typ) && (slices.Contains(names, "*") || (!ts.named && len(names) == 0)) {
		st.log.at(slog.LevelWarn, "wildcard subscription refused: ending the stream", "type", ShortType(typ))
		return false, status.Errorf(codes.InvalidArgument,
			"nodexds does not serve wildcard %s subscriptions: name the resources you want (gRPC clients do, e.g. xds:///my-service.my-namespace:8080)", ShortType(typ))
	}
	if len(names) > st.srv.limits.MaxNamesPerType {
		st.srv.limitHit(st, "names_per_type", "client subscribed to too many names: ending its stream",
			"type", ShortType(typ), "names", len(names), "max", st.srv.limits.MaxNamesPerType)
		return false, status.Errorf(codes.ResourceExhausted, "%d %s names in one request, more than the limit of %d",
			len(names), ShortType(typ), st.srv.limits.MaxNamesPerType)
	}
	ts.named = ts.named || len(names) > 0

	// A request ACKs or NACKs only the latest response of its type; one naming
	// an older (or never sent) nonce is stale, and says nothing.
	v, nonce := noVerdict, req.GetResponseNonce()
	// Clients repeat the nonce on later requests: an answer counts once.
	switch {
	case nonce == "" || nonce != ts.nonce || nonce == ts.answered:
	case req.GetErrorDetail() != nil:
		ts.answered, v = nonce, nack
		st.srv.metrics.NACKs.WithLabelValues(ShortType(typ), clientStack(st.node)).Inc()
		st.log.at(slog.LevelError, "client rejected a response (NACK)", "node", st.node.GetId(),
			"type", ShortType(typ), "nonce", nonce, "version", ts.sent,
			"error", clip(req.GetErrorDetail().GetMessage(), maxLogLen))
	case req.GetVersionInfo() == ts.sent:
		// An ACK echoes the response's version; a request that only changes
		// subscriptions after a NACK carries its nonce with an older version.
		ts.answered, v = nonce, ack
	}

	var add, remove []string
	want := ts.names
	if !ts.same(names) {
		want = make(map[string]uint64, len(names))
		for _, n := range names {
			if _, dup := want[n]; dup {
				continue
			}
			want[n] = 0
			if _, ok := ts.names[n]; !ok {
				add = append(add, n)
			}
		}
		for n := range ts.names {
			if _, ok := want[n]; !ok {
				remove = append(remove, n)
				if v, ok := ts.told[n]; ok && v != toldAbsent {
					ts.digest ^= digestOf(n, v)
				}
				delete(ts.told, n)
			}
		}
	}
	if len(add)+len(remove) > 0 {
		switch st.srv.reserveNames(st.peer, len(add)-len(remove)) {
		case "names_per_peer":
			st.srv.limitHit(st, "names_per_peer", "client's address subscribes to too many names: ending its stream",
				"max", st.srv.limits.MaxNamesPerPeer)
			return false, status.Errorf(codes.ResourceExhausted, "the streams from %s subscribe to more than %d names",
				st.peer, st.srv.limits.MaxNamesPerPeer)
		case "names":
			st.srv.limitHit(st, "names", "clients subscribe to too many names in all: ending a stream that adds more",
				"max", st.srv.limits.MaxNames)
			return false, status.Errorf(codes.ResourceExhausted, "this agent's clients subscribe to more than %d names in all",
				st.srv.limits.MaxNames)
		}
		ts.names, ts.sorted = want, nil
		ts.told = shrink.Map(ts.told, &ts.toldPeak)
		st.srv.subscribe(st, typ, add, remove)
	}
	st.info.requested(typ, add, remove, v, nonce, req.GetErrorDetail().GetMessage())
	return len(add) > 0, nil
}

// respond sends what plan decides for what changed: for each type in d,
// every subscribed name, or only those whose resources changed.
func (st *stream) respond(d dirty) error {
	out := st.prepare(d)
	for _, o := range out {
		if err := st.send(o); err != nil {
			return err
		}
	}
	return nil
}

// outgoing is a response ready to send, and what its metrics need.
type outgoing struct {
	resp       *discoveryv3.DiscoveryResponse
	oldest     time.Time // of the updates it carries; first sends are not push latency
	subscribed int       // names of its type, for the debug log
}

// prepare plans the responses for what changed and records them as sent:
// the stream's state is settled before the worker sends (outside the lock,
// so that reading requests never waits for a client to read), and an ACK
// that arrives meanwhile finds the nonce it names.
func (st *stream) prepare(d dirty) []outgoing {
	st.state.Lock()
	defer st.state.Unlock()
	var ins []typeInput
	for _, typ := range addOrder {
		keys, ok := d[typ]
		ts := st.types[typ]
		if !ok || ts == nil {
			continue
		}
		names := ts.sortedNames()
		if keys != nil {
			names = st.changedNames(typ, ts, keys)
		}
		subs := make([]sub, len(names))
		for i, n := range names {
			subs[i].name, subs[i].key = n, st.keyOf(typ, n)
		}
		st.srv.cache.lookup(typ, subs)
		for i := range subs {
			if e := &subs[i].entry; e.resolved && !e.scope.VisibleTo(st.namespaces) {
				*e = st.srv.outsider(typ, subs[i].name)
			}
		}
		ins = append(ins, typeInput{typ: typ, subs: subs, told: ts.told, digest: ts.digest})
	}
	rs := plan(ins)
	out := make([]outgoing, len(rs))
	for i, r := range rs {
		ts := st.types[r.typ]
		st.nonce++
		o := &out[i]
		o.resp = &discoveryv3.DiscoveryResponse{
			VersionInfo: r.version,
			TypeUrl:     r.typ,
			Nonce:       strconv.FormatUint(st.nonce, 10),
			Resources:   make([]*anypb.Any, len(r.resources)),
		}
		for i, s := range r.resources {
			o.resp.Resources[i] = s.entry.resource
			if prev, ok := ts.told[s.name]; ok && prev != toldAbsent && prev != s.entry.version &&
				(o.oldest.IsZero() || s.entry.observed.Before(o.oldest)) {
				o.oldest = s.entry.observed
			}
		}
		o.subscribed = len(ts.names)
		ts.nonce, ts.sent = o.resp.Nonce, o.resp.VersionInfo
		st.info.responded(r.typ, r.version, st.nonce, r.resources, fullState(r.typ))
	}
	for _, in := range ins {
		st.types[in.typ].digest = recordTold(in.told, in.subs, in.digest)
	}
	return out
}

// changedNames are the subscribed names of the changed cache keys of an
// incremental type, sorted. Route and Endpoint names are their own cache
// keys (only Listener and Cluster keys carry a view or variant); a key that
// is not is looked up through every name.
func (st *stream) changedNames(typ string, ts *typeState, keys map[string]struct{}) []string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		if st.keyOf(typ, k) != k {
			return ts.sortedNames()
		}
		if _, ok := ts.names[k]; ok { // else no longer subscribed: nothing to say
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// send hands one response to gRPC. A client that has not taken it within
// SendTimeout loses its connection: the Send (and the worker) end with it.
func (st *stream) send(o outgoing) error {
	if st.watchdog == nil { // one timer for the stream's sends, one worker at a time
		st.watchdog = time.AfterFunc(st.srv.limits.SendTimeout, st.stuckSend)
	} else {
		st.watchdog.Reset(st.srv.limits.SendTimeout)
	}
	err := st.grpc.Send(o.resp)
	st.watchdog.Stop()
	if err != nil {
		return err
	}
	if st.srv.sent != nil {
		st.srv.sent(o.resp.TypeUrl)
	}
	i := slices.Index(addOrder[:], o.resp.TypeUrl)
	st.srv.pushes[i].Inc()
	if !o.oldest.IsZero() {
		st.srv.pushLatency[i].Observe(time.Since(o.oldest).Seconds())
	}
	if st.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		st.srv.log.Debug("sent", "stream", st.id, "type", ShortType(o.resp.TypeUrl),
			"version", o.resp.VersionInfo, "resources", len(o.resp.Resources), "subscribed", o.subscribed)
	}
	return nil
}

// stuckSend ends a stream whose client has not read a response in
// SendTimeout, by closing its connection: the stream's reader is blocked in
// Recv and cannot return, and gRPC has no other way to end one stream.
func (st *stream) stuckSend() {
	st.stuck.Do(func() {
		st.srv.limitHit(st, "send_timeout", "client took no response in time: closing its connection", "timeout", st.srv.limits.SendTimeout)
		if st.conn.Conn != nil {
			st.conn.Conn.Close()
		}
	})
}

// outsider is what a client that may not see a resource is told of it: what
// it would be told if the resource did not exist.
func (s *Server) outsider(typ, name string) entry {
	e := entry{resolved: true}
	if s.absent == nil {
		return e
	}
	if res := s.absent(typ, name); res != nil {
		if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(res); err == nil {
			e.resource, e.version = &anypb.Any{TypeUrl: typ, Value: b}, hash(b)
		}
	}
	return e
}

// clientStack names a client's gRPC implementation from its Node's user
// agent, as a metric label: a small fixed set, whatever clients send.
func clientStack(n *corev3.Node) string {
	ua := strings.ToLower(n.GetUserAgentName())
	switch {
	case strings.HasPrefix(ua, "grpc go"):
		return "grpc-go"
	case strings.HasPrefix(ua, "grpc node"):
		return "grpc-js"
	case strings.HasPrefix(ua, "grpc c-core"):
		return "c-core"
	case strings.HasPrefix(ua, "grpc java"):
		return "grpc-java"
	}
	return "other"
}

// peerAddr is the IP of a peer address (unmapped, without zone), or the zero
// Addr for a peer that is not on IP (a unix socket, in tests).
func peerAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap().WithZone("")
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}
