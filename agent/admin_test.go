package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/xds"
)

const be1Cluster = "be1.default.svc.cluster.local:8080"

// get fetches an admin URL path, with an optional Accept header.
func get(t *testing.T, admin, path, accept string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+admin+path, nil)
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

func getJSON(t *testing.T, admin, path string, v any) {
	t.Helper()
	code, body := get(t, admin, path, "")
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

// within retries check every 20 ms for 10 s; check reports what is missing.
func within(t *testing.T, check func() string) {
	t.Helper()
	var why string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if why = check(); why == "" {
			return
		}
	}
	t.Fatal(why)
}

// csdsConn is a gRPC connection to the admin port.
func csdsConn(t *testing.T, admin string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func csds(t *testing.T, admin string) statusv3.ClientStatusDiscoveryServiceClient {
	t.Helper()
	return statusv3.NewClientStatusDiscoveryServiceClient(csdsConn(t, admin))
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

func serviceOf(d agent.ServicesDebug, cluster string) *agent.ServiceDebug {
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
	var admin string
	a := startAgent(t, w, withAdmin(t, &admin), withHealth(t, fastHealth), func(o *agent.Options) { o.Pprof = true })
	cc := dial(t, a, "be1:8080")
	eventually(t, cc, "be1-local")
	node := "test/" + t.Name()

	// Metrics moved.
	code, body := get(t, admin, "/metrics", "")
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
	if code, _ := get(t, admin, "/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz: %d, want 200", code)
	}

	// /debug/services: the cluster, its policy, the local endpoint first, and
	// the client that dialled it. EDS turns SYNCED once the client ACKs, the
	// endpoints HEALTHY once checked.
	var d agent.ServicesDebug
	within(t, func() string {
		d = agent.ServicesDebug{}
		getJSON(t, admin, "/debug/services", &d)
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
		code, text := get(t, admin, how.path, how.accept)
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
	if code, _ := get(t, admin, "/debug/services?format=yaml", ""); code != http.StatusBadRequest {
		t.Errorf("format=yaml: %d, want 400", code)
	}

	// /debug/clients.
	var clients []xds.ClientStatus
	getJSON(t, admin, "/debug/clients", &clients)
	if len(clients) != 1 || clients[0].Node != node || clients[0].Locality == nil || clients[0].Locality.Zone != "a" ||
		!strings.Contains(clients[0].UserAgent, "gRPC Go") || len(clients[0].Types) != 4 {
		t.Errorf("/debug/clients = %s, want %s in zone a, gRPC Go, 4 types", mustJSON(clients), node)
	}

	// CSDS, over gRPC on the same port.
	g := csdsConfig(t, csds(t, admin), node, xds.EndpointType, be1Cluster)
	if g.GetConfigStatus() != statusv3.ConfigStatus_SYNCED || g.GetVersionInfo() == "" || g.GetXdsConfig() == nil {
		t.Errorf("CSDS EDS %s = %v, want SYNCED with a version and the resource", be1Cluster, g)
	}
	cla := resources.LoadAssignment("", nil, nil)
	if err := g.GetXdsConfig().UnmarshalTo(cla); err != nil || cla.GetClusterName() != be1Cluster || len(cla.GetEndpoints()) != 2 {
		t.Errorf("CSDS EDS resource = %v (%v), want %s's two priorities", cla, err, be1Cluster)
	}

	// Reflection, for grpcurl.
	rc, err := reflectionpb.NewServerReflectionClient(csdsConn(t, admin)).ServerReflectionInfo(context.Background())
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
	if code, _ := get(t, admin, "/debug/pprof/", ""); code != http.StatusOK {
		t.Errorf("/debug/pprof/: %d, want 200", code)
	}
}

func TestAdminWithoutPprofHasNoProfiles(t *testing.T) {
	w := newWorld(t)
	var admin string
	startAgent(t, w, withAdmin(t, &admin))
	within(t, func() string {
		if code, _ := get(t, admin, "/readyz", ""); code != http.StatusOK {
			return "never ready"
		}
		return ""
	})
	if code, _ := get(t, admin, "/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without Pprof: %d, want 404", code)
	}
	var clients []xds.ClientStatus
	getJSON(t, admin, "/debug/clients", &clients)
	if clients == nil || len(clients) != 0 {
		t.Errorf("/debug/clients with no client = %v, want []", clients)
	}
}

func TestNACKShowsInCSDSAndDebugClients(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1")
	w.startBackend(be1, "be1-local", "a1")
	var admin string
	a := startAgent(t, w, withAdmin(t, &admin))

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

	c := csds(t, admin)
	within(t, func() string {
		g := csdsConfig(t, c, "raw-nacker", xds.ClusterType, be1Cluster)
		if g.GetConfigStatus() != statusv3.ConfigStatus_ERROR || !strings.Contains(g.GetErrorState().GetDetails(), "unsupported lb policy") ||
			g.GetVersionInfo() != resp.GetVersionInfo() {
			return "CSDS does not show the NACK: " + g.String()
		}
		return ""
	})

	var clients []xds.ClientStatus
	getJSON(t, admin, "/debug/clients", &clients)
	if len(clients) != 1 || clients[0].Node != "raw-nacker" || len(clients[0].Types) != 1 {
		t.Fatalf("/debug/clients = %s, want raw-nacker with CDS only", mustJSON(clients))
	}
	cds := clients[0].Types[0]
	if cds.Type != "CDS" || cds.NACKs != 1 || cds.LastNACK == nil || !strings.Contains(cds.LastNACK.Error, "unsupported lb policy") ||
		len(cds.Resources) != 1 || cds.Resources[0].State != xds.Error {
		t.Errorf("/debug/clients CDS = %s, want one NACK and the cluster in ERROR", mustJSON(cds))
	}
	code, body := get(t, admin, "/metrics", "")
	if got := metric(body, `nodexds_xds_nacks_total{type="CDS"}`); code != http.StatusOK || got != 1 {
		t.Errorf(`nodexds_xds_nacks_total{type="CDS"} = %v, want 1`, got)
	}
	_, text := get(t, admin, "/debug/services?format=text", "")
	if !strings.Contains(text, "  clients: raw-nacker (CDS)\n") {
		t.Errorf("/debug/services text does not list the raw client by type:\n%s", text)
	}
}

func mustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
