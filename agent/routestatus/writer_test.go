package routestatus_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/routestatus"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/poll"
)

func route(name, uid string, gen int64, parents ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
		"metadata": map[string]any{"name": name, "namespace": "default", "uid": uid, "generation": gen},
		"spec":     map[string]any{},
	}}
	ps := []any{}
	for _, p := range parents {
		var v any
		if err := json.Unmarshal([]byte(p), &v); err != nil {
			panic(err)
		}
		ps = append(ps, v)
	}
	if len(ps) > 0 {
		_ = unstructured.SetNestedSlice(u.Object, ps, "status", "parents")
	}
	return u
}

func newClient(objs ...runtime.Object) (*dynamicfake.FakeDynamicClient, *atomic.Int64) {
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schemaGVR]string{
		routestatus.Resources[discovery.KindGRPCRoute]: "GRPCRouteList",
		routestatus.Resources[discovery.KindHTTPRoute]: "HTTPRouteList",
		routestatus.LeasesResource:                     "LeaseList",
	}, objs...)
	var writes atomic.Int64
	c.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			writes.Add(1)
		}
		return false, nil, nil
	})
	return c, &writes
}

func parentsOn(t *testing.T, c *dynamicfake.FakeDynamicClient, name string) []gwv1.RouteParentStatus {
	t.Helper()
	u, err := c.Resource(routestatus.Resources[discovery.KindGRPCRoute]).Namespace("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	var out []gwv1.RouteParentStatus
	for _, p := range ps {
		raw, _ := json.Marshal(p)
		var s gwv1.RouteParentStatus
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

type writerRun struct {
	w      *routestatus.Writer
	reg    *prometheus.Registry
	cancel func()
	done   chan struct{}
}

func start(c *dynamicfake.FakeDynamicClient, id string, statuses func(context.Context) ([]routestatus.Route, error), tweak func(*routestatus.Writer)) *writerRun {
	reg := prometheus.NewRegistry()
	w := &routestatus.Writer{
		Client:   c,
		Elector:  &routestatus.Elector{Client: c, Namespace: "nodexds", Name: "nodexds-route-status", Identity: id, RetryPeriod: 20 * time.Millisecond, RenewDeadline: 200 * time.Millisecond, LeaseDuration: 2 * time.Second},
		Statuses: statuses,
		Metrics:  routestatus.NewMetrics(reg),
		Resync:   10 * time.Millisecond,
		QPS:      1000, Burst: 100,
	}
	if tweak != nil {
		tweak(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &writerRun{w: w, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); w.Run(ctx) }()
	return r
}

func (r *writerRun) stop() { r.cancel(); <-r.done }

// counted counts the calls to statuses: one per resync of a leader.
func counted(statuses func(context.Context) ([]routestatus.Route, error)) (func(context.Context) ([]routestatus.Route, error), *atomic.Int64) {
	var n atomic.Int64
	return func(ctx context.Context) ([]routestatus.Route, error) {
		n.Add(1)
		return statuses(ctx)
	}, &n
}

func fixed(routes ...routestatus.Route) func(context.Context) ([]routestatus.Route, error) {
	var mu sync.Mutex
	return func(context.Context) ([]routestatus.Route, error) {
		mu.Lock()
		defer mu.Unlock()
		return routes, nil
	}
}

func TestWriterWritesOnceLeavesOthersAndRemovesStale(t *testing.T) {
	stale := `{"conditions":[],"controllerName":"nodexds.io/agent","parentRef":{"group":"","kind":"Service","name":"gone"}}`
	c, writes := newClient(route("r", "u1", 3, other), route("old", "u2", 1, stale, other))
	statuses, resyncs := counted(fixed(routestatus.Route{
		Key: discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "default", Name: "r"}, UID: "u1", Generation: 3,
		Parents: []mesh.ParentStatus{accepted("a")},
	}))
	r := start(c, "node-a", statuses, nil)
	defer r.stop()
	poll.Until(t, "our entry on r and none on old", func() bool { return len(parentsOn(t, c, "r")) == 2 && len(parentsOn(t, c, "old")) == 1 })
	ps := parentsOn(t, c, "r")
	if ps[0].ControllerName != "example.com/gateway" || ps[1].ControllerName != routestatus.Controller {
		t.Fatalf("entries %+v", ps)
	}
	if c := ps[1].Conditions; c[0].ObservedGeneration != 3 || c[0].Reason != "Accepted" || c[1].Reason != "ResolvedRefs" {
		t.Errorf("conditions %+v", c)
	}
	if old := parentsOn(t, c, "old"); old[0].ControllerName != "example.com/gateway" {
		t.Errorf("old: %+v, want only the other controller's entry", old)
	}
	after := resyncs.Load() + 10
	poll.Until(t, "ten more resyncs", func() bool { return resyncs.Load() >= after })
	if n := writes.Load(); n != 2 {
		t.Errorf("%d status writes, want 2: an unchanged status is not written again", n)
	}
	if v := testutil.ToFloat64(r.w.Metrics.Writes.WithLabelValues("written")); v != 2 {
		t.Errorf("nodexds_route_status_writes_total{result=written} = %v, want 2", v)
	}
	if v := testutil.ToFloat64(r.w.Metrics.Leader); v != 1 {
		t.Errorf("leader gauge %v, want 1", v)
	}
}

func TestOnlyTheLeaseHolderWrites(t *testing.T) {
	c, writes := newClient(route("r", "u1", 1))
	k := discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "default", Name: "r"}
	// Each candidate computes a different status: a write by the wrong one shows.
	statusesA, resyncsA := counted(fixed(routestatus.Route{Key: k, UID: "u1", Generation: 1, Parents: []mesh.ParentStatus{accepted("a")}}))
	a := start(c, "node-a", statusesA, nil)
	poll.Until(t, "node-a leading", func() bool { return testutil.ToFloat64(a.w.Metrics.Leader) == 1 })
	b := start(c, "node-b", fixed(routestatus.Route{Key: k, UID: "u1", Generation: 1, Parents: []mesh.ParentStatus{accepted("b")}}), nil)
	defer b.stop()
	// node-b retries the lease every 20 ms; node-a resyncs every 10 ms.
	after := resyncsA.Load() + 30
	poll.Until(t, "thirty more resyncs of node-a while node-b runs", func() bool { return resyncsA.Load() >= after })
	if ps := parentsOn(t, c, "r"); len(ps) != 1 || ps[0].ParentRef.Name != "a" {
		t.Fatalf("status %+v: want node-a's only", ps)
	}
	if testutil.ToFloat64(b.w.Metrics.Leader) != 0 || testutil.ToFloat64(b.w.Metrics.Writes.WithLabelValues("written")) != 0 {
		t.Fatal("node-b leads or wrote while node-a holds the lease")
	}
	before := writes.Load()
	a.stop() // releases the lease: node-b takes over at once
	poll.Until(t, "node-b leading and writing its status", func() bool {
		ps := parentsOn(t, c, "r")
		return testutil.ToFloat64(b.w.Metrics.Leader) == 1 && len(ps) == 1 && ps[0].ParentRef.Name == "b"
	})
	if testutil.ToFloat64(a.w.Metrics.Leader) != 0 {
		t.Error("node-a still says it leads")
	}
	if n := writes.Load() - before; n != 1 {
		t.Errorf("%d writes after the handover, want 1", n)
	}
	lease, err := c.Resource(routestatus.LeasesResource).Namespace("nodexds").Get(context.Background(), "nodexds-route-status", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := unstructured.NestedString(lease.Object, "spec", "holderIdentity"); h != "node-b" {
		t.Errorf("lease holder %q, want node-b", h)
	}
}

func TestLosingTheLeaseStopsWriting(t *testing.T) {
	c, writes := newClient(route("r", "u1", 1))
	k := discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "default", Name: "r"}
	var gen atomic.Int64
	gen.Store(1)
	statuses := func(context.Context) ([]routestatus.Route, error) {
		return []routestatus.Route{{Key: k, UID: "u1", Generation: gen.Load(), Parents: []mesh.ParentStatus{accepted("a")}}}, nil
	}
	var refuse atomic.Bool // reactors cannot be added while the client is used
	var refused atomic.Int64
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			refused.Add(1)
			return true, nil, errConflict
		}
		return false, nil, nil
	})
	a := start(c, "node-a", statuses, nil)
	defer a.stop()
	poll.Until(t, "a write", func() bool { return writes.Load() == 1 })
	// The lease cannot be renewed any more (as when someone else took it).
	refuse.Store(true)
	poll.Until(t, "the lease lost", func() bool { return testutil.ToFloat64(a.w.Metrics.Leader) == 0 })
	gen.Store(2) // a change to write, by a leader only
	after := refused.Load() + 5
	poll.Until(t, "five more attempts to take the lease back", func() bool { return refused.Load() >= after })
	if n := writes.Load(); n != 1 {
		t.Errorf("%d writes: a candidate that lost the lease wrote", n)
	}
}

func TestWritesAreRateLimited(t *testing.T) {
	const n, qps, burst = 30, 50, 5
	var objs []runtime.Object
	var routes []routestatus.Route
	for i := range n {
		name := string(rune('a'+i%26)) + string(rune('a'+i/26))
		objs = append(objs, route(name, name, 1))
		routes = append(routes, routestatus.Route{Key: discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "default", Name: name}, UID: name, Generation: 1, Parents: []mesh.ParentStatus{accepted("a")}})
	}
	c, writes := newClient(objs...)
	began := time.Now()
	r := start(c, "node-a", fixed(routes...), func(w *routestatus.Writer) { w.QPS, w.Burst = qps, burst })
	defer r.stop()
	poll.Until(t, "every route written", func() bool { return writes.Load() == n })
	if took, least := time.Since(began), time.Duration(float64(n-burst)/qps*float64(time.Second)); took < least {
		t.Errorf("%d writes took %v: the limit (%d/s after %d) allows no less than %v", n, took, qps, burst, least)
	}
}

func TestRateLimiterBoundsAFlappingRoute(t *testing.T) {
	rl := routestatus.NewRateLimiter(10, 1)
	k := discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "default", Name: "r"}
	var last time.Duration
	for range 11 {
		last = rl.When(k)
		rl.Forget(k)
	}
	if last < 900*time.Millisecond {
		t.Errorf("the 11th write at 10/s after a burst of 1 waits %v, want about 1 s", last)
	}
}

type schemaGVR = schema.GroupVersionResource

var errConflict = apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "nodexds-route-status", nil)
