package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// The scale run's route phase (issue 22): after the endpoint flips, the
// Gateway API's standard-channel CRDs are installed under the running agent
// and cfg.Routes GRPCRoutes created, route i (named after its parent) in the
// scale namespace on parent Service i, splitting between Service i (90) and
// Service i+1 (10), both subscribed already, so the client subscribes to
// nothing new. Measured:
//
//   - memory: the agent's RSS and Go heap once the client holds every routed
//     parent's route configuration with its weights (routed), against after
//     the endpoint flips (churned) and with the CRDs watched but no route
//     yet, and the live heap after forced GCs at the three points;
//   - the agent's share of a route change: cfg.RouteFlips weight changes
//     (90/10 ↔ 80/20), one at a time, 50–150 ms apart, under the same churn
//     of slices as the endpoint flips, each timed from a watcher on the
//     GRPCRoutes in this process seeing the route's new generation to the
//     ADS client receiving the route configuration with the new weights;
//   - that a route change rebuilds only its parent's route configuration
//     and listener, asserted from the agent's nodexds_resource_builds_total
//     and from what the client receives.
//
// The agent here writes no route status (no POD_NAMESPACE, so no status
// Lease): what is measured is the read path every agent has; one agent of
// a cluster also writes status.

// routeResult is the route phase's figures.
type routeResult struct {
	version     string        // the Gateway API CRDs'
	crds        time.Duration // applied → established
	wrote       time.Duration // creating every route, 32 writers
	held        time.Duration // first create → every routed parent's route configuration at the client
	createDelta builds        // builds from the first create to then
	usable      int           // nodexds_gateway_routes{state="usable"} then

	crdMem, routed                   procMem       // the CRDs installed and watched, no route; every route held
	churnedLive, crdLive, routedLive int64         // live heap after two forced GCs, bytes
	took                             time.Duration // the whole phase

	flips            []flipTiming // svc: the route's (and its parent's) index
	churnWrites      int
	churnFor         time.Duration
	subscribedWrites int // churn writes to subscribed Services, over the flips
	gcs              int // agent GC cycles over the flips
	delta            builds
	lds, cds, rds    int // responses the client received over the flips
	rdsResources     int
	internal         histogram // the agent's RDS push latency over the flips
	busy, steal      float64
	agentSched       schedStat // the agent's threads over the flips
	testSched        schedStat // this test's (the watcher, the ADS client, the writers)
	profiles         string
}

// wantRoute is route i's expected state (routeState's form) at weight w
// for its parent, 100 − w for the next subscribed Service.
func wantRoute(cfg scaleConfig, i, w int) string {
	p := []string{fmt.Sprintf("%s=%d", scaleSvc(i), w), fmt.Sprintf("%s=%d", scaleSvc((i+1)%cfg.Subscribed), 100-w)}
	slices.Sort(p)
	return strings.Join(p, ",")
}

// specState is a GRPCRoute's backends as routeState would show them.
func specState(u *unstructured.Unstructured) string {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	var parts []string
	for _, r := range rules {
		refs, _, _ := unstructured.NestedSlice(r.(map[string]any), "backendRefs")
		for _, ref := range refs {
			m := ref.(map[string]any)
			name, _, _ := unstructured.NestedString(m, "name")
			w, ok, _ := unstructured.NestedInt64(m, "weight")
			if !ok {
				w = 1
			}
			parts = append(parts, fmt.Sprintf("%s=%d", name, w))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func scaleRoute(cfg scaleConfig, i int) *unstructured.Unstructured {
	ref := func(svc string, w int64) map[string]any {
		return map[string]any{"name": svc, "port": int64(scalePort), "weight": w}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "GRPCRoute",
		"metadata":   map[string]any{"name": scaleSvc(i), "namespace": scaleNS},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"group": "", "kind": "Service", "name": scaleSvc(i), "port": int64(scalePort)}},
			"rules": []any{map[string]any{"backendRefs": []any{
				ref(scaleSvc(i), 90), ref(scaleSvc((i+1)%cfg.Subscribed), 10),
			}}},
		},
	}}
}

// builds is nodexds_resource_builds_total by type (LDS, RDS, CDS, EDS).
type builds map[string]int

var buildsRE = regexp.MustCompile(`^nodexds_resource_builds_total\{type="([^"]+)"\} (\S+)$`)

func readBuilds(t testing.TB, ip string) builds {
	t.Helper()
	b := builds{}
	for _, line := range metricLines(t, ip) {
		if m := buildsRE.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			b[m[1]] = int(v)
		}
	}
	if len(b) == 0 {
		t.Fatal("scale: the agent's /metrics has no nodexds_resource_builds_total")
	}
	return b
}

func (b builds) minus(o builds) builds {
	out := builds{}
	for k, v := range b {
		out[k] = v - o[k]
	}
	return out
}

func (b builds) String() string {
	return fmt.Sprintf("LDS %d, RDS %d, CDS %d, EDS %d", b["LDS"], b["RDS"], b["CDS"], b["EDS"])
}

var heapAllocRE = regexp.MustCompile(`^# HeapAlloc = (\d+)$`)

// liveHeap is the agent's Go heap right after GCs it is made to run (its
// pprof heap profile with gc=1): what its data takes, without garbage. Two:
// what sync.Pools hold survives one GC (gRPC's and the encoders' buffers,
// about 2 MiB after the churn), not two.
func liveHeap(t testing.TB, ip string) int64 {
	t.Helper()
	heapAlloc(t, ip)
	return heapAlloc(t, ip)
}

// heapAlloc forces one GC in the agent and returns its HeapAlloc then.
func heapAlloc(t testing.TB, ip string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort(ip, "18002") + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		t.Fatalf("scale: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if m := heapAllocRE.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			return v
		}
	}
	t.Fatalf("scale: no HeapAlloc in the agent's heap profile (%v)", sc.Err())
	return 0
}

// runRoutes is the route phase; churn runs again during its flips.
func runRoutes(ctx context.Context, t testing.TB, sc *scaleCluster, agent *scaleAgent, ads *scaleADS, cfg scaleConfig,
	churn *churner, sliceEvents func() []time.Time) *routeResult {
	t.Helper()
	if cfg.Routes > cfg.Subscribed || cfg.Subscribed < 2 {
		t.Fatalf("scale: %d routes over %d subscribed Services: want 2 ≤ subscribed and routes ≤ subscribed", cfg.Routes, cfg.Subscribed)
	}
	ip := agent.ip
	r := &routeResult{churnedLive: liveHeap(t, ip)}

	phase := time.Now()
	r.version = sc.InstallGatewayAPI(t)
	r.crds = time.Since(phase)
	// The agent's watches of the three kinds start: their fixed cost, apart
	// from the routes'.
	for _, kind := range []string{"grpcroutes", "httproutes", "referencegrants"} {
		agent.lines.waitFor(t, 30*time.Second, `"crd":"`+kind+`.gateway.networking.k8s.io"`) // "kube source: watching"
	}
	time.Sleep(2 * time.Second)
	r.crdMem, r.crdLive = agentMem(t, agent), liveHeap(t, ip)

	rc := sc.RESTConfig()
	rc.QPS, rc.Burst = -1, 0
	routes := dynamic.NewForConfigOrDie(rc).Resource(grpcRoutes).Namespace(scaleNS)
	before := readBuilds(t, ip)
	start := time.Now()
	createRoutes(ctx, t, routes, cfg)
	r.wrote = time.Since(start)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	for i := range cfg.Routes {
		if _, err := ads.routed.wait(wctx, i, 0, wantRoute(cfg, i, 90)); err != nil {
			held := 0
			for i := range cfg.Routes {
				if s, _ := ads.routed.last(i); s == wantRoute(cfg, i, 90) {
					held++
				}
			}
			last, _ := ads.routed.last(i)
			wcancel()
			t.Fatalf("scale: %d GRPCRoutes written in %v; after %v the client holds %d of their route configurations (%s's: %q, want %q)",
				cfg.Routes, r.wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), held, scaleSvc(i), last, wantRoute(cfg, i, 90))
		}
	}
	wcancel()
	r.held = time.Since(start)
	r.createDelta = readBuilds(t, ip).minus(before)
	if counts, err := routeCounts("http://" + net.JoinHostPort(ip, "18001") + "/metrics"); err != nil {
		t.Errorf("scale: %v", err)
	} else if r.usable = counts["usable"]; r.usable != cfg.Routes || counts["refused"] != 0 {
		t.Errorf("scale: the agent counts routes %v, want %d usable", counts, cfg.Routes)
	}
	time.Sleep(2 * time.Second) // as for the other points
	r.routed = agentMem(t, agent)
	r.routedLive = liveHeap(t, ip)

	// The watcher: each route's new generations, from now on.
	watched := newStateHistory[string]()
	list, err := routes.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := routes.Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	go func() {
		gen := map[int]int64{}
		for ev := range w.ResultChan() {
			at := time.Now()
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(u.GetName(), "s"))
			if err != nil || u.GetGeneration() <= gen[i] {
				continue // a status update, were one written
			}
			gen[i] = u.GetGeneration()
			watched.add(i, at, specState(u))
		}
	}()

	// The churn again, through the flips.
	churnCtx, stopChurn := context.WithCancel(ctx)
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		r.churnWrites, r.churnFor = churn.run(churnCtx, t)
	}()
	defer func() { stopChurn(); <-churnDone }()
	time.Sleep(time.Second)
	profile := startProfiles(t, ip, subdir(t, "routes"))
	buildsBefore, subscribedBefore := readBuilds(t, ip), churn.subscribed.Load()
	latBefore, cpuBefore, mark := pushLatencyOf(t, ip, "RDS"), readCPUTimes(t), ads.responseCount()
	agentSchedBefore, testSchedBefore := readSchedStat(t, agent.pid), readSchedStat(t, os.Getpid())
	phaseStart := time.Now()

	// Flip k changes route k mod Routes: its visit v sets 80/20 on even
	// visits, 90/10 on odd ones.
	visits := make([]int, cfg.Routes)
	flipped := map[int]bool{}
	for k := range cfg.RouteFlips {
		i := k % cfg.Routes
		v := visits[i]
		visits[i]++
		weight := 80
		if v%2 == 1 {
			weight = 90
		}
		want := wantRoute(cfg, i, weight)
		fromW, fromP := watched.len(i), ads.routed.len(i)
		body := fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":%d},`+
			`{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":%d}]`, weight, 100-weight)
		if _, err := routes.Patch(ctx, scaleSvc(i), types.JSONPatchType, []byte(body), metav1.PatchOptions{}); err != nil {
			t.Fatalf("scale: route flip %d: %v", k, err)
		}
		wrote := time.Now()
		flipped[i] = true
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		seen, err := watched.wait(fctx, i, fromW, want)
		if err != nil {
			fcancel()
			t.Fatalf("scale: route flip %d (%s to %s): the watcher never saw it: %v", k, scaleSvc(i), want, err)
		}
		at, err := ads.routed.wait(fctx, i, fromP, want)
		fcancel()
		if err != nil {
			last, _ := ads.routed.last(i)
			t.Fatalf("scale: route flip %d (%s to %s): the watcher saw it at %s, the ADS client never got it (it holds %q): %v",
				k, scaleSvc(i), want, seen.Format(time.StampMicro), last, err)
		}
		r.flips = append(r.flips, flipTiming{svc: i, wrote: wrote, seen: seen, pushed: at})
		time.Sleep(time.Duration(50+k*37%100) * time.Millisecond)
	}
	phaseEnd := time.Now()
	r.delta = readBuilds(t, ip).minus(buildsBefore)
	r.subscribedWrites = int(churn.subscribed.Load() - subscribedBefore)
	r.internal = pushLatencyOf(t, ip, "RDS").minus(latBefore)
	r.busy, r.steal = readCPUTimes(t).since(cpuBefore)
	r.agentSched = readSchedStat(t, agent.pid).minus(agentSchedBefore)
	r.testSched = readSchedStat(t, os.Getpid()).minus(testSchedBefore)
	stopChurn()
	<-churnDone
	if r.profiles = profile(); r.profiles != "" {
		attachPaths(t, filepath.Join(r.profiles, "agent.trace"), r.flips)
	}

	// What the client received over the flips: route configurations of
	// the flipped parents only, no listener, no cluster.
	for _, resp := range ads.responsesSince(mark) {
		switch resp.typ {
		case typeLDS:
			r.lds++
			t.Errorf("scale: a listener response during the route flips, at %s: %v", resp.at.Format(time.StampMicro), resp.names)
		case typeCDS:
			r.cds++
			t.Errorf("scale: a cluster response during the route flips, at %s: %d clusters", resp.at.Format(time.StampMicro), len(resp.names))
		case typeRDS:
			r.rds++
			r.rdsResources += len(resp.names)
			for n, p := range resp.parents {
				if p < 0 || !flipped[p] {
					t.Errorf("scale: the route configuration %s, of no flipped route's parent, was sent during the route flips", resp.names[n])
				}
			}
		}
	}
	// What the agent built: each flip its parent's route configuration and
	// listener; clusters never; load assignments only for the churn.
	if r.delta["CDS"] != 0 {
		t.Errorf("scale: %d clusters built during the route flips, want 0", r.delta["CDS"])
	}
	if r.delta["RDS"] != len(r.flips) {
		t.Errorf("scale: %d route configurations built during %d route flips, want one each", r.delta["RDS"], len(r.flips))
	}
	if r.delta["LDS"] > len(r.flips) {
		t.Errorf("scale: %d listeners built during %d route flips, want at most one each", r.delta["LDS"], len(r.flips))
	}
	// One load assignment per churn write to a subscribed Service; a write
	// in flight at either end may land on the other side of a count.
	if r.delta["EDS"] > r.subscribedWrites+3 {
		t.Errorf("scale: %d load assignments built during the route flips, for %d churn writes to subscribed Services: the route changes rebuilt some",
			r.delta["EDS"], r.subscribedWrites)
	}
	if r.rdsResources != len(r.flips) {
		t.Errorf("scale: the client received %d route configurations in %d responses during %d route flips, want one per flip", r.rdsResources, r.rds, len(r.flips))
	}

	gcs := agent.lines.gcCycles()
	for _, g := range gcs {
		if g.end.After(phaseStart) && g.start.Before(phaseEnd) {
			r.gcs++
		}
	}
	attribute(r.flips, gcs, sliceEvents(), cfg.Window)
	r.took = time.Since(phase)
	return r
}

// subdir is dir/name under NODEXDS_SCALE_PROFILE, created; "" without it.
func subdir(t testing.TB, name string) string {
	dir := os.Getenv("NODEXDS_SCALE_PROFILE")
	if dir == "" {
		return ""
	}
	dir = filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("scale: %v", err)
	}
	return dir
}

// createRoutes creates cfg.Routes GRPCRoutes with 32 writers.
func createRoutes(ctx context.Context, t testing.TB, routes dynamic.ResourceInterface, cfg scaleConfig) {
	t.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range 32 {
		wg.Go(func() {
			for i := range work {
				if _, err := routes.Create(ctx, scaleRoute(cfg, i), metav1.CreateOptions{}); err != nil {
					once.Do(func() { first = fmt.Errorf("create GRPCRoute %s: %w", scaleSvc(i), err) })
				}
			}
		})
	}
	for i := range cfg.Routes {
		work <- i
	}
	close(work)
	wg.Wait()
	if first != nil {
		t.Fatalf("scale: %v", first)
	}
}

// report logs the route phase's figures beside churned, the memory before
// it, and returns the agent's share of a route change, sorted.
func (r *routeResult) report(t testing.TB, cfg scaleConfig, churned procMem) []time.Duration {
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
	t.Logf("scale: the route phase took %v", r.took.Round(time.Millisecond))
	t.Logf("scale: routes: Gateway API %s CRDs installed under the running agent, established in %v; %d GRPCRoutes (route i on Service i: i 90, i+1 10) written in %v, every route configuration at the client %v after the first write (builds meanwhile: %v; the agent counts %d usable)",
		r.version, r.crds.Round(time.Millisecond), cfg.Routes, r.wrote.Round(time.Millisecond), r.held.Round(time.Millisecond), r.createDelta, r.usable)
	perRoute := func(d int64) float64 { return float64(d) / float64(cfg.Routes) }
	// The CRDs' point follows the forced GCs of the churned point's live
	// heap, which return memory to the OS: its RSS is lower than the
	// others' for that, and is no base for the routes'.
	t.Logf("scale: memory (VmRSS): churned %v; CRDs watched, no route (after forced GCs) %v; routed (%d routes) %v: %+d KiB against churned (%.1f KiB per route)",
		churned, r.crdMem, cfg.Routes, r.routed, r.routed.rss-churned.rss, perRoute(r.routed.rss-churned.rss))
	t.Logf("scale: live heap after two forced GCs: churned %.1f MiB, CRDs watched %.1f MiB, routed %.1f MiB: %+d KiB in all (%.1f KiB per route), %+d KiB from the CRDs' (%.1f KiB per route)",
		float64(r.churnedLive)/(1<<20), float64(r.crdLive)/(1<<20), float64(r.routedLive)/(1<<20),
		(r.routedLive-r.churnedLive)>>10, perRoute(r.routedLive-r.churnedLive)/1024, (r.routedLive-r.crdLive)>>10, perRoute(r.routedLive-r.crdLive)/1024)
	t.Logf("scale: %d route flips under churn of %d writes in %v (%d to subscribed Services), machine %.0f %% busy (%.1f %% stolen), %d agent GC cycles: agent's share (watcher saw the route's new generation → ADS client got the route configuration) p50 %s, p90 %s, p99 %s, max %s; PATCH returned → ADS client p50 %s, p99 %s",
		len(r.flips), r.churnWrites, r.churnFor.Round(time.Millisecond), r.subscribedWrites, 100*r.busy, 100*r.steal, r.gcs,
		q(shares, 0.5), q(shares, 0.9), q(shares, 0.99), q(shares, 1), q(endToEnd, 0.5), q(endToEnd, 0.99))
	t.Logf("scale: the agent's own RDS push latency during the route flips (queued → sent): p50 %s, p90 %s, p99 %s; the agent's threads ran %v and waited %v for a core over %d runs (mean wait %v), this test's ran %v and waited %v over %d runs (mean %v)",
		r.internal.quantile(0.5), r.internal.quantile(0.9), r.internal.quantile(0.99),
		r.agentSched.ran.Round(time.Millisecond), r.agentSched.waited.Round(time.Millisecond), r.agentSched.runs, r.agentSched.meanWait(),
		r.testSched.ran.Round(time.Millisecond), r.testSched.waited.Round(time.Millisecond), r.testSched.runs, r.testSched.meanWait())
	t.Logf("scale: built during the %d route flips: %v (%d churn writes to subscribed Services); the client received %d listener, %d cluster and %d route configuration responses (%d route configurations, each a flipped route's parent's)",
		len(r.flips), r.delta, r.subscribedWrites, r.lds, r.cds, r.rds, r.rdsResources)
	if r.profiles != "" {
		reportPaths(t, r.profiles, r.flips)
	}
	slow := slices.Clone(r.flips)
	slices.SortFunc(slow, func(a, b flipTiming) int { return int(b.share() - a.share()) })
	for _, f := range slow[:min(len(slow), 5)] {
		t.Logf("scale:   route %s: %.2f ms (gc %v, after a slice change %v)", scaleSvc(f.svc), float64(f.share())/1e6, f.gc, f.coalesced)
	}
	return shares
}
