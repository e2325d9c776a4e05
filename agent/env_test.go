package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
	"github.com/nodexds/nodexds/internal/echo"
	"github.com/nodexds/nodexds/internal/poll"
)

// The test cluster's nodes: a1 and a2 in zone a, b1 in zone b (region r1),
// c1 in zone c of region r2. Agents under test run "on" a1.
var testNodes = []discovery.Node{
	{Name: "a1", Zone: "a", Region: "r1"},
	{Name: "a2", Zone: "a", Region: "r1"},
	{Name: "b1", Zone: "b", Region: "r1"},
	{Name: "c1", Zone: "c", Region: "r2"},
}

// world is a cluster described to an agent through a file source: tests
// change it and call write, as the API server would change.
type world struct {
	t        testing.TB
	path     string
	mu       sync.Mutex
	services []*service
	// namespaces are the annotations of Namespaces written before the
	// Services (none: no Namespace documents).
	namespaces map[string]map[string]string
}

type service struct {
	Namespace, Name string
	Port            int32
	Annotations     map[string]string
	Local           bool   // internalTrafficPolicy: Local
	Distribution    string // trafficDistribution
	Backends        []*backend
}

// backend is a real echo server standing in for a pod.
type backend struct {
	Name, Node string
	Ready      bool
	srv        *echo.Server
	addr       string
}

func newWorld(t testing.TB) *world {
	return &world{t: t, path: filepath.Join(t.TempDir(), "cluster.yaml")}
}

// addService adds a Service with one port named grpc.
func (w *world) addService(ns, name string, mut ...func(*service)) *service {
	s := &service{Namespace: ns, Name: name, Port: 8080}
	for _, m := range mut {
		m(s)
	}
	w.mu.Lock()
	w.services = append(w.services, s)
	w.mu.Unlock()
	return s
}

// startBackend runs a real echo server "on" node and lists it, ready, in svc.
func (w *world) startBackend(svc *service, name, node string, opts ...echo.Option) *backend {
	w.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.t.Fatal(err)
	}
	b := &backend{Name: name, Node: node, Ready: true, srv: echo.Serve(lis, name, opts...), addr: lis.Addr().String()}
	w.t.Cleanup(b.srv.Stop)
	w.mu.Lock()
	svc.Backends = append(svc.Backends, b)
	w.mu.Unlock()
	return b
}

// remove drops backends from their Service's endpoints (the pods are gone).
func (w *world) remove(svc *service, gone ...*backend) {
	w.mu.Lock()
	defer w.mu.Unlock()
	svc.Backends = slices.DeleteFunc(svc.Backends, func(b *backend) bool { return slices.Contains(gone, b) })
}

// write renders the world as Kubernetes YAML for the file source.
func (w *world) write() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, n := range testNodes {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels:\n    topology.kubernetes.io/zone: %s\n    topology.kubernetes.io/region: %s\n", n.Name, n.Zone, n.Region)
	}
	for _, ns := range slices.Sorted(maps.Keys(w.namespaces)) {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  annotations:\n", ns)
		for k, v := range w.namespaces[ns] {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
	}
	for _, s := range w.services {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n", s.Name, s.Namespace)
		if len(s.Annotations) > 0 {
			b.WriteString("  annotations:\n")
			for k, v := range s.Annotations {
				fmt.Fprintf(&b, "    %s: %q\n", k, v)
			}
		}
		fmt.Fprintf(&b, "spec:\n  ports:\n  - name: grpc\n    port: %d\n", s.Port)
		if s.Local {
			b.WriteString("  internalTrafficPolicy: Local\n")
		}
		if s.Distribution != "" {
			fmt.Fprintf(&b, "  trafficDistribution: %s\n", s.Distribution)
		}
		// One slice per backend port: the echo servers listen on random ports,
		// and a slice has one port list. Real clusters have one port per slice
		// set too; what matters here is that slices are merged.
		for i, be := range s.Backends {
			host, port, _ := net.SplitHostPort(be.addr)
			fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-%d\n  namespace: %s\n  labels:\n    kubernetes.io/service-name: %s\naddressType: IPv4\nports:\n- name: grpc\n  port: %s\nendpoints:\n- addresses: [%q]\n  nodeName: %s\n  conditions:\n    ready: %t\n  targetRef:\n    kind: Pod\n    name: %s\n",
				s.Name, i, s.Namespace, s.Name, port, host, be.Node, be.Ready, be.Name)
		}
	}
	tmp := w.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Rename(tmp, w.path); err != nil { // atomic: the agent never reads half a file
		w.t.Fatal(err)
	}
}

// testAgent is an agent serving on a free loopback port.
type testAgent struct {
	Addr     string
	Registry *prometheus.Registry
	Metrics  *metrics.Metrics
}

// startAgent runs an agent for node a1 on w's file, until the test ends.
func startAgent(t testing.TB, w *world, mut ...func(*serve.Options)) *testAgent {
	t.Helper()
	w.write()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("NODEXDS_TEST_LOG") != "" { // the agent's logs, when debugging a test
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	o := serve.Options{
		Config: agent.Config{
			NodeName:     "a1",
			Names:        names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
			DefaultTiers: topology.DefaultTiers,
			Coalesce:     10 * time.Millisecond,
		},
		Source:   &discovery.FileSource{Path: w.path, Poll: 10 * time.Millisecond, Log: log},
		XDS:      lis,
		Registry: reg,
		Metrics:  m,
		Log:      log,
	}
	for _, m := range mut {
		m(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve.Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return &testAgent{Addr: lis.Addr().String(), Registry: reg, Metrics: m}
}

// fastHealth is active checking tuned for tests: what a server says (a
// NOT_SERVING push, a refused connection) is acted on in a few hundred
// milliseconds, but a healthy server has seconds to answer, so that a busy
// machine under the race detector does not make it look dead and flap.
var fastHealth = health.Config{
	Interval: 200 * time.Millisecond, LivenessInterval: time.Second, Timeout: 5 * time.Second,
	UnhealthyThreshold: 2, HealthyThreshold: 1, Jitter: 0.1, MaxDials: 8, MaxEndpoints: 100,
}

// withHealth runs the agent with a real prober.
func withHealth(t testing.TB, cfg health.Config) func(*serve.Options) {
	return func(o *serve.Options) {
		p := health.NewProber(cfg, health.NewMetrics(o.Registry), o.Log)
		t.Cleanup(p.Close) // registered before the agent's, so it runs after it
		o.Checker = p
	}
}

// dial opens a real grpc-go xDS channel to xds:///target, with its own
// bootstrap pointing at the agent.
func dial(t testing.TB, a *testAgent, target string) *grpc.ClientConn {
	t.Helper()
	return dialWith(t, bootstrap.Options{Server: a.Addr, NodeID: "test/" + t.Name()}, target)
}

// dialWith opens a grpc-go xDS channel with the given bootstrap options.
// Without a NodeID, each has an xDS client of its own (a node id of its
// own), as separate processes would.
func dialWith(t testing.TB, o bootstrap.Options, target string) *grpc.ClientConn {
	t.Helper()
	if o.NodeID == "" {
		o.NodeID = fmt.Sprintf("test/%s/%d", t.Name(), dials.Add(1))
	}
	o.Zone, o.Region = "a", "r1"
	bs, err := bootstrap.JSON(o)
	if err != nil {
		t.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

var dials atomic.Int64

// hits sends n RPCs and counts them by the backend that answered, or by
// "ERR <code>" for failures.
func hits(cc *grpc.ClientConn, n int) map[string]int {
	out := map[string]int{}
	for range n {
		out[hit(cc)]++
	}
	return out
}

// hit sends one RPC, with request headers kv, and says which backend
// answered, or "ERR <code>". Its deadline is far above an RPC's time, and
// above a new client's first RPC, which waits for its xDS configuration and
// a connection, on a busy machine: a client with nowhere to go fails fast
// (UNAVAILABLE), whatever the deadline.
func hit(cc *grpc.ClientConn, kv ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name, err := echo.Hello(metadata.AppendToOutgoingContext(ctx, kv...), cc)
	if err != nil {
		return "ERR " + status.Code(err).String()
	}
	return name
}

// batch sends up to n RPCs with rpc and counts them by who answered. It
// stops at the first answer that is not in want (sorted): that batch cannot
// match, and a client that is not ready yet would spend an RPC deadline on
// each of the rest.
func batch(n int, want []string, rpc func() string) map[string]int {
	out := map[string]int{}
	for range n {
		got := rpc()
		out[got]++
		if _, ok := slices.BinarySearch(want, got); !ok {
			break
		}
	}
	return out
}

// eventually sends batches of RPCs until the backends that answer a batch are
// exactly want (sorted names, or "ERR <code>"), and fails after poll.Timeout
// showing what the last batch reached.
func eventually(t testing.TB, cc *grpc.ClientConn, want ...string) {
	t.Helper()
	sort.Strings(want)
	var last map[string]int
	for deadline := time.Now().Add(poll.Timeout); time.Now().Before(deadline); {
		last = batch(10*max(len(want), 2), want, func() string { return hit(cc) })
		if slices.Equal(keys(last), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("RPCs reached %v, want exactly %v", last, want)
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// withAdmin serves the agent's admin port on a free loopback address, and
// stores that address in *addr.
func withAdmin(t testing.TB, addr *string) func(*serve.Options) {
	return func(o *serve.Options) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		o.Admin = lis
		*addr = lis.Addr().String()
	}
}
