package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// The scale run (issue 12): one agent on a real API server holding N
// Services with one EndpointSlice of ten endpoints each, measured the way a
// user would see it:
//
//   - cold start: the agent's own "initial state applied" (source started →
//     every object applied), and process exec → serving ADS;
//   - resident memory of the agent process (/proc/PID/status) after sync,
//     with a client subscribed, and after churn;
//   - the agent's share of one change: a watcher on the EndpointSlices and
//     an ADS client on the agent, both in this process, on one clock. A
//     flip of one endpoint's readiness is timed from the watcher seeing the
//     slice to the ADS client receiving the load assignment that reflects
//     it, while a background writer churns the other Services' slices.
//
// Each slow flip is put next to what may explain it: a Go GC cycle of the
// agent overlapping it (GODEBUG=gctrace=1, lines time-stamped as they
// arrive) or another slice change seen less than a coalescing window
// before it.
//
// Then, with cfg.Routes, the route phase (scale_routes_test.go): the
// Gateway API CRDs installed under the running agent, GRPCRoutes on the
// subscribed Services, the memory they take, and the agent's share of a
// route's weight change, with a check that it rebuilds its parent's route
// configuration and listener and nothing else.
//
// TestScaleSmall runs it small in CI (so the harness cannot rot, and every
// flip must arrive); BenchmarkScale runs it at 11k Services:
//
//	cd e2e && go test -run '^$' -bench Scale -benchtime 1x -count 3 -timeout 60m .

type scaleConfig struct {
	Services     int // each with one EndpointSlice of EndpointsPer endpoints
	EndpointsPer int
	Subscribed   int // Services the ADS client subscribes to (the first ones)
	Measured     int // of those, the ones whose flips are timed; churn never writes them
	Flips        int
	ChurnPerSec  int      // background slice writes per second, to the other Services
	AgentArgs    []string // more agent flags
	AgentEnv     []string // more agent environment
	// Window is the agent's coalescing window (its -coalesce), for the
	// attribution of slow flips.
	Window time.Duration
	// Routes is how many GRPCRoutes the route phase creates after the
	// endpoint flips (route i on Service i; at most Subscribed), and
	// RouteFlips how many weight changes of them it times. No routes: no
	// route phase.
	Routes, RouteFlips int
}

// flipTiming is one timed readiness flip of a measured Service.
type flipTiming struct {
	svc       int
	wrote     time.Time // the PATCH returned
	seen      time.Time // the watcher saw the slice change
	pushed    time.Time // the ADS client received the load assignment
	gc        bool      // an agent GC cycle overlapped [seen, pushed]
	coalesced bool      // another slice change was seen within Window before seen
	path      *pushPath // its way through the agent, when an execution trace was taken
}

func (f flipTiming) share() time.Duration { return f.pushed.Sub(f.seen) }

// procMem is a process's memory: from /proc/PID/status (KiB), and the Go
// heap as its /metrics reports it (bytes).
type procMem struct {
	rss, anon, file, hwm int64
	heapAlloc, heapInuse int64 // live + not yet collected; in spans
	nextGC               int64
}

func (m procMem) String() string {
	return fmt.Sprintf("%d MiB (anon %d MiB, file %d MiB; Go heap allocated %d MiB, in use %d MiB, next GC at %d MiB)",
		m.rss>>10, m.anon>>10, m.file>>10, m.heapAlloc>>20, m.heapInuse>>20, m.nextGC>>20)
}

// agentMem is readProcMem plus the agent's Go heap figures.
func agentMem(t testing.TB, a *scaleAgent) procMem {
	t.Helper()
	m := readProcMem(t, a.pid)
	for _, line := range metricLines(t, a.ip) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_memstats_heap_alloc_bytes":
			m.heapAlloc = int64(v)
		case "go_memstats_heap_inuse_bytes":
			m.heapInuse = int64(v)
		case "go_memstats_next_gc_bytes":
			m.nextGC = int64(v)
		}
	}
	return m
}

type scaleResult struct {
	populate    time.Duration // writing every Service and slice
	applied     time.Duration // the agent's "initial state applied" took
	serving     time.Duration // process exec → "serving ADS"
	subscribe   time.Duration // stream open → every subscribed load assignment received
	synced      procMem
	subscribed  procMem
	churned     procMem
	flips       []flipTiming
	churnWrites int
	churnFor    time.Duration
	gcs         int
	internal    histogram // the agent's own EDS push latency (enqueue → sent) during the flips
	// What the kernel's scheduler did during the flips: the agent's threads,
	// this test process's (the watcher and the ADS client), and both CPUs.
	agentSched, testSched schedStat
	busy, steal           float64      // the machine's CPUs: busy, and taken by the host (a VM's steal)
	profiles              string       // where the agent's profiles and execution trace are, if taken
	routes                *routeResult // the route phase, if run
}

// scaleNodes: the agent's node and 100 more over four zones of two regions;
// endpoint j of Service i runs on node (10i+j) mod 101, so about one in a
// hundred is on the agent's node.
const scaleNode = "node-a"

func scaleNodeName(k int) string {
	if k == 100 {
		return scaleNode
	}
	return fmt.Sprintf("syn-%03d", k)
}

func scaleZone(k int) (zone, region string) {
	if k == 100 {
		return "zone-a", "region-1"
	}
	zone = "zone-" + string(rune('a'+k%4))
	region = "region-1"
	if k%4 >= 2 {
		region = "region-2"
	}
	return zone, region
}

// scaleAddr is endpoint j of Service i: made-up addresses, never dialled
// (the agent runs without health checks).
func scaleAddr(i, j, per int) netip.Addr {
	n := uint32(i*per + j)
	return netip.AddrFrom4([4]byte{10, 250 + byte(n>>16), byte(n >> 8), byte(n)})
}

func scaleIndex(addr string, per int) (i, j int, ok bool) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return 0, 0, false
	}
	b := a.As4()
	if b[0] != 10 || b[1] < 250 {
		return 0, 0, false
	}
	n := int(b[1]-250)<<16 | int(b[2])<<8 | int(b[3])
	return n / per, n % per, true
}

func scaleSvc(i int) string { return fmt.Sprintf("s%05d", i) }

const scaleNS = "scale"
const scalePort = 50051

// scaleMask is the readiness of a Service's endpoints, bit j for endpoint j.
type scaleMask uint32

// stateHistory records, per Service (or route), each state seen and when.
type stateHistory[S comparable] struct {
	mu      sync.Mutex
	seen    map[int][]stateAt[S]
	changed chan struct{} // closed and replaced at each add: waiters sleep, not poll
}

// history is the readiness of the measured Services' endpoints.
type history = stateHistory[scaleMask]

func newHistory() *history { return newStateHistory[scaleMask]() }

func newStateHistory[S comparable]() *stateHistory[S] {
	return &stateHistory[S]{seen: map[int][]stateAt[S]{}, changed: make(chan struct{})}
}

type stateAt[S comparable] struct {
	at    time.Time
	state S
}

func (h *stateHistory[S]) add(svc int, at time.Time, s S) {
	h.mu.Lock()
	h.seen[svc] = append(h.seen[svc], stateAt[S]{at, s})
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

func (h *stateHistory[S]) len(svc int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen[svc])
}

// last is svc's latest state, if any was seen.
func (h *stateHistory[S]) last(svc int) (S, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var zero S
	if n := len(h.seen[svc]); n > 0 {
		return h.seen[svc][n-1].state, true
	}
	return zero, false
}

// wait returns when svc was first seen in state want at index from or later.
func (h *stateHistory[S]) wait(ctx context.Context, svc, from int, want S) (time.Time, error) {
	for {
		h.mu.Lock()
		for _, s := range h.seen[svc][min(from, len(h.seen[svc])):] {
			if s.state == want {
				h.mu.Unlock()
				return s.at, nil
			}
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-changed:
		}
	}
}

// scaleCluster is a control plane holding the scale run's objects.
type scaleCluster struct {
	*cluster.Cluster
	bins       Bins
	client     kubernetes.Interface // this test's, unthrottled, protobuf
	kubeconfig string               // the agent's: deploy/'s ServiceAccount
}

// startScaleCluster starts a control plane with deploy/'s RBAC and writes
// cfg's Nodes, Services and EndpointSlices into it.
func startScaleCluster(t testing.TB, cfg scaleConfig) (*scaleCluster, time.Duration) {
	t.Helper()
	c := cluster.Start(t, cluster.Options{
		Nodes:      []cluster.Node{{Name: scaleNode, Zone: "zone-a", Region: "region-1"}},
		Namespaces: []string{scaleNS},
	})
	e := &Env{Cluster: c, Bins: projectBins(t)}
	e.kubectl(t, "apply", "-k", e.Bins.Repo+"/deploy")
	e.waitRBACEffective(t)
	rc := c.RESTConfig()
	rc.QPS, rc.Burst = -1, 0 // the writer is this test, not a controller
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	sc := &scaleCluster{Cluster: c, bins: e.Bins, client: kubernetes.NewForConfigOrDie(rc),
		kubeconfig: c.WriteKubeconfig(t, c.ServiceAccountToken(t, "nodexds", "nodexds"))}
	start := time.Now()
	populateScale(t, sc.client, cfg)
	took := time.Since(start)
	t.Logf("scale: wrote %d Services and %d EndpointSlices (%d endpoints) in %v",
		cfg.Services, cfg.Services, cfg.Services*cfg.EndpointsPer, took.Round(time.Millisecond))
	return sc, took
}

// scaleAgent is a running agent of the scale run.
type scaleAgent struct {
	pid     int
	ip      string
	lines   *agentLines
	serving time.Duration // exec → "serving ADS"
	applied time.Duration // its "initial state applied" took
	stop    func()
}

// startAgent runs the agent as its pod would be, with its stderr
// time-stamped here, and returns once it serves ADS.
func (sc *scaleCluster) startAgent(t testing.TB, cfg scaleConfig, name string) *scaleAgent {
	t.Helper()
	ip := sc.NodeIP(scaleNode).String()
	argv := append([]string{sc.bins.Nodexds, "serve",
		"--source=kube", "--kubeconfig=" + sc.kubeconfig, "--node-name=" + scaleNode,
		"--xds-listen=" + net.JoinHostPort(ip, "18000"),
		"--admin-listen=" + net.JoinHostPort(ip, "18001"),
		"--debug-listen=" + net.JoinHostPort(ip, "18002"),
		// The client is this test, in the root namespace: no pod's address.
		"--admit=any",
		// The endpoints' addresses are made up: nothing may dial them.
		"--health-checks=false",
		"--pprof",
	}, cfg.AgentArgs...)
	cmd := sc.RunInNode(scaleNode, argv...)
	cmd.Env = append(append(os.Environ(), "GODEBUG=gctrace=1"), cfg.AgentEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(sc.LogDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	a := &scaleAgent{ip: ip, lines: &agentLines{}}
	execAt := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() { defer close(scanned); a.lines.scan(stderr, logFile) }()
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
			<-scanned
			logFile.Close()
		})
	}
	t.Cleanup(a.stop)
	a.pid = cmd.Process.Pid
	a.serving = a.lines.waitFor(t, 60*time.Second, `"msg":"serving ADS"`).Sub(execAt)
	a.applied = a.lines.appliedTook(t)
	t.Logf("scale: agent initial state applied %v after its source started; exec → serving ADS %v",
		a.applied.Round(time.Millisecond), a.serving.Round(time.Millisecond))
	return a
}

func runScale(t testing.TB, cfg scaleConfig) scaleResult {
	t.Helper()
	var res scaleResult
	sc, populate := startScaleCluster(t, cfg)
	res.populate = populate
	client := sc.client
	agent := sc.startAgent(t, cfg, "agent-scale")
	res.serving, res.applied = agent.serving, agent.applied
	ip, lines := agent.ip, agent.lines
	time.Sleep(2 * time.Second) // let the start's garbage be collected, as it would be by the time it matters
	res.synced = agentMem(t, agent)

	// The watcher: from now on, every slice change, with when it was seen.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	watched := newHistory()
	var evMu sync.Mutex
	var events []time.Time // every slice change the watcher saw
	list, err := client.DiscoveryV1().EndpointSlices(scaleNS).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := client.DiscoveryV1().EndpointSlices(scaleNS).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for ev := range w.ResultChan() {
			at := time.Now()
			es, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			evMu.Lock()
			events = append(events, at)
			evMu.Unlock()
			i, err := strconv.Atoi(strings.TrimPrefix(es.Name, "s"))
			if err != nil || i >= cfg.Measured {
				continue
			}
			var m scaleMask
			for j, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					m |= 1 << j
				}
			}
			watched.add(i, at, m)
		}
	}()

	// The ADS client.
	pushed := newHistory()
	ads := newScaleADS(t, net.JoinHostPort(ip, "18000"), cfg, pushed)
	subStart := time.Now()
	go ads.run(ctx)
	select {
	case <-ads.complete:
		res.subscribe = time.Since(subStart)
	case err := <-ads.failed:
		t.Fatalf("scale: ADS client: %v", err)
	case <-time.After(5 * time.Minute):
		t.Fatalf("scale: %d Services not all answered after 5 min", cfg.Subscribed)
	}
	t.Logf("scale: ADS client subscribed to %d Services: every load assignment received in %v",
		cfg.Subscribed, res.subscribe.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	res.subscribed = agentMem(t, agent)

	// Churn the other Services in the background.
	histBefore := pushLatency(t, ip)
	profile := startProfiles(t, ip, os.Getenv("NODEXDS_SCALE_PROFILE"))
	churn := newChurner(client, cfg)
	churnCtx, stopChurn := context.WithCancel(ctx)
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		res.churnWrites, res.churnFor = churn.run(churnCtx, t)
	}()
	time.Sleep(time.Second)
	agentSchedBefore, testSchedBefore, cpuBefore := readSchedStat(t, agent.pid), readSchedStat(t, os.Getpid()), readCPUTimes(t)

	// The timed flips, one at a time: visit v of a measured Service takes
	// endpoint (v/2) mod EndpointsPer down on even visits and back up on odd
	// ones, so at most one endpoint of it is ever not ready.
	all := scaleMask(1)<<cfg.EndpointsPer - 1
	visits := make([]int, cfg.Measured)
	for k := range cfg.Flips {
		i := k % cfg.Measured
		v := visits[i]
		visits[i]++
		j := (v / 2) % cfg.EndpointsPer
		ready := v%2 == 1
		want := all
		if !ready {
			want &^= 1 << j
		}
		fromW, fromP := watched.len(i), pushed.len(i)
		if err := patchReady(ctx, client, i, j, ready); err != nil {
			t.Fatalf("scale: flip %d: %v", k, err)
		}
		wrote := time.Now()
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		seen, err := watched.wait(wctx, i, fromW, want)
		if err != nil {
			wcancel()
			t.Fatalf("scale: flip %d (%s endpoint %d ready=%v): the watcher never saw it: %v", k, scaleSvc(i), j, ready, err)
		}
		at, err := pushed.wait(wctx, i, fromP, want)
		wcancel()
		if err != nil {
			t.Fatalf("scale: flip %d (%s endpoint %d ready=%v): the watcher saw it at %s, the ADS client never got it: %v",
				k, scaleSvc(i), j, ready, seen.Format(time.StampMicro), err)
		}
		res.flips = append(res.flips, flipTiming{svc: i, wrote: wrote, seen: seen, pushed: at})
		time.Sleep(time.Duration(50+k*37%100) * time.Millisecond) // 50–150 ms apart, not in step with the churn
	}
	stopChurn()
	<-churnDone
	res.churned = agentMem(t, agent)
	res.internal = pushLatency(t, ip).minus(histBefore)
	res.agentSched = readSchedStat(t, agent.pid).minus(agentSchedBefore)
	res.testSched = readSchedStat(t, os.Getpid()).minus(testSchedBefore)
	res.busy, res.steal = readCPUTimes(t).since(cpuBefore)
	if res.profiles = profile(); res.profiles != "" {
		attachPaths(t, filepath.Join(res.profiles, "agent.trace"), res.flips)
	}

	// What the slow ones coincide with.
	gcs := lines.gcCycles()
	res.gcs = len(gcs)
	sliceEvents := func() []time.Time {
		evMu.Lock()
		defer evMu.Unlock()
		return slices.Clone(events)
	}
	attribute(res.flips, gcs, sliceEvents(), cfg.Window)

	// Gateway API routes (scale_routes_test.go), the churn running again.
	if cfg.Routes > 0 {
		res.routes = runRoutes(ctx, t, sc, agent, ads, cfg, churn, sliceEvents)
	}
	return res
}

// attribute marks each flip that an agent GC cycle overlapped, or that
// another change seen less than window before it may have held back.
func attribute(flips []flipTiming, gcs []gcCycle, events []time.Time, window time.Duration) {
	for n := range flips {
		f := &flips[n]
		for _, g := range gcs {
			if g.start.Before(f.pushed) && g.end.After(f.seen) {
				f.gc = true
			}
		}
		for _, at := range events {
			if at.Before(f.seen) && f.seen.Sub(at) < window {
				f.coalesced = true
			}
		}
	}
}

// populateScale writes the nodes, Services and slices with 32 writers.
func populateScale(t testing.TB, client kubernetes.Interface, cfg scaleConfig) {
	t.Helper()
	ctx := t.Context()
	work := make(chan func() error, 64)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := f(); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for k := range 100 {
		zone, region := scaleZone(k)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: scaleNodeName(k), Labels: map[string]string{
			corev1.LabelTopologyZone: zone, corev1.LabelTopologyRegion: region}}}
		work <- func() error {
			_, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
			return err
		}
	}
	for i := range cfg.Services {
		svc := scaleService(i)
		slice := scaleSlice(i, cfg.EndpointsPer)
		work <- func() error {
			if _, err := client.CoreV1().Services(scaleNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service %s: %w", svc.Name, err)
			}
			if _, err := client.DiscoveryV1().EndpointSlices(scaleNS).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create endpointslice %s: %w", slice.Name, err)
			}
			return nil
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("scale: %v", err)
	default:
	}
}

func scaleService(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: scaleNS, Name: scaleSvc(i)},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, // no IP to allocate: the agent does not use it
			Ports:     []corev1.ServicePort{{Name: "grpc", Port: scalePort, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func scaleSlice(i, per int) *discoveryv1.EndpointSlice {
	name := scaleSvc(i)
	port, proto := int32(scalePort), corev1.ProtocolTCP
	portName := "grpc"
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: scaleNS, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: name,
			discoveryv1.LabelManagedBy:   "scale.e2e.nodexds.io", // not the controller's: it leaves these alone
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for j := range per {
		k := (10*i + j) % 101
		node := scaleNodeName(k)
		zone, _ := scaleZone(k)
		yes, no := true, false
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{scaleAddr(i, j, per).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &no},
			NodeName:   &node,
			Zone:       &zone,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: scaleNS, Name: fmt.Sprintf("%s-%d", name, j)},
		})
	}
	return s
}

// patchReady sets endpoint j of Service i ready (and serving) or not.
func patchReady(ctx context.Context, client kubernetes.Interface, i, j int, ready bool) error {
	body := fmt.Sprintf(`[{"op":"replace","path":"/endpoints/%d/conditions/ready","value":%t},`+
		`{"op":"replace","path":"/endpoints/%d/conditions/serving","value":%t}]`, j, ready, j, ready)
	_, err := client.DiscoveryV1().EndpointSlices(scaleNS).Patch(ctx, scaleSvc(i), types.JSONPatchType, []byte(body), metav1.PatchOptions{})
	return err
}

// churner writes the unmeasured Services' slices at cfg.ChurnPerSec while
// it runs: each write takes one endpoint of a Service down, or brings the
// one that is down back up. It can run more than once (the endpoint flips,
// then the route flips) and carries on where it stopped.
type churner struct {
	client kubernetes.Interface
	cfg    scaleConfig
	down   map[int]int // Service → its endpoint that is down
	n      int         // writes attempted, over every run: the walk's position
	// Writes done, over every run, and those to a Service the ADS client
	// subscribes to (each rebuilds one load assignment), read while it runs.
	writes, subscribed atomic.Int64
}

func newChurner(client kubernetes.Interface, cfg scaleConfig) *churner {
	return &churner{client: client, cfg: cfg, down: map[int]int{}}
}

// run writes until ctx ends and returns this run's writes and duration.
func (c *churner) run(ctx context.Context, t testing.TB) (int, time.Duration) {
	cfg := c.cfg
	if cfg.ChurnPerSec <= 0 || cfg.Services <= cfg.Measured {
		return 0, 0
	}
	tick := time.NewTicker(time.Second / time.Duration(cfg.ChurnPerSec))
	defer tick.Stop()
	start := time.Now()
	writes := 0
	for ; ; c.n++ {
		select {
		case <-ctx.Done():
			return writes, time.Since(start)
		case <-tick.C:
		}
		// A fixed walk over the other Services (no random source to seed):
		// a stride coprime with most sizes spreads it across them.
		i := cfg.Measured + (c.n*7919)%(cfg.Services-cfg.Measured)
		j, isDown := c.down[i]
		if isDown {
			delete(c.down, i)
		} else {
			j = c.n % cfg.EndpointsPer
			c.down[i] = j
		}
		if err := patchReady(ctx, c.client, i, j, isDown); err != nil {
			if ctx.Err() != nil {
				return writes, time.Since(start)
			}
			t.Errorf("scale: churn: %v", err)
			return writes, time.Since(start)
		}
		writes++
		c.writes.Add(1)
		if i < cfg.Subscribed {
			c.subscribed.Add(1)
		}
	}
}

// agentLines keeps the agent's stderr lines with the time each arrived.
type agentLines struct {
	mu    sync.Mutex
	lines []stampedLine
}

type stampedLine struct {
	at   time.Time
	text string
}

func (l *agentLines) scan(r io.Reader, copyTo io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		at := time.Now()
		fmt.Fprintln(copyTo, sc.Text())
		l.mu.Lock()
		l.lines = append(l.lines, stampedLine{at, sc.Text()})
		l.mu.Unlock()
	}
}

// waitFor returns when the first line containing s arrived.
func (l *agentLines) waitFor(t testing.TB, timeout time.Duration, s string) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			if strings.Contains(line.text, s) {
				l.mu.Unlock()
				return line.at
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("scale: no %s from the agent in %v:\n%s", s, timeout, l.tail(20))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *agentLines) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, line := range l.lines[max(0, len(l.lines)-n):] {
		b.WriteString(line.text + "\n")
	}
	return b.String()
}

// The agent logs durations as Go writes them ("took":"69ms").
var tookRE = regexp.MustCompile(`"msg":"initial state applied","took":"([^"]+)"`)

func (l *agentLines) appliedTook(t testing.TB) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if m := tookRE.FindStringSubmatch(line.text); m != nil {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatalf("scale: initial state applied, took %q: %v", m[1], err)
			}
			return d
		}
	}
	t.Fatal("scale: the agent logged no initial state applied")
	return 0
}

type gcCycle struct{ start, end time.Time }

// gctrace: "gc 7 @1.234s 2%: 0.021+3.4+0.015 ms clock, ...", printed as
// the cycle ends; the three clock phases are its wall time.
var gcRE = regexp.MustCompile(`^gc \d+ @[\d.]+s \d+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock`)

func (l *agentLines) gcCycles() []gcCycle {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []gcCycle
	for _, line := range l.lines {
		m := gcRE.FindStringSubmatch(line.text)
		if m == nil {
			continue
		}
		var ms float64
		for _, s := range m[1:] {
			f, _ := strconv.ParseFloat(s, 64)
			ms += f
		}
		out = append(out, gcCycle{start: line.at.Add(-time.Duration(ms * float64(time.Millisecond))), end: line.at})
	}
	return out
}

// schedStat is what /proc/PID/task/*/schedstat says of a process's threads:
// time on a CPU, time runnable but waiting for one, and the number of
// times they were put on a CPU.
type schedStat struct {
	ran, waited time.Duration
	runs        int64
}

func (s schedStat) minus(o schedStat) schedStat {
	return schedStat{ran: s.ran - o.ran, waited: s.waited - o.waited, runs: s.runs - o.runs}
}

func (s schedStat) meanWait() time.Duration {
	if s.runs <= 0 {
		return 0
	}
	return (s.waited / time.Duration(s.runs)).Round(time.Microsecond)
}

// readSchedStat sums a process's threads' schedstat. A thread that exits
// between two readings takes its share with it; Go's threads rarely exit.
func readSchedStat(t testing.TB, pid int) schedStat {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(files) == 0 {
		t.Fatalf("scale: no schedstat for process %d: %v", pid, err)
	}
	var s schedStat
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		var ran, waited, runs int64
		if _, err := fmt.Sscan(string(b), &ran, &waited, &runs); err != nil {
			t.Fatalf("scale: %s: %v", f, err)
		}
		s.ran += time.Duration(ran)
		s.waited += time.Duration(waited)
		s.runs += runs
	}
	return s
}

// cpuTimes is the first line of /proc/stat: every CPU's time by state, in
// clock ticks. Steal, the time a VM's host ran something else, is apart
// from busy: it is not this machine's work.
type cpuTimes struct{ busy, steal, total int64 }

func readCPUTimes(t testing.TB) cpuTimes {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatalf("scale: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		t.Fatalf("scale: /proc/stat begins %q", line)
	}
	var c cpuTimes
	for i, v := range f[1:9] {
		n, _ := strconv.ParseInt(v, 10, 64)
		c.total += n
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			c.steal += n
		default:
			c.busy += n
		}
	}
	return c
}

// since is the busy and stolen fractions of the CPUs' time since o.
func (c cpuTimes) since(o cpuTimes) (busy, steal float64) {
	if c.total == o.total {
		return 0, 0
	}
	d := float64(c.total - o.total)
	return float64(c.busy-o.busy) / d, float64(c.steal-o.steal) / d
}

func readProcMem(t testing.TB, pid int) procMem {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("scale: %v", err)
	}
	var m procMem
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = v
		case "RssAnon:":
			m.anon = v
		case "RssFile:":
			m.file = v
		case "VmHWM:":
			m.hwm = v
		}
	}
	if m.rss == 0 {
		t.Fatalf("scale: no VmRSS in /proc/%d/status", pid)
	}
	return m
}

// scaleADS is a plain ADS client that follows references as gRPC does:
// listeners name route configurations, routes name clusters, clusters name
// load assignments. It records the measured Services' load assignments,
// every subscribed Service's route configuration (routeState), and when
// each listener, route configuration and cluster response came.
type scaleADS struct {
	t        testing.TB
	cc       *grpc.ClientConn
	cfg      scaleConfig
	pushed   *history
	routed   *stateHistory[string] // by parent Service, its route configuration's state
	complete chan struct{}
	failed   chan error

	mu        sync.Mutex
	responses []adsResponse // every LDS, RDS and CDS response, in order
}

// adsResponse is one listener, route configuration or cluster response.
type adsResponse struct {
	at      time.Time
	typ     string
	names   []string
	parents []int // for RDS: the Service whose listener names each route configuration, -1 if none
}

// responseCount is how many LDS, RDS and CDS responses came so far.
func (a *scaleADS) responseCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.responses)
}

// responsesSince returns the LDS, RDS and CDS responses after the first n.
func (a *scaleADS) responsesSince(n int) []adsResponse {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.responses[min(n, len(a.responses)):])
}

// routeState is what a route configuration routes to: its clusters'
// Services (a cluster's name begins with its Service's), each with its
// weight when the route splits, sorted: "s00001=90,s00002=10".
func routeState(rc *routev3.RouteConfiguration) string {
	var parts []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			if c := rt.GetRoute().GetCluster(); c != "" {
				svc, _, _ := strings.Cut(c, ".")
				parts = append(parts, svc)
			}
			for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
				svc, _, _ := strings.Cut(wc.GetName(), ".")
				parts = append(parts, fmt.Sprintf("%s=%d", svc, wc.GetWeight().GetValue()))
			}
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func newScaleADS(t testing.TB, addr string, cfg scaleConfig, pushed *history) *scaleADS {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &scaleADS{t: t, cc: cc, cfg: cfg, pushed: pushed, routed: newStateHistory[string](),
		complete: make(chan struct{}), failed: make(chan error, 1)}
}

const (
	typeLDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeCDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

func (a *scaleADS) run(ctx context.Context) {
	if err := a.stream(ctx); err != nil && ctx.Err() == nil {
		a.failed <- err
	}
}

func (a *scaleADS) stream(ctx context.Context) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(a.cc).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: "e2e/scale", UserAgentName: "scale-bench"}
	names := map[string][]string{}
	send := func(typ, version, nonce string, want []string) error {
		slices.Sort(want)
		want = slices.Compact(want)
		names[typ] = want
		return st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: want})
	}
	var listeners []string
	listenerOf := map[string]int{} // listener → its Service
	for i := range a.cfg.Subscribed {
		l := fmt.Sprintf("%s.%s:%d", scaleSvc(i), scaleNS, scalePort)
		listeners = append(listeners, l)
		listenerOf[l] = i
	}
	parentOf := map[string]int{} // route configuration → the Service whose listener names it
	if err := send(typeLDS, "", "", listeners); err != nil {
		return err
	}
	routesOf := map[string][]string{} // route configuration → clusters
	answered := map[string]bool{}     // load assignments received
	done := false
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		at := time.Now()
		var follow func(*anypb.Any) error
		next, nextNames := "", []string(nil)
		switch resp.TypeUrl {
		case typeLDS:
			next = typeRDS
			follow = func(r *anypb.Any) error {
				var l listenerv3.Listener
				var hcm hcmv3.HttpConnectionManager
				if err := r.UnmarshalTo(&l); err != nil {
					return err
				}
				if err := l.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
					return err
				}
				rds := hcm.GetRds().GetRouteConfigName()
				if i, ok := listenerOf[l.GetName()]; ok {
					parentOf[rds] = i
				}
				nextNames = append(nextNames, rds)
				return nil
			}
		case typeRDS:
			next = typeCDS
			follow = func(r *anypb.Any) error {
				var rc routev3.RouteConfiguration
				if err := r.UnmarshalTo(&rc); err != nil {
					return err
				}
				var cs []string
				for _, vh := range rc.GetVirtualHosts() {
					for _, rt := range vh.GetRoutes() {
						if c := rt.GetRoute().GetCluster(); c != "" {
							cs = append(cs, c)
						}
						for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
							cs = append(cs, wc.GetName())
						}
					}
				}
				routesOf[rc.GetName()] = cs
				if i, ok := parentOf[rc.GetName()]; ok {
					a.routed.add(i, at, routeState(&rc))
				}
				return nil
			}
		case typeCDS:
			next = typeEDS
			follow = func(r *anypb.Any) error {
				var c clusterv3.Cluster
				if err := r.UnmarshalTo(&c); err != nil {
					return err
				}
				n := c.GetEdsClusterConfig().GetServiceName()
				if n == "" {
					n = c.GetName()
				}
				nextNames = append(nextNames, n)
				return nil
			}
		case typeEDS:
			follow = func(r *anypb.Any) error {
				var cla endpointv3.ClusterLoadAssignment
				if err := r.UnmarshalTo(&cla); err != nil {
					return err
				}
				answered[cla.GetClusterName()] = true
				svc, m, ok := a.mask(&cla)
				if ok && svc < a.cfg.Measured {
					a.pushed.add(svc, at, m)
				}
				return nil
			}
		default:
			return fmt.Errorf("unexpected type %s", resp.TypeUrl)
		}
		for _, r := range resp.Resources {
			if err := follow(r); err != nil {
				return fmt.Errorf("%s: %w", resp.TypeUrl, err)
			}
		}
		if resp.TypeUrl != typeEDS {
			a.record(resp, at, parentOf)
		}
		if err := send(resp.TypeUrl, resp.VersionInfo, resp.Nonce, names[resp.TypeUrl]); err != nil {
			return err
		}
		if resp.TypeUrl == typeRDS {
			for _, cs := range routesOf {
				nextNames = append(nextNames, cs...)
			}
		}
		if next != "" {
			want := slices.Clone(nextNames)
			slices.Sort(want)
			want = slices.Compact(want)
			if !slices.Equal(want, names[next]) {
				if err := send(next, "", "", want); err != nil {
					return err
				}
			}
		}
		if !done && len(names[typeEDS]) >= a.cfg.Subscribed && len(answered) >= len(names[typeEDS]) {
			done = true
			close(a.complete)
		}
	}
}

// record logs a listener, route configuration or cluster response.
func (a *scaleADS) record(resp *discoveryv3.DiscoveryResponse, at time.Time, parentOf map[string]int) {
	r := adsResponse{at: at, typ: resp.TypeUrl}
	for _, res := range resp.Resources {
		name := resourceName(res, resp.TypeUrl)
		r.names = append(r.names, name)
		if resp.TypeUrl == typeRDS {
			p, ok := parentOf[name]
			if !ok {
				p = -1
			}
			r.parents = append(r.parents, p)
		}
	}
	a.mu.Lock()
	a.responses = append(a.responses, r)
	a.mu.Unlock()
}

// resourceName is a listener's, route configuration's or cluster's name.
func resourceName(r *anypb.Any, typ string) string {
	var m interface{ GetName() string }
	switch typ {
	case typeLDS:
		m = &listenerv3.Listener{}
	case typeRDS:
		m = &routev3.RouteConfiguration{}
	case typeCDS:
		m = &clusterv3.Cluster{}
	default:
		return ""
	}
	if err := r.UnmarshalTo(m.(proto.Message)); err != nil {
		return "?"
	}
	return m.GetName()
}

// mask reads which of a Service's endpoints a load assignment routes to.
func (a *scaleADS) mask(cla *endpointv3.ClusterLoadAssignment) (int, scaleMask, bool) {
	svc := -1
	var m scaleMask
	for _, loc := range cla.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
			default:
				continue
			}
			i, j, ok := scaleIndex(lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress(), a.cfg.EndpointsPer)
			if !ok {
				continue
			}
			svc = i
			m |= 1 << j
		}
	}
	return svc, m, svc >= 0
}

// report logs a run's figures and returns the agent's share of a change,
// sorted.
func (r scaleResult) report(t testing.TB, cfg scaleConfig) []time.Duration {
	t.Helper()
	shares := make([]time.Duration, len(r.flips))
	endToEnd := make([]time.Duration, len(r.flips))
	for n, f := range r.flips {
		shares[n] = f.share()
		endToEnd[n] = f.pushed.Sub(f.wrote)
	}
	slices.Sort(shares)
	slices.Sort(endToEnd)
	q := func(ds []time.Duration, p float64) string {
		return fmt.Sprintf("%.2f ms", float64(quantile(ds, p))/1e6)
	}
	t.Logf("scale: %d Services × %d endpoints, %d subscribed; memory (VmRSS): synced %v; subscribed %v; churned %v; peak (VmHWM) %d MiB",
		cfg.Services, cfg.EndpointsPer, cfg.Subscribed, r.synced, r.subscribed, r.churned, r.churned.hwm>>10)
	t.Logf("scale: %d flips under churn of %d writes in %v (%.0f/s), %d agent GC cycles: agent's share (watcher saw the slice → ADS client got the load assignment) p50 %s, p90 %s, p99 %s, max %s; PATCH returned → ADS client p50 %s, p99 %s",
		len(r.flips), r.churnWrites, r.churnFor.Round(time.Millisecond), float64(r.churnWrites)/max(r.churnFor.Seconds(), 1e-9), r.gcs,
		q(shares, 0.5), q(shares, 0.9), q(shares, 0.99), q(shares, 1), q(endToEnd, 0.5), q(endToEnd, 0.99))
	slow := slices.Clone(r.flips)
	slices.SortFunc(slow, func(a, b flipTiming) int { return int(b.share() - a.share()) })
	var gc, co, both, none int
	top := slow[:min(len(slow), max(len(slow)/20, 1))] // the slowest 5 %
	for _, f := range top {
		switch {
		case f.gc && f.coalesced:
			both++
		case f.gc:
			gc++
		case f.coalesced:
			co++
		default:
			none++
		}
	}
	var all struct{ gc, co int }
	for _, f := range r.flips {
		if f.gc {
			all.gc++
		}
		if f.coalesced {
			all.co++
		}
	}
	t.Logf("scale: the agent's own EDS push latency during the flips (queued → sent, all EDS pushes): p50 %s, p90 %s, p99 %s",
		r.internal.quantile(0.5), r.internal.quantile(0.9), r.internal.quantile(0.99))
	t.Logf("scale: the scheduler during the flips: the machine's CPUs %.0f %% busy (and %.1f %% stolen by the host); the agent's threads ran %v and waited %v for a core, over %d runs (mean wait %v); this test's threads (watcher, ADS client, writers) ran %v and waited %v over %d runs (mean %v)",
		100*r.busy, 100*r.steal, r.agentSched.ran.Round(time.Millisecond), r.agentSched.waited.Round(time.Millisecond), r.agentSched.runs, r.agentSched.meanWait(),
		r.testSched.ran.Round(time.Millisecond), r.testSched.waited.Round(time.Millisecond), r.testSched.runs, r.testSched.meanWait())
	t.Logf("scale: the slowest %d flips (≥ %s): %d during an agent GC cycle, %d within %v after another slice change, %d both, %d neither (of all flips: %d during GC, %d after another change)",
		len(top), fmt.Sprintf("%.2f ms", float64(top[len(top)-1].share())/1e6), gc, co, cfg.Window, both, none, all.gc, all.co)
	reportPaths(t, r.profiles, r.flips)
	for _, f := range slow[:min(len(slow), 5)] {
		t.Logf("scale:   %s: %.2f ms (gc %v, after another change %v)", scaleSvc(f.svc), float64(f.share())/1e6, f.gc, f.coalesced)
	}
	return shares
}

// histogram is a Prometheus histogram's cumulative buckets.
type histogram struct {
	le    []float64
	count []float64
}

func (h histogram) minus(o histogram) histogram {
	out := histogram{le: h.le, count: slices.Clone(h.count)}
	for i := range out.count {
		if i < len(o.count) {
			out.count[i] -= o.count[i]
		}
	}
	return out
}

// quantile is the upper bound of the bucket holding quantile p.
func (h histogram) quantile(p float64) string {
	if len(h.count) == 0 || h.count[len(h.count)-1] == 0 {
		return "-"
	}
	total := h.count[len(h.count)-1]
	for i, c := range h.count {
		if c >= p*total {
			if math.IsInf(h.le[i], 1) {
				return fmt.Sprintf("> %.1f ms", h.le[i-1]*1e3)
			}
			return fmt.Sprintf("≤ %.1f ms", h.le[i]*1e3)
		}
	}
	return "-"
}

// pushLatency scrapes the agent's nodexds_push_latency_seconds for EDS.
func pushLatency(t testing.TB, ip string) histogram { return pushLatencyOf(t, ip, "EDS") }

// pushLatencyOf scrapes the agent's nodexds_push_latency_seconds for one
// type (EDS, RDS, ...).
func pushLatencyOf(t testing.TB, ip, typ string) histogram {
	t.Helper()
	var h histogram
	re := regexp.MustCompile(`^nodexds_push_latency_seconds_bucket\{.*le="([^"]+)".*\} (\S+)$`)
	for _, line := range metricLines(t, ip) {
		m := re.FindStringSubmatch(line)
		if m == nil || !strings.Contains(line, `type="`+typ+`"`) {
			continue
		}
		le, _ := strconv.ParseFloat(m[1], 64)
		c, _ := strconv.ParseFloat(m[2], 64)
		h.le, h.count = append(h.le, le), append(h.count, c)
	}
	if len(h.le) == 0 {
		t.Fatalf("scale: the agent's /metrics has no %s push latency", typ)
	}
	return h
}

// startProfiles, when dir (NODEXDS_SCALE_PROFILE) names a directory,
// records there a CPU profile of the agent during the flips, an execution
// trace of 20 s of them, and its heap after. The returned func waits for
// them and says where they are ("" when none was asked for).
func startProfiles(t testing.TB, ip, dir string) func() (dir string) {
	if dir == "" {
		return func() string { return "" }
	}
	fetch := func(path, file string) {
		resp, err := http.Get("http://" + net.JoinHostPort(ip, "18002") + path)
		if err != nil {
			t.Errorf("scale: profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			t.Errorf("scale: profile: %v", err)
			return
		}
		defer f.Close()
		io.Copy(f, resp.Body)
	}
	var wg sync.WaitGroup
	wg.Go(func() { fetch("/debug/pprof/profile?seconds=40", "agent-cpu.pprof") })
	// The execution trace shows where a slow push waited: for a core, a
	// lock, the network.
	wg.Go(func() { fetch("/debug/pprof/trace?seconds=20", "agent.trace") })
	return func() string {
		wg.Wait()
		fetch("/debug/pprof/heap", "agent-heap.pprof")
		t.Logf("scale: agent CPU and heap profiles and execution trace in %s", dir)
		return dir
	}
}

func quantile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// TestScaleSmall runs the scale harness at a size CI affords: every flip must
// reach the ADS client, under churn, on a real API server.
func TestScaleSmall(t *testing.T) {
	cfg := scaleConfig{Services: 300, EndpointsPer: 10, Subscribed: 100, Measured: 20, Flips: 40, ChurnPerSec: 20, Window: 20 * time.Millisecond,
		Routes: 20, RouteFlips: 40}
	r := runScale(t, cfg)
	r.report(t, cfg)
	if len(r.flips) != cfg.Flips {
		t.Fatalf("%d flips timed, want %d", len(r.flips), cfg.Flips)
	}
	if r.churnWrites == 0 {
		t.Fatal("the churn wrote nothing: the flips were not measured under churn")
	}
	r.routes.report(t, cfg, r.churned)
	if len(r.routes.flips) != cfg.RouteFlips {
		t.Fatalf("%d route flips timed, want %d", len(r.routes.flips), cfg.RouteFlips)
	}
	if r.routes.churnWrites == 0 || r.routes.subscribedWrites == 0 {
		t.Fatal("the churn wrote nothing to subscribed Services during the route flips: the build counts were not checked under churn")
	}
}

// scaleBenchConfig is issue 12's size, 11,000 Services and 110,000
// endpoints, adjusted by the environment:
//
//	NODEXDS_SCALE_SUBSCRIBED=N   Services the client subscribes to (default 1000)
//	NODEXDS_SCALE_AGENT_ENV="K=V ..."  more agent environment (GOGC=50, ...)
//	NODEXDS_SCALE_CHURN=N        background slice writes per second (default 20)
//	NODEXDS_SCALE_FLIPS=N        timed flips (default 400; more steadies the p99)
//	NODEXDS_SCALE_ROUTES=N       GRPCRoutes of the route phase (default 1000, at most
//	                             the subscribed Services; 0: no route phase)
//	NODEXDS_SCALE_ROUTE_FLIPS=N  timed route changes (default 400)
func scaleBenchConfig(b *testing.B) scaleConfig {
	cfg := scaleConfig{Services: 11000, EndpointsPer: 10, Subscribed: 1000, Measured: 100, Flips: 400, ChurnPerSec: 20, Window: 20 * time.Millisecond,
		Routes: 1000, RouteFlips: 400}
	if s := os.Getenv("NODEXDS_SCALE_SUBSCRIBED"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		cfg.Subscribed = n
		// Beyond the default per-stream limits: one client takes everything.
		cfg.AgentArgs = append(cfg.AgentArgs, "--max-names-per-type=20000", "--max-names-per-peer=100000")
	}
	cfg.AgentEnv = strings.Fields(os.Getenv("NODEXDS_SCALE_AGENT_ENV"))
	if s := os.Getenv("NODEXDS_SCALE_CHURN"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			b.Fatalf("NODEXDS_SCALE_CHURN=%q: want writes per second, 0 or more", s)
		}
		cfg.ChurnPerSec = n
	}
	if s := os.Getenv("NODEXDS_SCALE_FLIPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("NODEXDS_SCALE_FLIPS=%q: want a number of flips, 1 or more", s)
		}
		cfg.Flips = n
	}
	if s := os.Getenv("NODEXDS_SCALE_ROUTES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			b.Fatalf("NODEXDS_SCALE_ROUTES=%q: want a number of routes, 0 or more", s)
		}
		cfg.Routes = n
	}
	if s := os.Getenv("NODEXDS_SCALE_ROUTE_FLIPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("NODEXDS_SCALE_ROUTE_FLIPS=%q: want a number of route changes, 1 or more", s)
		}
		cfg.RouteFlips = n
	}
	cfg.Routes = min(cfg.Routes, cfg.Subscribed)
	return cfg
}

// printed is a benchmark whose log lines are printed as well: a benchmark's
// log keeps only its first ten lines, the reports have more.
type printed struct{ testing.TB }

func (p printed) Logf(format string, args ...any) {
	p.TB.Helper()
	p.TB.Logf(format, args...)
	fmt.Printf("    "+format+"\n", args...)
}

// BenchmarkScale is issue 12's measurement: 11,000 Services, 110,000
// endpoints on a real API server.
func BenchmarkScale(b *testing.B) {
	cfg := scaleBenchConfig(b)
	for range b.N {
		r := runScale(b, cfg)
		shares := r.report(printed{b}, cfg)
		b.ReportMetric(r.applied.Seconds(), "applied-s")
		b.ReportMetric(r.serving.Seconds(), "exec-to-serving-s")
		b.ReportMetric(float64(r.synced.rss)/1024, "rss-synced-MiB")
		b.ReportMetric(float64(r.subscribed.rss)/1024, "rss-subscribed-MiB")
		b.ReportMetric(float64(r.churned.rss)/1024, "rss-churned-MiB")
		b.ReportMetric(float64(r.churned.hwm)/1024, "peak-MiB")
		b.ReportMetric(float64(quantile(shares, 0.5))/1e6, "share-p50-ms")
		b.ReportMetric(float64(quantile(shares, 0.99))/1e6, "share-p99-ms")
		if r.routes != nil {
			routeShares := r.routes.report(printed{b}, cfg, r.churned)
			b.ReportMetric(float64(r.routes.routed.rss)/1024, "rss-routed-MiB")
			b.ReportMetric(float64(quantile(routeShares, 0.5))/1e6, "route-share-p50-ms")
			b.ReportMetric(float64(quantile(routeShares, 0.99))/1e6, "route-share-p99-ms")
		}
	}
}

// BenchmarkScaleColdStart starts the agent five times against one
// populated API server: cold start and resident memory once synced.
func BenchmarkScaleColdStart(b *testing.B) {
	cfg := scaleBenchConfig(b)
	for range b.N {
		sc, _ := startScaleCluster(b, cfg)
		var applied, serving []time.Duration
		var rss []int64
		for n := range 5 {
			a := sc.startAgent(b, cfg, fmt.Sprintf("agent-%d", n))
			time.Sleep(2 * time.Second)
			m := agentMem(b, a)
			a.stop()
			applied, serving, rss = append(applied, a.applied), append(serving, a.serving), append(rss, m.rss)
			b.Logf("scale: start %d: applied %v, exec → serving %v, synced %v, peak %d MiB", n,
				a.applied.Round(time.Millisecond), a.serving.Round(time.Millisecond), m, m.hwm>>10)
		}
		slices.Sort(applied)
		slices.Sort(serving)
		slices.Sort(rss)
		b.ReportMetric(applied[0].Seconds(), "applied-min-s")
		b.ReportMetric(applied[2].Seconds(), "applied-median-s")
		b.ReportMetric(applied[4].Seconds(), "applied-max-s")
		b.ReportMetric(serving[2].Seconds(), "exec-to-serving-median-s")
		b.ReportMetric(float64(rss[2])/1024, "rss-synced-median-MiB")
	}
}
