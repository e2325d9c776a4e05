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

	mu      sync.Mutex
	streams map[uint64]*stream // open streams, for Clients
	perPeer map[netip.Addr]int
	names   map[netip.Addr]int // names subscribed by each peer's streams
	pending map[netip.Addr]int // bytes of requests waiting in each peer's inboxes
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
		pending: map[netip.Addr]int{},
		subs:    map[key]map[*stream]struct{}{},
		count:   map[string]int{},
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
func (s *Server) StreamAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	st := &stream{
		id:     s.ids.Add(1),
		srv:    s,
		grpc:   gs,
		wakeCh: make(chan struct{}, 1),
		dirty:  dirty{},
		types:  map[string]*typeState{},
		stuck:  make(chan struct{}),
	}
	st.log = clientLog{log: s.log.With("stream", st.id), stream: newLimiter(5, 10*time.Second), global: s.logs}
	if p, ok := peer.FromContext(gs.Context()); ok && p.Addr != nil {
		st.peer = peerAddr(p.Addr)
		st.log.log = st.log.log.With("peer", p.Addr.String())
	}
	st.info.since, st.info.peer = time.Now(), st.peer.String()
	if err := s.open(st); err != nil {
		return err
	}

	// The stream runs in its own goroutine so that a client that stops
	// reading cannot hold it forever: when a Send waits longer than
	// SendTimeout, returning here ends the RPC, which fails that Send.
	done := make(chan error, 1)
	go func() {
		defer s.close(st)
		done <- st.run(gs.Context())
	}()
	select {
	case err := <-done:
		return err
	case <-st.stuck:
		s.limitHit(st, "send_timeout", "client took no response in time: ending its stream", "timeout", s.limits.SendTimeout)
		return status.Errorf(codes.ResourceExhausted, "no response was read for %v", s.limits.SendTimeout)
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

// chargePending adds delta to a peer's pending request bytes, unless that
// would exceed MaxPendingBytesPerPeer.
func (s *Server) chargePending(peer netip.Addr, delta int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.pending[peer] + delta
	if delta > 0 && n > s.limits.MaxPendingBytesPerPeer {
		return false
	}
	if n <= 0 {
		delete(s.pending, peer)
	} else {
		s.pending[peer] = n
	}
	return true
}

// close drops a finished stream and all its subscriptions.
func (s *Server) close(st *stream) {
	for typ, ts := range st.types {
		s.reserveNames(st.peer, -len(ts.names))
		s.subscribe(st, typ, nil, slices.Collect(maps.Keys(ts.names)))
	}
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

// stream is one client's ADS stream. Its fields are owned by the goroutine
// running run, except dirty (set by wake) and info (read by Clients).
type stream struct {
	id         uint64
	srv        *Server
	grpc       discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	peer       netip.Addr
	log        clientLog
	node       *corev3.Node // trimmed, from the first request naming one
	admitted   bool
	namespaces []string // the client's, from admission
	nonce      uint64   // of the last response, any type
	types      map[string]*typeState

	wakeCh chan struct{}
	mu     sync.Mutex
	dirty  dirty

	stuck     chan struct{} // closed when a Send outlives SendTimeout
	stuckOnce sync.Once

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

// wake records that the resource key of type typ changed.
func (st *stream) wake(typ, key string) {
	st.mu.Lock()
	st.dirty.add(typ, key)
	st.mu.Unlock()
	select {
	case st.wakeCh <- struct{}{}:
	default:
	}
}

func (st *stream) takeDirty() dirty {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := st.dirty
	st.dirty = dirty{}
	return out
}

// inbox holds requests read but not yet handled: the latest one per type.
// State-of-the-world requests each carry the whole subscription, so a newer
// one replaces an older one; only an unhandled NACK is carried over. Its size
// is thus bounded by four requests, however fast a client sends.
//
// Its bytes are charged to the peer (MaxPendingBytesPerPeer): requests wait
// only while the stream waits for its client to read a response, and one
// that keeps sending large requests meanwhile must not grow the agent.
type inbox struct {
	mu     sync.Mutex
	reqs   map[string]*discoveryv3.DiscoveryRequest
	bytes  int                  // pendingSize of reqs, charged
	charge func(delta int) bool // to the peer; false: over its limit, not charged
	closed bool
}

// put adds a compacted request; false means it did not fit the peer's limit.
func (in *inbox) put(req *discoveryv3.DiscoveryRequest) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return true
	}
	old := in.reqs[req.GetTypeUrl()]
	if old != nil && old.GetErrorDetail() != nil &&
		req.GetErrorDetail() == nil && req.GetResponseNonce() == old.GetResponseNonce() {
		req.ErrorDetail = old.ErrorDetail
	}
	delta := pendingSize(req) - pendingSize(old)
	if !in.charge(delta) {
		return false
	}
	in.bytes += delta
	in.reqs[req.GetTypeUrl()] = req
	return true
}

// take returns the pending requests in listOrder, and releases their bytes.
func (in *inbox) take() []*discoveryv3.DiscoveryRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*discoveryv3.DiscoveryRequest
	for _, typ := range listOrder {
		if r := in.reqs[typ]; r != nil {
			out = append(out, r)
		}
	}
	clear(in.reqs)
	in.charge(-in.bytes)
	in.bytes = 0
	return out
}

// close releases what is pending for good: the stream is over.
func (in *inbox) close() {
	in.take()
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
}

func (st *stream) run(ctx context.Context) error {
	// Requests are read by their own goroutine, so the stream always reads,
	// even while a Send waits for the client to read: a client that stops
	// reading until its own requests are sent (grpc-go's xDS client does,
	// under flow control) would otherwise deadlock with us.
	in := &inbox{
		reqs:   map[string]*discoveryv3.DiscoveryRequest{},
		charge: func(delta int) bool { return st.srv.chargePending(st.peer, delta) },
	}
	defer in.close()
	arrived := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := st.grpc.Recv()
			if err == nil && !Served(req.GetTypeUrl()) {
				st.log.at(slog.LevelWarn, "request for a type nodexds does not serve: ending the stream", "type", clip(req.GetTypeUrl(), maxLogLen))
				err = status.Errorf(codes.InvalidArgument, "type URL %q is not served (nodexds serves LDS, RDS, CDS and EDS)", clip(req.GetTypeUrl(), maxLogLen))
			}
			if err == nil {
				var long int
				if req, long = compact(req); long > 0 {
					st.srv.limitHit(st, "name_length", "client asked for names longer than any Service's: ignoring them",
						"names", long, "max_bytes", maxNameLen)
				}
				if !in.put(req) {
					st.srv.limitHit(st, "pending_bytes_per_peer", "client's address sends requests faster than it reads responses: ending its stream",
						"max_bytes", st.srv.limits.MaxPendingBytesPerPeer)
					err = status.Errorf(codes.ResourceExhausted, "requests from %s wait unhandled beyond %d bytes: read the responses",
						st.peer, st.srv.limits.MaxPendingBytesPerPeer)
				}
			}
			if err != nil {
				errc <- err
				return
			}
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case <-arrived:
			// Handle every request that is already here before answering: a
			// client adding names one by one gets one answer, not one each.
			d := st.takeDirty()
			for _, req := range in.take() {
				asks, err := st.handle(ctx, req)
				if err != nil {
					return err
				}
				if asks {
					d.all(req.GetTypeUrl())
				}
			}
			if err := st.respond(d); err != nil {
				return err
			}
		case <-st.wakeCh:
			if err := st.respond(st.takeDirty()); err != nil {
				return err
			}
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
	if st.node == nil && req.GetNode() != nil {
		st.node = trimNode(req.GetNode())
		st.info.identify(st.node)
		st.log.at(slog.LevelInfo, "client connected", "node", st.node.GetId(),
			localityAttr(st.node.GetLocality()), "user_agent", st.info.userAgent)
	}
	if st.srv.admit != nil && !st.admitted {
		ns, err := st.srv.admit(ctx, st.peer, st.node)
		if err != nil {
			code := strings.ToLower(strings.ReplaceAll(status.Code(err).String(), "Denied", "_denied"))
			st.srv.metrics.Refused.WithLabelValues(code).Inc()
			st.log.at(slog.LevelWarn, "client refused", "node", st.node.GetId(), "error", clip(err.Error(), maxLogLen))
			return false, err
		}
		st.admitted, st.namespaces = true, ns
	}

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
	for _, r := range plan(ins) {
		if err := st.send(r); err != nil {
			return err
		}
	}
	for _, in := range ins {
		st.types[in.typ].digest = recordTold(in.told, in.subs, in.digest)
	}
	return nil
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

// send sends one response.
func (st *stream) send(r response) error {
	ts := st.types[r.typ]
	st.nonce++
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: r.version,
		TypeUrl:     r.typ,
		Nonce:       strconv.FormatUint(st.nonce, 10),
		Resources:   make([]*anypb.Any, len(r.resources)),
	}
	var oldest time.Time // of the updates it carries; first sends are not push latency
	for i, s := range r.resources {
		resp.Resources[i] = s.entry.resource
		if prev, ok := ts.told[s.name]; ok && prev != toldAbsent && prev != s.entry.version &&
			(oldest.IsZero() || s.entry.observed.Before(oldest)) {
			oldest = s.entry.observed
		}
	}
	watchdog := time.AfterFunc(st.srv.limits.SendTimeout, func() { st.stuckOnce.Do(func() { close(st.stuck) }) })
	err := st.grpc.Send(resp)
	watchdog.Stop()
	if err != nil {
		return err
	}
	ts.nonce, ts.sent = resp.Nonce, resp.VersionInfo
	st.info.responded(r.typ, resp.VersionInfo, st.nonce, r.resources, fullState(r.typ))
	typ := ShortType(r.typ)
	st.srv.metrics.Pushes.WithLabelValues(typ).Inc()
	if !oldest.IsZero() {
		st.srv.metrics.PushLatency.WithLabelValues(typ).Observe(time.Since(oldest).Seconds())
	}
	if st.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		st.srv.log.Debug("sent", "stream", st.id, "type", typ,
			"version", resp.VersionInfo, "resources", len(r.resources), "subscribed", len(ts.names))
	}
	return nil
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
