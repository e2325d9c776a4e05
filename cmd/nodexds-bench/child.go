package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodexds/nodexds/discovery/clientset"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	metafake "k8s.io/client-go/metadata/fake"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// result is one child's measurement, sent to the parent as JSON.
type result struct {
	Source   string
	Services int
	GOGC     string

	// Initial is start → "initial state applied" (source started, every
	// initial object applied and flushed: when Serve starts serving ADS).
	Initial time.Duration
	// Full is Initial plus every Service's four resources subscribed and
	// built: the first full snapshot (a forced GC in between is excluded).
	Full time.Duration

	// Live heap after a forced GC, less what the process held before the
	// source started (for the kube path: the fake API server's objects).
	HeapSynced uint64
	HeapFull   uint64
	HeapChurn  uint64
	// Resident memory from /proc/self/status at each stage, read before the
	// forced GC: VmRSS and its anonymous part (RssAnon; the rest is the
	// binary's file pages, shared and reclaimable); VmHWM is the peak VmRSS
	// over the whole run. Base is before the source started.
	RSSBase, AnonBase     uint64
	RSSSynced, AnonSynced uint64
	RSSFull, AnonFull     uint64
	RSSChurn, AnonChurn   uint64
	RSSPeak               uint64

	// CPU time (user + system, all threads) of the two timed phases.
	CPUInitial, CPUFull time.Duration

	// GCs and their stop-the-world pauses during the timed build phases.
	GCs     uint32
	GCPause time.Duration

	// Churn: one EndpointSlice update at a time, Enqueue → published.
	Changes    int
	ChangeP50  time.Duration
	ChangeP99  time.Duration
	ChangeMax  time.Duration
	Subscribed int
}

type childConfig struct {
	source               string
	services, perService int
	changes              int
	cpuprofile           string
}

// runChild measures one configuration in this (fresh) process.
func runChild(cfg childConfig) (result, error) {
	r := result{Source: cfg.source, Services: cfg.services, GOGC: os.Getenv("GOGC")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	src, err := newSource(cfg, log)
	if err != nil {
		return r, err
	}
	base := liveHeap()
	r.RSSBase, r.AnonBase = rss()
	a, cache, pc := startAgent(ctx, log)
	stopProfile, err := startCPUProfile(cfg.cpuprofile)
	if err != nil {
		return r, err
	}

	var gc0, gc1, gc2, gc3 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	if err := coldStart(ctx, src, a, &r); err != nil {
		return r, err
	}
	runtime.ReadMemStats(&gc1)
	r.RSSSynced, r.AnonSynced = rss()
	r.HeapSynced = sub(liveHeap(), base)
	runtime.ReadMemStats(&gc2)
	if err := subscribeAll(ctx, a, cache, pc, cfg.services, &r); err != nil {
		return r, err
	}
	stopProfile()
	runtime.ReadMemStats(&gc3)
	// The forced GC between the two phases is not theirs.
	r.GCs = gc1.NumGC - gc0.NumGC + gc3.NumGC - gc2.NumGC
	r.GCPause = time.Duration(gc1.PauseTotalNs - gc0.PauseTotalNs + gc3.PauseTotalNs - gc2.PauseTotalNs)
	r.RSSFull, r.AnonFull = rss()
	r.HeapFull = sub(liveHeap(), base)

	if cfg.changes > 0 {
		if err := measureChurn(ctx, a, cfg, base, &r); err != nil {
			return r, err
		}
	}
	// The kernel updates VmHWM lazily: it can trail a VmRSS read earlier.
	r.RSSPeak = max(procStatus("VmHWM")[0], r.RSSSynced, r.RSSFull, r.RSSChurn)
	if err := checkServed(ctx, a, cfg.services, &r); err != nil {
		return r, err
	}
	runtime.KeepAlive(src)
	return r, nil
}

func newSource(cfg childConfig, log *slog.Logger) (discovery.Source, error) {
	switch cfg.source {
	case "events":
		return eventSource{services: cfg.services, perService: cfg.perService}, nil
	case "kube":
		return fakeKube(cfg.services, cfg.perService, log), nil
	}
	return nil, fmt.Errorf("unknown source %q", cfg.source)
}

// startAgent runs an agent publishing to a new cache until ctx ends.
func startAgent(ctx context.Context, log *slog.Logger) (*agent.Agent, *xds.Cache, names.Parser) {
	cache := xds.NewCache()
	m := metrics.New(prometheus.NewRegistry())
	pc := names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"}
	a := agent.New(agent.Config{NodeName: "n0", Names: pc, DefaultTiers: topology.DefaultTiers, Coalesce: 20 * time.Millisecond},
		cache, nil, nil, m, log)
	go a.Run(ctx)
	return a, cache, pc
}

// startCPUProfile profiles to path, if set, until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// coldStart starts the source as serve.Run does, timing it until the
// initial state is applied.
func coldStart(ctx context.Context, src discovery.Source, a *agent.Agent, r *result) error {
	start, cpu := time.Now(), cpuTime()
	if err := src.Start(ctx, a.Enqueue); err != nil {
		return err
	}
	if err := a.Sync(ctx); err != nil {
		return err
	}
	r.Initial, r.CPUInitial = time.Since(start), cpuTime()-cpu
	return nil
}

// subscribeAll subscribes to every Service, as if clients on this node used
// all of them, timing it until all are built: the first full snapshot.
func subscribeAll(ctx context.Context, a *agent.Agent, cache *xds.Cache, pc names.Parser, services int, r *result) error {
	start, cpu := time.Now(), cpuTime()
	s := xds.NewTestSubscriber(cache)
	for i := range services {
		k := serviceKey(i)
		canonical := pc.Canonical(k, 8080)
		s.Subscribe(xds.ListenerType, k.Name+"."+k.Namespace+":8080")
		for _, typ := range []string{xds.RouteType, xds.ClusterType, xds.EndpointType} {
			s.Subscribe(typ, canonical)
		}
	}
	// Once the agent has taken the interest signal (after the last
	// subscription), a barrier queued afterwards is handled after it has
	// built and published them: the agent is one goroutine.
	for len(cache.Interests()) > 0 {
		time.Sleep(100 * time.Microsecond)
	}
	if err := a.Sync(ctx); err != nil {
		return err
	}
	r.Full, r.CPUFull = r.Initial+time.Since(start), r.CPUInitial+cpuTime()-cpu
	return nil
}

// measureChurn applies EndpointSlice updates one at a time, each waited
// for, and records their latencies and the memory after them.
func measureChurn(ctx context.Context, a *agent.Agent, cfg childConfig, base uint64, r *result) error {
	ch, err := churn(ctx, a, cfg)
	if err != nil {
		return err
	}
	slices.Sort(ch)
	r.Changes = len(ch)
	r.ChangeP50, r.ChangeP99, r.ChangeMax = ch[len(ch)/2], ch[len(ch)*99/100], ch[len(ch)-1]
	r.RSSChurn, r.AnonChurn = rss()
	r.HeapChurn = sub(liveHeap(), base)
	return nil
}

// checkServed checks that the snapshot is what it claims: every Service
// served, with endpoints. Snapshot builds a view of all of them, a large
// transient: done after every figure is taken.
func checkServed(ctx context.Context, a *agent.Agent, services int, r *result) error {
	v, err := a.Snapshot(ctx, agent.ViewQuery{}) // every Service
	if err != nil {
		return err
	}
	for _, sv := range v.Services {
		if sv.Exists && len(sv.Priorities) > 0 {
			r.Subscribed++
		}
	}
	if r.Subscribed != services {
		return fmt.Errorf("%d of %d Services served with endpoints", r.Subscribed, services)
	}
	return nil
}

// churn updates Services' slices, spread over all of them, one at a time.
func churn(ctx context.Context, a *agent.Agent, cfg childConfig) ([]time.Duration, error) {
	gen := eventSource{services: cfg.services, perService: cfg.perService}
	out := make([]time.Duration, 0, cfg.changes)
	for c := range cfg.changes {
		i := (c * 7919) % cfg.services // a prime stride visits them all
		sl := gen.slice(i, c+1)
		if cfg.source == "kube" {
			// The kube source's slices are named as the API server names them.
			sl.Name = serviceKey(i).Name + "-x7k2p"
		}
		t := time.Now()
		a.Enqueue(discovery.Event{Slice: sl})
		if err := a.Sync(ctx); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// fakeKube is discovery.KubeSource over client-go's fake clientsets holding
// the synthetic cluster as API objects.
func fakeKube(services, perService int, log *slog.Logger) *discovery.KubeSource {
	scheme := metafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		panic(err)
	}
	var ns []kruntime.Object
	for n := range nodes {
		ns = append(ns, apiNode(n))
	}
	client := fake.NewClientset()
	tr := client.Tracker()
	svcs := schema.GroupVersionResource{Version: "v1", Resource: "services"}
	sls := schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	for i := range services {
		svc, sl := apiService(i), apiSlice(i, perService)
		if err := tr.Create(svcs, svc, svc.Namespace); err != nil {
			panic(err)
		}
		if err := tr.Create(sls, sl, sl.Namespace); err != nil {
			panic(err)
		}
	}
	return &discovery.KubeSource{API: clientset.API(client, metafake.NewSimpleMetadataClient(scheme, ns...)), Log: log}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// rss is VmRSS and RssAnon now, in bytes.
func rss() (total, anon uint64) {
	v := procStatus("VmRSS", "RssAnon")
	return v[0], v[1]
}

// procStatus reads "kB" fields of /proc/self/status, in bytes. A field it
// cannot read is a broken measurement: it panics.
func procStatus(fields ...string) []uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		panic(err)
	}
	v, err := parseStatus(string(b), fields...)
	if err != nil {
		panic(err)
	}
	return v
}

func parseStatus(status string, fields ...string) ([]uint64, error) {
	out := make([]uint64, len(fields))
	found := 0
	for _, l := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(l, ":")
		i := slices.Index(fields, k)
		if !ok || i < 0 {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[i] = n << 10
		found++
	}
	if found != len(fields) {
		return nil, fmt.Errorf("want %v in /proc/self/status, found %d", fields, found)
	}
	return out, nil
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func writeResult(w io.Writer, r result) error { return json.NewEncoder(w).Encode(r) }
