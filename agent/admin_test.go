package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/admin"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/poll"
)

const be1Cluster = "be1.default.svc.cluster.local:8080"

// get fetches an admin URL path, with an optional Accept header.
func get(t *testing.T, adminAddr, path, accept string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+adminAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func getJSON(t *testing.T, adminAddr, path string, v any) {
	t.Helper()
	code, body := get(t, adminAddr, path, "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// metric returns the value of one series in a Prometheus text exposition,
// e.g. `nodexds_xds_pushes_total{type="EDS"}`; -1 when it is not there.
func metric(body, series string) float64 {
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// within retries check until it reports nothing missing; see poll.Check.
func within(t *testing.T, check func() string) {
	t.Helper()
	poll.Check(t, check)
}

// withDebug serves the agent's debug port on a free loopback address, and
// stores that address in *addr.
func withDebug(t testing.TB, addr *string) func(*serve.Options) {
	return func(o *serve.Options) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		o.Debug = lis
		*addr = lis.Addr().String()
	}
}

// csdsConn is a gRPC connection to the debug port.
func csdsConn(t *testing.T, adminAddr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(adminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func csds(t *testing.T, adminAddr string) statusv3.ClientStatusDiscoveryServiceClient {
	t.Helper()
	return statusv3.NewClientStatusDiscoveryServiceClient(csdsConn(t, adminAddr))
}

// csdsConfig asks CSDS for one node's state of one resource.
func csdsConfig(t *testing.T, c statusv3.ClientStatusDiscoveryServiceClient, node, typ, name string) *statusv3.ClientConfig_GenericXdsConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.FetchClientStatus(ctx, &statusv3.ClientStatusRequest{NodeMatchers: []*matcherv3.NodeMatcher{{
		NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: node}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, cc := range resp.GetConfig() {
		if cc.GetNode().GetId() != node {
			t.Fatalf("node matcher %q returned node %q", node, cc.GetNode().GetId())
		}
		for _, g := range cc.GetGenericXdsConfigs() {
			if g.GetTypeUrl() == typ && g.GetName() == name {
				return g
			}
		}
	}
	return nil
}

func serviceOf(d admin.ServicesDebug, cluster string) *admin.ServiceDebug {
	for i := range d.Services {
		if d.Services[i].Cluster == cluster {
			return &d.Services[i]
		}
	}
	return nil
}

func TestAdminShowsWhatIsServedAndToWhom(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-local", "a1")
	w.startBackend(be1, "be1-zone", "a2")
	var adminAddr, debug string
	a := startAgent(t, w, withAdmin(t, &adminAddr), withDebug(t, &debug), withHealth(t, fastHealth), func(o *serve.Options) { o.Pprof = true })
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "be1-local")
	node := "test/" + t.Name()

	// Metrics moved.
	code, body := get(t, adminAddr, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for series, atLeast := range map[string]float64{
		"nodexds_connected_clients":                                  1,
		`nodexds_xds_pushes_total{type="EDS"}`:                       1,
		`nodexds_xds_pushes_total{type="LDS"}`:                       1,
		`nodexds_subscribed_resources{type="EDS"}`:                   1,
		`nodexds_subscribed_resources{type="LDS"}`:                   1,
		`nodexds_discovery_events_total{kind="service",op="upsert"}`: 1,
	} {
		if got := metric(body, series); got < atLeast {
			t.Errorf("%s = %v, want ≥ %v", series, got, atLeast)
		}
	}
	for _, path := range []string{"/readyz", "/healthz"} {
		if code, _ := get(t, adminAddr, path, ""); code != http.StatusOK {
			t.Errorf("%s: %d, want 200", path, code)
		}
	}

	// /debug/services: the cluster, its policy, the local endpoint first, and
	// the client that dialled it. EDS turns SYNCED once the client ACKs, the
	// endpoints HEALTHY once checked.
	var d admin.ServicesDebug
	within(t, func() string {
		d = admin.ServicesDebug{}
		getJSON(t, debug, "/debug/services", &d)
		s := serviceOf(d, be1Cluster)
		if s == nil || len(s.Clients) != 1 || s.Clients[0].EDS != xds.Synced ||
			len(s.Priorities) != 2 || s.Priorities[0].Endpoints[0].Health != "HEALTHY" || s.Priorities[1].Endpoints[0].Health != "HEALTHY" {
			return "no synced client of " + be1Cluster + " with healthy endpoints in /debug/services: " + mustJSON(d)
		}
		return ""
	})
	if d.Node != "a1" || d.Zone != "a" || d.Region != "r1" {
		t.Errorf("agent placement = %s/%s/%s, want a1/a/r1", d.Node, d.Zone, d.Region)
	}
	s := serviceOf(d, be1Cluster)
	if s.Service != "default/be1" || s.Port != 8080 || !s.Exists || s.Policy != "node,zone,region,*" || s.Source != "default" {
		t.Errorf("service = %+v, want default/be1 port 8080 under the default policy", s.ServiceView)
	}
	if len(s.Priorities) != 2 || s.Priorities[0].Tiers != "node" || len(s.Priorities[0].Endpoints) != 1 ||
		s.Priorities[0].Endpoints[0].Pod != "be1-local" || s.Priorities[0].Endpoints[0].Node != "a1" ||
		s.Priorities[1].Tiers != "zone" || s.Priorities[1].Endpoints[0].Pod != "be1-zone" {
		t.Errorf("priorities = %+v, want [node: be1-local] [zone: be1-zone]", s.Priorities)
	}
	if c := s.Clients[0]; c.Node != node || !slices.Equal(c.Via, []string{"be1:8080"}) ||
		!slices.Equal(c.Types, []string{"LDS", "RDS", "CDS", "EDS"}) {
		t.Errorf("client = %+v, want %s via be1:8080 on every type", c, node)
	}

	// The text form, asked for either way.
	for _, how := range []struct{ path, accept string }{{"/debug/services?format=text", ""}, {"/debug/services", "text/plain"}} {
		code, text := get(t, debug, how.path, how.accept)
		for _, want := range []string{
			"node a1  zone a  region r1\n",
			"cluster " + be1Cluster + "  (default/be1 port 8080)  policy node,zone,region,* (default)\n",
			"  clients: " + node + " (via be1:8080)\n",
			"  priority 0 [node]: 127.0.0.1:",
			" be1-local a1 a HEALTHY\n",
			"  priority 1 [zone]: 127.0.0.1:",
		} {
			if code != http.StatusOK || !strings.Contains(text, want) {
				t.Errorf("GET %s (Accept %q): %d, no %q in\n%s", how.path, how.accept, code, want, text)
			}
		}
	}
	if code, _ := get(t, debug, "/debug/services?format=yaml", ""); code != http.StatusBadRequest {
		t.Errorf("format=yaml: %d, want 400", code)
	}

	// /debug/clients.
	var page admin.ClientsDebug
	getJSON(t, debug, "/debug/clients", &page)
	clients := page.Clients
	if page.Total != 1 || len(clients) != 1 || clients[0].Node != node || clients[0].Locality == nil || clients[0].Locality.Zone != "a" ||
		!strings.Contains(clients[0].UserAgent, "gRPC Go") || len(clients[0].Types) != 4 {
		t.Errorf("/debug/clients = %s, want %s in zone a, gRPC Go, 4 types", mustJSON(clients), node)
	}

	// CSDS, over gRPC on the debug port.
	g := csdsConfig(t, csds(t, debug), node, xds.EndpointType, be1Cluster)
	if g.GetConfigStatus() != statusv3.ConfigStatus_SYNCED || g.GetVersionInfo() == "" || g.GetXdsConfig() == nil {
		t.Errorf("CSDS EDS %s = %v, want SYNCED with a version and the resource", be1Cluster, g)
	}
	cla := resources.LoadAssignment("", nil, nil)
	if err := g.GetXdsConfig().UnmarshalTo(cla); err != nil || cla.GetClusterName() != be1Cluster || len(cla.GetEndpoints()) != 2 {
		t.Errorf("CSDS EDS resource = %v (%v), want %s's two priorities", cla, err, be1Cluster)
	}

	// Reflection, for grpcurl.
	rc, err := reflectionpb.NewServerReflectionClient(csdsConn(t, debug)).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	list, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list.GetListServicesResponse().GetService(), func(s *reflectionpb.ServiceResponse) bool {
		return s.GetName() == "envoy.service.status.v3.ClientStatusDiscoveryService"
	}) {
		t.Errorf("reflection lists %v, want CSDS among them", list.GetListServicesResponse().GetService())
	}
	rc.CloseSend()

	// pprof is there when asked for.
	if code, _ := get(t, debug, "/debug/pprof/", ""); code != http.StatusOK {
		t.Errorf("/debug/pprof/: %d, want 200", code)
	}

	// None of it is on the admin port, which the pod network reaches.
	for _, path := range []string{"/debug/services", "/debug/clients", "/debug/pprof/", "/debug/services?format=text"} {
		if code, body := get(t, adminAddr, path, ""); code != http.StatusNotFound {
			t.Errorf("admin port %s: %d %q, want 404", path, code, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = csds(t, adminAddr).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{})
	if c := status.Code(err); c != codes.Unimplemented && c != codes.Unavailable {
		t.Errorf("CSDS on the admin port: %v, want Unimplemented or Unavailable", err)
	}
}

func TestAdminWithoutPprofHasNoProfiles(t *testing.T) {
	w := newWorld(t)
	var adminAddr, debug string
	startAgent(t, w, withAdmin(t, &adminAddr), withDebug(t, &debug))
	within(t, func() string {
		if code, _ := get(t, adminAddr, "/readyz", ""); code != http.StatusOK {
			return "never ready"
		}
		return ""
	})
	if code, _ := get(t, debug, "/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without Pprof: %d, want 404", code)
	}
	var page admin.ClientsDebug
	getJSON(t, debug, "/debug/clients", &page)
	if page.Clients == nil || len(page.Clients) != 0 || page.Total != 0 {
		t.Errorf("/debug/clients with no client = %s, want none", mustJSON(page))
	}
}

func TestNACKShowsInCSDSAndDebugClients(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-local", "a1")
	var adminAddr, debug string
	a := startAgent(t, w, withAdmin(t, &adminAddr), withDebug(t, &debug))

	// A raw ADS client subscribes to the cluster by name, and rejects it.
	conn, err := grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: "raw-nacker"}, TypeUrl: xds.ClusterType, ResourceNames: []string{be1Cluster},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := ads.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 {
		t.Fatalf("CDS response holds %d resources, want 1", len(resp.GetResources()))
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{
		TypeUrl: xds.ClusterType, ResourceNames: []string{be1Cluster}, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "cluster " + be1Cluster + ": unsupported lb policy"},
	}); err != nil {
		t.Fatal(err)
	}

	c := csds(t, debug)
	within(t, func() string {
		g := csdsConfig(t, c, "raw-nacker", xds.ClusterType, be1Cluster)
		if g.GetConfigStatus() != statusv3.ConfigStatus_ERROR || !strings.Contains(g.GetErrorState().GetDetails(), "unsupported lb policy") ||
			g.GetVersionInfo() != resp.GetVersionInfo() {
			return "CSDS does not show the NACK: " + g.String()
		}
		return ""
	})

	var page admin.ClientsDebug
	getJSON(t, debug, "/debug/clients", &page)
	clients := page.Clients
	if len(clients) != 1 || clients[0].Node != "raw-nacker" || len(clients[0].Types) != 1 {
		t.Fatalf("/debug/clients = %s, want raw-nacker with CDS only", mustJSON(clients))
	}
	cds := clients[0].Types[0]
	if cds.Type != "CDS" || cds.NACKs != 1 || cds.LastNACK == nil || !strings.Contains(cds.LastNACK.Error, "unsupported lb policy") ||
		len(cds.Resources) != 1 || cds.Resources[0].State != xds.Error {
		t.Errorf("/debug/clients CDS = %s, want one NACK and the cluster in ERROR", mustJSON(cds))
	}
	code, body := get(t, adminAddr, "/metrics", "")
	if got := metric(body, `nodexds_xds_nacks_total{stack="other",type="CDS"}`); code != http.StatusOK || got != 1 {
		t.Errorf(`nodexds_xds_nacks_total{stack="other",type="CDS"} = %v, want 1`, got)
	}
	_, text := get(t, debug, "/debug/services?format=text", "")
	if !strings.Contains(text, "  clients: raw-nacker (CDS)\n") {
		t.Errorf("/debug/services text does not list the raw client by type:\n%s", text)
	}
}

func mustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// rawADS opens an ADS stream as node, asks for names of typ, and waits for
// the answer, so the agent has the subscription once it returns. dialer,
// when given, picks the connection's source address.
func rawADS(t testing.TB, addr, node, typ string, dialer *net.Dialer, names ...string) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if dialer != nil {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", a)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rawStream(t, conn, node, typ, names...)
}

func rawStream(t testing.TB, conn *grpc.ClientConn, node, typ string, names ...string) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	if _, err := ads.Recv(); err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	return ads
}

func TestHealthzFailsWhileTheEventLoopIsStuck(t *testing.T) {
	w := newWorld(t)
	w.addService("default", "be1", func(s *service) {
		s.Annotations = map[string]string{topology.AnnotationTopology: "node,zoen"} // reported: the hook below
	})
	// The loop reports annotation errors itself: a reporter that never
	// returns is a loop stuck in a handler.
	stuck, release := make(chan struct{}), make(chan struct{})
	blocking := agent.ReporterFunc(func(*discovery.Service, *discovery.AnnotationError) {
		close(stuck)
		<-release
	})
	var adminAddr string
	a := startAgent(t, w, withAdmin(t, &adminAddr), func(o *serve.Options) {
		o.Reporter = blocking
		o.StuckAfter = 3 * time.Second // the loop beats every second when idle
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	healthz := func(want int) func() string {
		return func() string {
			if code, body := get(t, adminAddr, "/healthz", ""); code != want {
				return fmt.Sprintf("/healthz: %d %q, want %d", code, body, want)
			}
			return ""
		}
	}
	// That an idle loop keeps /healthz green is TestIdleLoopBeatsWithinTheStuckLimit's
	// (on synctest's clock); here, the agent starts healthy.
	within(t, healthz(http.StatusOK))

	// A client asks for the cluster: building it reports the annotation, and
	// the loop blocks there.
	conn, err := grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n"}, TypeUrl: xds.ClusterType, ResourceNames: []string{be1Cluster}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
	case <-time.After(poll.Timeout):
		t.Fatal("the agent never reported the annotation")
	}
	within(t, healthz(http.StatusServiceUnavailable))
	if _, body := get(t, adminAddr, "/healthz", ""); !strings.Contains(body, "event loop stuck") {
		t.Errorf("/healthz says %q, want it to name the stuck event loop", body)
	}

	unblock()
	within(t, healthz(http.StatusOK))
}

// servicesPage reads /debug/services with query; it fails the test unless 200.
func servicesPage(t *testing.T, debug, query string) admin.ServicesDebug {
	t.Helper()
	var d admin.ServicesDebug
	getJSON(t, debug, "/debug/services?"+query, &d)
	return d
}

func TestDebugServicesFiltersAndPages(t *testing.T) {
	w := newWorld(t)
	for _, s := range []struct{ ns, name string }{{"default", "be1"}, {"default", "be2"}, {"other", "be3"}} {
		w.startBackend(w.addService(s.ns, s.name), s.name+"-pod", "a1")
	}
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	const (
		c1 = "be1.default.svc.cluster.local:8080"
		c2 = "be2.default.svc.cluster.local:8080"
		c3 = "be3.other.svc.cluster.local:8080"
	)
	rawADS(t, a.Addr, "n1", xds.ClusterType, nil, c1, c2)
	// n2 dials a listener, and asks for the route configuration it names, as
	// gRPC does.
	n2 := rawADS(t, a.Addr, "n2", xds.ListenerType, nil, "be3.other:8080")
	if err := n2.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.RouteType, ResourceNames: []string{c3}}); err != nil {
		t.Fatal(err)
	}
	var page admin.ClientsDebug
	within(t, func() string {
		page = admin.ClientsDebug{}
		getJSON(t, debug, "/debug/clients?client=n1", &page)
		if servicesPage(t, debug, "").Total != 3 || len(page.Clients) != 1 {
			return "the agent does not show both clients' subscriptions"
		}
		return ""
	})
	n1Stream := strconv.FormatUint(page.Clients[0].Stream, 10)

	for _, tc := range []struct {
		name, query string
		clusters    []string
		total       int
		clients     []string // of the first Service on the page
		next        string
	}{
		{"no filter lists every subscribed port", "", []string{c1, c2, c3}, 3, []string{"n1"}, ""},
		{"a Service keeps its ports", "service=default/be2", []string{c2}, 1, []string{"n1"}, ""},
		{"a Service nobody subscribes to shows nothing", "service=default/nope", []string{}, 0, nil, ""},
		{"a node id keeps what it reaches, through listeners too", "client=n2", []string{c3}, 1, []string{"n2"}, ""},
		{"a stream number keeps what that stream names", "client=" + n1Stream, []string{c1, c2}, 2, []string{"n1"}, ""},
		{"an unknown client keeps nothing", "client=nobody", []string{}, 0, nil, ""},
		{"limit and offset page through in cluster order", "limit=1&offset=1", []string{c2}, 3, []string{"n1"},
			"/debug/services?limit=1&offset=2"},
		{"the last page has no next", "limit=2&offset=2", []string{c3}, 3, []string{"n2"}, ""},
		{"an offset past the end is an empty page with the total", "offset=10", []string{}, 3, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := servicesPage(t, debug, tc.query)
			got := []string{}
			for _, s := range d.Services {
				got = append(got, s.Cluster)
			}
			if !slices.Equal(got, tc.clusters) || d.Total != tc.total || d.Next != tc.next {
				t.Fatalf("clusters %v total %d next %q, want %v total %d next %q", got, d.Total, d.Next, tc.clusters, tc.total, tc.next)
			}
			if len(d.Services) > 0 {
				var clients []string
				for _, c := range d.Services[0].Clients {
					clients = append(clients, c.Node)
				}
				if !slices.Equal(clients, tc.clients) || d.Services[0].ClientsTotal != len(tc.clients) {
					t.Errorf("%s clients %v (total %d), want %v", got[0], clients, d.Services[0].ClientsTotal, tc.clients)
				}
			}
		})
	}
	for _, query := range []string{"limit=0", "limit=501", "offset=-2", "service=be1", "format=yaml"} {
		if code, body := get(t, debug, "/debug/services?"+query, ""); code != http.StatusBadRequest {
			t.Errorf("/debug/services?%s: %d %q, want 400", query, code, body)
		}
		if code, body := get(t, debug, "/debug/clients?"+query, ""); code != http.StatusBadRequest && query != "format=yaml" {
			t.Errorf("/debug/clients?%s: %d %q, want 400", query, code, body)
		}
	}
}

func TestDebugServicesPagesThroughThousandsOfServices(t *testing.T) {
	w := newWorld(t)
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	// One client subscribes to 5,000 Service ports that do not exist: each
	// is shown, with no endpoints.
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%04d.default.svc.cluster.local:8080", i)
	}
	rawADS(t, a.Addr, "many", xds.ClusterType, nil, names...)

	_, body := get(t, debug, "/debug/services", "")
	var d admin.ServicesDebug
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	if d.Total != 5000 || len(d.Services) != admin.DefaultPageLimit || d.Next == "" {
		t.Fatalf("default page: %d of %d services, next %q; want %d of 5000 and a next page", len(d.Services), d.Total, d.Next, admin.DefaultPageLimit)
	}
	// A nonexistent port is ~300 bytes of JSON with its client: the page is
	// the size of its limit, not of the cluster.
	if len(body) > admin.DefaultPageLimit*1000 {
		t.Errorf("default page is %d bytes, want at most %d", len(body), admin.DefaultPageLimit*1000)
	}
	t.Logf("default page of 5,000 subscribed ports: %d bytes", len(body))

	// Following next links visits each port once, in order.
	seen := []string{}
	pages := 0
	for path := "/debug/services?limit=500"; path != ""; pages++ {
		var p admin.ServicesDebug
		getJSON(t, debug, path, &p)
		if len(p.Services) > 500 || pages > 10 {
			t.Fatalf("page %d holds %d services", pages, len(p.Services))
		}
		for _, s := range p.Services {
			seen = append(seen, s.Cluster)
		}
		path = p.Next
	}
	if pages != 10 || !slices.Equal(seen, names) {
		t.Errorf("%d pages listed %d ports, want 10 pages listing all 5,000 in order", pages, len(seen))
	}
}

func TestCSDSAnswersAtMost100ClientsAndHonoursNodeMatchers(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-pod", "a1")
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	// 105 streams; a peer IP may open 100, so the last ones come from another
	// loopback address.
	conn, err := grpc.NewClient(a.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for i := range 95 {
		rawStream(t, conn, fmt.Sprintf("csds-%03d", i), xds.ClusterType, be1Cluster)
	}
	other := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	for i := 95; i < 105; i++ {
		rawADS(t, a.Addr, fmt.Sprintf("csds-%03d", i), xds.ClusterType, other, be1Cluster)
	}

	c := csds(t, debug)
	fetch := func(m *matcherv3.NodeMatcher) ([]string, string) {
		t.Helper()
		req := &statusv3.ClientStatusRequest{}
		if m != nil {
			req.NodeMatchers = []*matcherv3.NodeMatcher{m}
		}
		var header metadata.MD
		resp, err := c.FetchClientStatus(context.Background(), req, grpc.Header(&header))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, cc := range resp.GetConfig() {
			ids = append(ids, cc.GetNode().GetId())
		}
		return ids, strings.Join(header.Get(admin.CSDSTotalHeader), ",")
	}
	ids, total := fetch(nil)
	if len(ids) != admin.MaxCSDSClients || total != "105" || ids[0] != "csds-000" || ids[99] != "csds-099" {
		t.Errorf("CSDS with no matcher: %d configs (%v…), header %q; want the first 100 by node id of 105", len(ids), ids[:min(3, len(ids))], total)
	}
	ids, total = fetch(&matcherv3.NodeMatcher{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "csds-10"}}})
	if want := []string{"csds-100", "csds-101", "csds-102", "csds-103", "csds-104"}; !slices.Equal(ids, want) || total != "5" {
		t.Errorf("CSDS with prefix csds-10: %v, header %q; want %v and 5", ids, total, want)
	}

	// The streaming form is capped the same way.
	s, err := c.StreamClientStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&statusv3.ClientStatusRequest{}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetConfig()); n != admin.MaxCSDSClients {
		t.Errorf("StreamClientStatus: %d configs, want %d", n, admin.MaxCSDSClients)
	}
	s.CloseSend()
}
