package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/resources"
)

// fullState lists the types whose every response must hold every subscribed
// resource: for these, a missing name means "deleted" to the client.
var fullState = map[string]bool{resources.ListenerType: true, resources.ClusterType: true}

var served = []string{resources.ListenerType, resources.RouteType, resources.ClusterType, resources.EndpointType}

// Server is an ADS server (state-of-the-world) over a Cache.
type Server struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	cache   *Cache
	metrics *metrics.Metrics
	log     *slog.Logger
	ids     atomic.Uint64

	mu      sync.Mutex
	streams map[uint64]*stream // open streams, for Clients
}

// NewServer returns a Server answering from cache.
func NewServer(cache *Cache, m *metrics.Metrics, log *slog.Logger) *Server {
	cache.OnSubscriptionCount(func(typ string, n int) {
		m.Subscriptions.WithLabelValues(shortType(typ)).Set(float64(n))
	})
	return &Server{cache: cache, metrics: m, log: log, streams: map[uint64]*stream{}}
}

// Register adds the ADS service to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// DeltaAggregatedResources is not served: grpc-go speaks state-of-the-world only.
func (s *Server) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "nodexds serves state-of-the-world ADS only")
}

// StreamAggregatedResources serves one client until it goes away.
func (s *Server) StreamAggregatedResources(grpcStream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	st := &stream{
		id:     s.ids.Add(1),
		srv:    s,
		grpc:   grpcStream,
		wakeCh: make(chan struct{}, 1),
		dirty:  map[string]bool{},
		types:  map[string]*typeState{},
	}
	st.info.since = time.Now()
	if p, ok := peer.FromContext(grpcStream.Context()); ok && p.Addr != nil {
		st.info.peer = p.Addr.String()
	}
	s.metrics.ConnectedClients.Inc()
	defer s.metrics.ConnectedClients.Dec()
	s.mu.Lock()
	s.streams[st.id] = st
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st.id)
		s.mu.Unlock()
	}()
	defer st.close()
	return st.run(grpcStream.Context())
}

// stream is one client's ADS stream. Its fields are owned by the goroutine
// running run, except dirty, which the Cache sets when it wakes the stream.
type stream struct {
	id   uint64
	srv  *Server
	grpc discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	node string

	wakeCh chan struct{}
	mu     sync.Mutex
	dirty  map[string]bool

	types map[string]*typeState
	nonce uint64

	// info is the summary other goroutines read (Server.Clients); the
	// stream's goroutine updates it as it handles requests and responds.
	info clientInfo
}

// typeState is what one stream knows about one resource type.
type typeState struct {
	names    map[string]bool   // subscribed
	sent     map[string]string // name → version last sent on this stream
	nonce    string            // of the last response
	answered bool              // a response was sent on this stream
	added    bool              // names were added since the last response
	nacked   string            // nonce of the last NACK, not to count it twice
}

// wake marks typ as changed. Called with the Cache lock held.
func (st *stream) wake(typ string) {
	st.mu.Lock()
	st.dirty[typ] = true
	st.mu.Unlock()
	select {
	case st.wakeCh <- struct{}{}:
	default:
	}
}

func (st *stream) takeDirty() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := slices.Sorted(maps.Keys(st.dirty))
	clear(st.dirty)
	return out
}

// maxInbox bounds requests received but not yet handled on one stream.
const maxInbox = 1024

func (st *stream) run(ctx context.Context) error {
	// Requests are read by their own goroutine into an inbox, so the stream
	// always reads, even while a Send waits for the client to read: a client
	// that stops reading until its own requests are sent (grpc-go's xDS
	// client does, under flow control) would otherwise deadlock with us.
	var (
		inMu    sync.Mutex
		inbox   []*discoveryv3.DiscoveryRequest
		arrived = make(chan struct{}, 1)
		errc    = make(chan error, 1)
	)
	go func() {
		for {
			req, err := st.grpc.Recv()
			if err == nil {
				inMu.Lock()
				inbox = append(inbox, req)
				if len(inbox) > maxInbox {
					err = status.Errorf(codes.ResourceExhausted, "more than %d requests pending on one stream", maxInbox)
				}
				inMu.Unlock()
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
			inMu.Lock()
			reqs := inbox
			inbox = nil
			inMu.Unlock()
			// Handle every request that is already here before answering: a
			// client adding names one by one gets one answer, not one each.
			var answer []string
			for _, req := range reqs {
				if typ, ok := st.handle(req); ok && !slices.Contains(answer, typ) {
					answer = append(answer, typ)
				}
			}
			for _, typ := range answer {
				if err := st.respond(typ); err != nil {
					return err
				}
			}
		case <-st.wakeCh:
			for _, typ := range st.takeDirty() {
				if err := st.respond(typ); err != nil {
					return err
				}
			}
		}
	}
}

// handle applies one request; it reports the request's type and whether it
// needs an answer.
func (st *stream) handle(req *discoveryv3.DiscoveryRequest) (string, bool) {
	typ := req.GetTypeUrl()
	if st.node == "" && req.GetNode().GetId() != "" {
		st.node = req.GetNode().GetId()
		st.info.identify(req.GetNode())
		st.srv.log.Info("client connected", "stream", st.id, "node", st.node,
			"locality", req.GetNode().GetLocality().String(), "user_agent", st.info.userAgent)
	}
	if !slices.Contains(served, typ) {
		st.srv.log.Warn("ignoring request for unserved type", "stream", st.id, "node", st.node, "type", typ)
		return typ, false
	}
	ts := st.types[typ]
	if ts == nil {
		ts = &typeState{names: map[string]bool{}, sent: map[string]string{}}
		st.types[typ] = ts
	}
	// A NACK names the response it rejects by nonce. It may be an older one
	// than the last sent (a newer response crossed it), and it still counts;
	// a client repeating the error on later requests does not count again.
	nonce := req.GetResponseNonce()
	nack := nonce != "" && req.GetErrorDetail() != nil && nonce != ts.nacked
	if nack {
		ts.nacked = nonce
		st.srv.metrics.NACKs.WithLabelValues(shortType(typ)).Inc()
		st.srv.log.Error("client rejected a response (NACK)", "stream", st.id, "node", st.node,
			"type", shortType(typ), "nonce", nonce, "version", req.GetVersionInfo(), "error", req.GetErrorDetail().GetMessage())
	}

	// An empty list means "none": grpc clients always name what they want, and
	// wildcard subscriptions would send them every Service in the cluster.
	want := map[string]bool{}
	for _, n := range req.GetResourceNames() {
		want[n] = true
	}
	var add, remove []string
	for n := range want {
		if !ts.names[n] {
			add = append(add, n)
		}
	}
	for n := range ts.names {
		if !want[n] {
			remove = append(remove, n)
			delete(ts.sent, n)
		}
	}
	ts.names = want
	st.info.requested(typ, req, nack, add, remove)
	if len(add)+len(remove) > 0 {
		st.srv.cache.subscribe(st, typ, add, remove)
	}
	// Answer every request that adds names, and the first one of a type even
	// if nothing did: a reconnecting client re-sends the version it had, and must
	// still hear from a server that has no memory of it.
	if len(add) > 0 {
		ts.added = true
	}
	return typ, ts.added || !ts.answered
}

// respond sends what changed in typ since the last response, if anything did
// and every subscribed name has been resolved by the agent.
func (st *stream) respond(typ string) error {
	ts := st.types[typ]
	if ts == nil {
		return nil
	}
	var present []item
	c := st.srv.cache
	c.mu.Lock()
	for n := range ts.names {
		e := c.entries[typ][n]
		if e == nil || !e.known {
			c.mu.Unlock()
			return nil // woken again when the agent Sets it
		}
		if e.resource != nil {
			present = append(present, item{n, e.version, e.resource, e.observed})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(present, func(a, b item) int { return strings.Compare(a.name, b.name) })

	var changed []item
	var oldest time.Time
	for _, it := range present {
		if prev, ok := ts.sent[it.name]; !ok || prev != it.version {
			changed = append(changed, it)
			if ok && (oldest.IsZero() || it.observed.Before(oldest)) {
				oldest = it.observed // only updates, not first sends, count as push latency
			}
		}
	}
	deleted := false
	for n := range ts.sent {
		if _, ok := slices.BinarySearchFunc(present, n, func(it item, n string) int { return strings.Compare(it.name, n) }); !ok {
			delete(ts.sent, n)
			deleted = true
		}
	}

	// A request that added names is answered once they are all resolved, even
	// when none of them exists: for Listeners and Clusters the full state then
	// says "does not exist" at once (instead of after the client's watch timer).
	send := changed
	switch {
	case fullState[typ] && (len(changed) > 0 || deleted || !ts.answered || ts.added):
		send = present
	case !fullState[typ] && !ts.answered:
		send = present
	case len(changed) == 0:
		ts.added = false // nothing new to say about Routes or Endpoints
		return nil
	}

	// The type's version is a hash of the whole subscribed state, so equal
	// state gives equal versions on any agent, restarted or not.
	var sig []byte
	for _, it := range present {
		sig = append(sig, it.name...)
		sig = append(sig, 0)
		sig = append(sig, it.version...)
		sig = append(sig, 0)
	}
	st.nonce++
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: hash(sig),
		TypeUrl:     typ,
		Nonce:       strconv.FormatUint(st.nonce, 10),
	}
	for _, it := range send {
		resp.Resources = append(resp.Resources, it.res)
	}
	if err := st.grpc.Send(resp); err != nil {
		return err
	}
	for _, it := range send {
		ts.sent[it.name] = it.version
	}
	ts.nonce, ts.answered, ts.added = resp.Nonce, true, false
	st.info.responded(typ, resp.VersionInfo, resp.Nonce, st.nonce, send, fullState[typ])
	st.srv.metrics.Pushes.WithLabelValues(shortType(typ)).Inc()
	if !oldest.IsZero() {
		st.srv.metrics.PushLatency.WithLabelValues(shortType(typ)).Observe(time.Since(oldest).Seconds())
	}
	st.srv.log.Debug("sent", "stream", st.id, "node", st.node, "type", shortType(typ),
		"version", resp.VersionInfo, "resources", len(send), "subscribed", len(ts.names))
	return nil
}

// item is one resource as read from the cache for a response.
type item struct {
	name, version string
	res           *anypb.Any
	observed      time.Time
}

// close drops every subscription of the stream.
func (st *stream) close() {
	for typ, ts := range st.types {
		names := make([]string, 0, len(ts.names))
		for n := range ts.names {
			names = append(names, n)
		}
		st.srv.cache.subscribe(st, typ, nil, names)
	}
	if st.node != "" {
		st.srv.log.Info("client disconnected", "stream", st.id, "node", st.node)
	}
}

// shortType is a type URL's metric label: "Listener", "Cluster", ...
func shortType(typ string) string {
	switch typ {
	case resources.ListenerType:
		return "LDS"
	case resources.RouteType:
		return "RDS"
	case resources.ClusterType:
		return "CDS"
	case resources.EndpointType:
		return "EDS"
	}
	return "other"
}
