package xds

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodexds/nodexds/agent/metrics"
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
	Key func(c Client, typ, name string) string
}

// Client is who a stream serves, as Key sees it.
type Client struct {
	Node *corev3.Node // its first request's, trimmed
	Addr netip.Addr   // the stream's peer
	// Namespaces are the client's, as admission found them.
	Namespaces []string
}

// Server is an ADS server (state-of-the-world) over a Cache. It owns the
// streams: who subscribes to what, and what each was told.
type Server struct {
	cache   *Cache
	metrics *metrics.Metrics
	log     *slog.Logger
	limits  Limits
	admit   AdmitFunc
	absent  func(typ, name string) proto.Message
	key     func(c Client, typ, name string) string
	logs    *limiter // shared by every client's log lines
	budget  *readBudget
	ids     atomic.Uint64
	// sent, if set, is told of every response written (benchmarks
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
		budget:  newReadBudget(o.Limits.WithDefaults().MaxReadingBytes),
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
		id:   s.ids.Add(1),
		srv:  s,
		grpc: gs,
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
	return st.receive()
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
