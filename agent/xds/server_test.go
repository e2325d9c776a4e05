package xds

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/internal/poll"
)

// world is a stand-in for the agent: it answers interests from a map of
// clusters (served as a Listener, Cluster, ... of that name for each type),
// and can change them. Names in held are not resolved until released.
type world struct {
	cache *Cache
	srv   *Server // whose subscriptions run waits on
	mu    sync.Mutex
	data  map[string]proto.Message // cluster name → resource
	held  map[string]bool
}

func (w *world) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.cache.Interests():
			// A request's names are subscribed one by one, under the
			// server's subscription lock: taking the interests under it
			// takes all of a request's at once. Else a response could hold
			// the names the world happened to see first (which a client
			// must accept, but a test would have to expect).
			w.srv.subMu.Lock()
			ins := w.cache.TakeInterests()
			w.srv.subMu.Unlock()
			for _, in := range ins {
				w.mu.Lock()
				held := w.held[in.Name]
				w.mu.Unlock()
				if in.Wanted && !held {
					w.resolve(in.Type, in.Name)
				}
			}
			w.cache.Publish() // the whole batch at once, as the agent does
		}
	}
}

// resolve stages a name of a type as the world has it now.
func (w *world) resolve(typ, name string) {
	w.mu.Lock()
	res := w.data[name]
	w.mu.Unlock()
	if res != nil && typ == ListenerType {
		res = &listenerv3.Listener{Name: name}
	}
	w.cache.Set(typ, name, res, Scope{}, time.Now())
}

// hold keeps names unresolved, as an agent that has not got to them yet.
func (w *world) hold(names ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range names {
		w.held[n] = true
	}
}

// release resolves a held name of a type.
func (w *world) release(typ, name string) {
	w.mu.Lock()
	delete(w.held, name)
	w.mu.Unlock()
	w.resolve(typ, name)
	w.cache.Publish()
}

func (w *world) update(name string, res proto.Message) {
	w.mu.Lock()
	w.data[name] = res
	w.mu.Unlock()
	w.cache.Set(ClusterType, name, res, Scope{}, time.Now())
	w.cache.Publish()
}

type testServer struct {
	world    *world
	srv      *Server
	metrics  *metrics.Metrics
	addr     string // ADS
	csdsAddr string
}

func startServer(t testing.TB, clusters ...string) *testServer {
	t.Helper()
	return startServerWith(t, Options{}, clusters...)
}

func startServerWith(t testing.TB, o Options, clusters ...string) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &world{cache: NewCache(), data: map[string]proto.Message{}, held: map[string]bool{}}
	for _, c := range append(clusters, fenceName) {
		w.data[c] = resources.Cluster(c, resources.DefaultLB)
	}
	m := metrics.New(prometheus.NewRegistry())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(w.cache, m, slog.New(slog.DiscardHandler), o)
	w.srv = srv
	go w.run(ctx)
	g := srv.Transport(1 << 20) // as the agent serves ADS
	go g.Serve(srv.Listener(lis))
	// CSDS is served apart, as the agent's debug port does.
	csdsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	csds := grpc.NewServer()
	srv.RegisterCSDS(csds)
	go csds.Serve(csdsLis)
	t.Cleanup(func() { g.Stop(); csds.Stop(); cancel() })
	return &testServer{world: w, srv: srv, metrics: m, addr: lis.Addr().String(), csdsAddr: csdsLis.Addr().String()}
}

// adsClient is a raw ADS client: it speaks the protocol step by step.
type adsClient struct {
	t         testing.TB
	srv       *testServer
	node      string   // the Node id it sends; "test" unless set
	typ       string   // the type it asks for; CDS unless set
	names     []string // what it last asked for
	stream    discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	responses chan *discoveryv3.DiscoveryResponse // one reader, so no response is lost
	last      *discoveryv3.DiscoveryResponse
	sent      uint64                        // requests sent
	lastReq   *discoveryv3.DiscoveryRequest // the latest of them
}

func dial(t testing.TB, s *testServer) *adsClient {
	t.Helper()
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, srv: s, stream: st, responses: make(chan *discoveryv3.DiscoveryResponse, 16)}
	go func() {
		defer close(c.responses)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			c.responses <- r
		}
	}()
	return c
}

// request subscribes to names, acknowledging the last response.
func (c *adsClient) request(names ...string) {
	c.t.Helper()
	req := &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: cmp.Or(c.node, "test")},
		TypeUrl:       cmp.Or(c.typ, ClusterType),
		ResourceNames: names,
	}
	if c.last != nil {
		req.VersionInfo, req.ResponseNonce = c.last.VersionInfo, c.last.Nonce
	}
	c.names = names
	c.send(req)
}

func (c *adsClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
	c.sent++
	c.lastReq = req
}

func (c *adsClient) nack(msg string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{
		TypeUrl: cmp.Or(c.typ, ClusterType), ResponseNonce: c.last.Nonce,
		ResourceNames: c.names, ErrorDetail: &status.Status{Code: 3, Message: msg},
	})
}

// expect waits for the next response and checks the names in it.
func (c *adsClient) expect(want ...string) {
	c.t.Helper()
	select {
	case r, ok := <-c.responses:
		if !ok {
			c.t.Fatalf("stream ended, want a response holding %v", want)
		}
		c.last = r
		if got := c.got(); !slices.Equal(got, want) {
			c.t.Fatalf("response holds %v, want %v", got, want)
		}
	case <-time.After(poll.Timeout):
		c.t.Fatalf("no response, want one holding %v", want)
	}
}

// fenceName is a resource every test server has, for expectNothing.
const fenceName = "fence"

// expectNothing checks that the server sent nothing for what happened last
// (the client's last request, a change the client does not subscribe to),
// without waiting for a time to pass. Once the server has handled every
// request the client sent, the client asks for one more name, the fence;
// a stream answers in order, so the next response must be the one carrying
// the fence: anything the server sent before it is what should not have
// been sent. A NACK is repeated with the fence, so that it is not turned
// into an ACK.
func (c *adsClient) expectNothing() {
	c.t.Helper()
	poll.Until(c.t, "the server handles the client's requests", func() bool { return c.requestsHandled() == c.sent })
	req := &discoveryv3.DiscoveryRequest{
		TypeUrl:       cmp.Or(c.typ, ClusterType),
		ResourceNames: append(slices.Clone(c.names), fenceName),
		VersionInfo:   c.lastReq.GetVersionInfo(), ResponseNonce: c.lastReq.GetResponseNonce(), ErrorDetail: c.lastReq.GetErrorDetail(),
	}
	if c.lastReq.GetErrorDetail() == nil && c.last != nil {
		req.VersionInfo, req.ResponseNonce = c.last.VersionInfo, c.last.Nonce
	}
	c.names = req.ResourceNames
	c.send(req)
	select {
	case r, ok := <-c.responses:
		if !ok {
			c.t.Fatal("stream ended, want the response carrying the fence")
		}
		c.last = r
		if !slices.Contains(c.got(), fenceName) {
			c.t.Fatalf("unexpected response holding %v", c.got())
		}
	case <-time.After(poll.Timeout):
		c.t.Fatal("no response to the fence")
	}
}

// requestsHandled is how many requests of its type the server has handled
// from the client, found by its node id.
func (c *adsClient) requestsHandled() uint64 {
	c.t.Helper()
	node, typ := cmp.Or(c.node, "test"), cmp.Or(c.typ, ClusterType)
	var n uint64
	found := 0
	for _, cl := range c.srv.srv.Clients() {
		if cl.Node != node {
			continue
		}
		found++
		for _, ts := range cl.Types {
			if ts.TypeURL == typ {
				n = ts.Requests
			}
		}
	}
	if found > 1 {
		c.t.Fatalf("%d streams of node %q: give each client a node id of its own", found, node)
	}
	return n
}

func (c *adsClient) got() []string {
	var out []string
	for _, a := range c.last.GetResources() {
		r, err := a.UnmarshalNew()
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, r.(interface{ GetName() string }).GetName())
	}
	return out
}

func TestTwoClientsWithDifferentSubsetsAreBothAnswered(t *testing.T) {
	s := startServer(t, "be1", "be2")
	c1, c2 := dial(t, s), dial(t, s)
	c1.request("be1")
	c1.expect("be1")
	c2.request("be2")
	c2.expect("be2")
}

func TestAddingANameAtTheSameVersionIsAnswered(t *testing.T) {
	s := startServer(t, "be1", "be2")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	c.request("be1") // ACK
	c.expectNothing()
	c.request("be1", "be2") // same version, one more name: the snapshot cache's blind spot
	c.expect("be1", "be2")
}

func TestUnknownNameIsAnsweredWithWhatExists(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("nosuch")
	c.expect() // an empty answer: nothing by that name
	c.request("nosuch", "be1")
	c.expect("be1")
}

func TestChangeIsPushedOnlyToItsSubscribers(t *testing.T) {
	s := startServer(t, "be1", "be2")
	c1, c2 := dial(t, s), dial(t, s)
	c1.node, c2.node = "c1", "c2"
	c1.request("be1")
	c1.expect("be1")
	c2.request("be2")
	c2.expect("be2")
	c1.request("be1")
	c2.request("be2")

	changed := resources.Cluster("be2", resources.DefaultLB)
	changed.LbPolicy = 1
	s.world.update("be2", changed)
	c2.expect("be2")
	c1.expectNothing()

	s.world.update("be2", changed) // equal content: no push at all
	c2.expectNothing()
}

func TestClusterRemovalSendsTheRemainingFullState(t *testing.T) {
	s := startServer(t, "be1", "be2")
	c := dial(t, s)
	c.request("be1", "be2")
	c.expect("be1", "be2")
	c.request("be1", "be2")
	s.world.update("be2", nil)
	c.expect("be1") // full state for CDS: be2's absence means deleted
}

func TestVersionsDeriveFromContent(t *testing.T) {
	s1, s2 := startServer(t, "be1", "be2"), startServer(t, "be1", "be2")
	c1, c2 := dial(t, s1), dial(t, s2)
	c1.request("be1", "be2")
	c1.expect("be1", "be2")
	c2.request("be2", "be1")
	c2.expect("be1", "be2")
	if c1.last.VersionInfo != c2.last.VersionInfo {
		t.Errorf("two servers with equal content disagree on version: %q vs %q", c1.last.VersionInfo, c2.last.VersionInfo)
	}
}

func TestReconnectingClientIsAnsweredEvenAtItsOldVersion(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	version := c.last.VersionInfo

	// A new stream (as after an agent restart) that claims to have the
	// current version must still get an answer.
	c2 := dial(t, s)
	c2.last = &discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: "42"}
	c2.request("be1")
	c2.expect("be1")
}

func TestNACKIsCountedAndNotResent(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	c.nack("bad cluster")
	c.expectNothing()
	if got := testutil.ToFloat64(s.metrics.NACKs.WithLabelValues("CDS", "other")); got != 1 {
		t.Errorf("NACK counter = %v, want 1", got)
	}
}

func TestUnsubscribingReleasesInterest(t *testing.T) {
	s := startServer(t, "be1", "be2")
	c := dial(t, s)
	c.request("be1", "be2")
	c.expect("be1", "be2")
	c.request("be1")
	waitFor(t, func() bool { return !s.world.cache.Subscribed(ClusterType, "be2") })
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !s.world.cache.Subscribed(ClusterType, "be1") })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	poll.Until(t, "the condition is met", cond)
}

func TestRepeatedSubscriptionIsRecognised(t *testing.T) {
	ts := &typeState{names: map[string]uint64{"a": 0, "b": 0, "c": 0}}
	for _, tc := range []struct {
		names     []string
		unchanged bool
	}{
		{[]string{"a", "b", "c"}, true},
		{[]string{"c", "a", "b"}, true}, // clients send names in any order
		{[]string{"c", "a", "b"}, true}, // and again: stamps from the last call do not count as repeats
		{[]string{"a", "a", "b"}, false},
		{[]string{"a", "b", "d"}, false},
		{[]string{"a", "b"}, false},
		{[]string{"a", "b", "c", "d"}, false},
		{nil, false},
	} {
		if got := ts.stampNames(tc.names); got != tc.unchanged {
			t.Errorf("stampNames(%q) = %v, want %v", tc.names, got, tc.unchanged)
		}
	}
}
