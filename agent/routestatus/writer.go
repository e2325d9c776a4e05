package routestatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/workqueue"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/discovery"
)

// Route is the status the agent's model gives one route (mesh.Status, an
// entry per Service parentRef), as of the UID and generation it has.
type Route struct {
	Key        discovery.RouteKey
	UID        string
	Generation int64
	Parents    []mesh.ParentStatus
}

// Resources of the route kinds, by discovery.Route kind.
var Resources = map[string]schema.GroupVersionResource{
	discovery.KindGRPCRoute: gwv1.SchemeGroupVersion.WithResource("grpcroutes"),
	discovery.KindHTTPRoute: gwv1.SchemeGroupVersion.WithResource("httproutes"),
}

// Metrics of the status writer.
type Metrics struct {
	Writes *prometheus.CounterVec // result: written, conflict, error
	Leader prometheus.Gauge
}

// NewMetrics registers the writer's metrics with reg; every result is
// exported at 0 from the start.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_route_status_writes_total",
			Help: "Route status updates sent to the API server, by result (written, conflict, error).",
		}, []string{"result"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodexds_route_status_leader",
			Help: "1 while this agent holds the route status Lease (the one agent writing route status), else 0.",
		}),
	}
	for _, r := range []string{"written", "conflict", "error"} {
		m.Writes.WithLabelValues(r)
	}
	reg.MustRegister(m.Writes, m.Leader)
	return m
}

// Writer writes route status while its Elector holds the Lease.
type Writer struct {
	Client   dynamic.Interface
	Elector  *Elector
	Statuses func(context.Context) ([]Route, error) // agent.RouteStatuses
	Metrics  *Metrics
	Log      *slog.Logger
	// Resync is how often statuses are computed and compared with what was
	// written (default 5 s); Relist how often the routes' status is read
	// back from the API (default 10 min), to repair what someone else
	// changed. QPS and Burst bound writes (default 10/s, 50).
	Resync, Relist time.Duration
	QPS            float64
	Burst          int
	now            func() time.Time
}

// Run writes status until ctx is done; it writes only while leading.
func (w *Writer) Run(ctx context.Context) {
	w.defaults()
	w.Elector.Run(ctx, w.lead)
}

func (w *Writer) defaults() {
	if w.Resync <= 0 {
		w.Resync = 5 * time.Second
	}
	if w.Relist <= 0 {
		w.Relist = 10 * time.Minute
	}
	if w.QPS <= 0 {
		w.QPS = 10
	}
	if w.Burst <= 0 {
		w.Burst = 50
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	if w.Metrics == nil {
		w.Metrics = NewMetrics(prometheus.NewRegistry())
	}
}

// term is one tenure as leader: what it knows of the routes' status.
type term struct {
	w     *Writer
	queue workqueue.TypedRateLimitingInterface[discovery.RouteKey]

	mu       sync.Mutex
	computed map[discovery.RouteKey]Route
	written  map[discovery.RouteKey][]gwv1.RouteParentStatus // our entries as the API has them
	pending  map[discovery.RouteKey]bool                     // queued, not yet taken
}

// NewRateLimiter is the writes' limiter: at most qps a second after a burst,
// and a route whose write failed waits longer each time (5 ms doubling up to
// 1 min).
func NewRateLimiter(qps float64, burst int) workqueue.TypedRateLimiter[discovery.RouteKey] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[discovery.RouteKey](5*time.Millisecond, time.Minute),
		&workqueue.TypedBucketRateLimiter[discovery.RouteKey]{Limiter: rate.NewLimiter(rate.Limit(qps), burst)},
	)
}

// lead is one term: it ends, and writes stop, when ctx does.
func (w *Writer) lead(ctx context.Context) {
	w.Metrics.Leader.Set(1)
	defer w.Metrics.Leader.Set(0)
	t := &term{
		w:        w,
		queue:    workqueue.NewTypedRateLimitingQueue(NewRateLimiter(w.QPS, w.Burst)),
		computed: map[discovery.RouteKey]Route{},
		written:  map[discovery.RouteKey][]gwv1.RouteParentStatus{},
		pending:  map[discovery.RouteKey]bool{},
	}
	var wg sync.WaitGroup
	wg.Go(func() { t.work(ctx) })
	defer func() {
		t.queue.ShutDown()
		wg.Wait()
	}()
	resync := time.NewTicker(w.Resync)
	defer resync.Stop()
	var listed time.Time
	for {
		if listed.IsZero() || w.now().Sub(listed) >= w.Relist {
			if err := t.relist(ctx); err != nil {
				w.Log.Warn("route status: listing routes", "error", err)
			} else {
				listed = w.now()
			}
		}
		if err := t.sync(ctx); err != nil && ctx.Err() == nil {
			w.Log.Warn("route status: computing", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
		}
	}
}

// relist reads every route's entries of ours back from the API.
func (t *term) relist(ctx context.Context) error {
	written := map[discovery.RouteKey][]gwv1.RouteParentStatus{}
	for kind, res := range Resources {
		opts := metav1.ListOptions{Limit: 500}
		for {
			l, err := t.w.Client.Resource(res).List(ctx, opts)
			if apierrors.IsNotFound(err) {
				break // no such CRD
			}
			if err != nil {
				return fmt.Errorf("%s: %w", res.Resource, err)
			}
			for _, u := range l.Items {
				if ours := Ours(parentsOf(&u)); len(ours) > 0 {
					written[discovery.RouteKey{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}] = ours
				}
			}
			if opts.Continue = l.GetContinue(); opts.Continue == "" {
				break
			}
		}
	}
	t.mu.Lock()
	t.written = written
	t.mu.Unlock()
	return nil
}

// sync computes every route's status and queues the routes whose entries
// differ from what the API has.
func (t *term) sync(ctx context.Context) error {
	routes, err := t.w.Statuses(ctx)
	if err != nil {
		return err
	}
	computed := make(map[discovery.RouteKey]Route, len(routes))
	for _, r := range routes {
		computed[r.Key] = r
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.computed = computed
	for k, r := range computed {
		if !Same(t.written[k], Desired(r.Parents, r.Generation)) {
			t.enqueue(k)
		}
	}
	for k, ours := range t.written {
		if _, ok := computed[k]; !ok && len(ours) > 0 {
			t.enqueue(k) // no longer names a Service, or deleted
		}
	}
	return nil
}

// enqueue queues k unless it waits already: a route changing faster than
// it can be written is written once, with its latest status, and the
// limiter's tokens go to distinct routes. t.mu is held.
func (t *term) enqueue(k discovery.RouteKey) {
	if !t.pending[k] {
		t.pending[k] = true
		t.queue.AddRateLimited(k)
	}
}

func (t *term) work(ctx context.Context) {
	for {
		k, quit := t.queue.Get()
		if quit {
			return
		}
		t.mu.Lock()
		delete(t.pending, k)
		t.mu.Unlock()
		if err := t.write(ctx, k); err != nil && ctx.Err() == nil {
			t.w.Log.Warn("route status: writing", "route", k.String(), "error", err)
			t.mu.Lock()
			if !t.pending[k] {
				t.pending[k] = true
				t.queue.AddRateLimited(k) // backs off
			}
			t.mu.Unlock()
		} else {
			t.queue.Forget(k)
		}
		t.queue.Done(k)
	}
}

// errStale: the agent's model has another route of that name (deleted and
// created again); the next sync has the new one.
var errStale = errors.New("the route's UID differs from the agent's: waiting for the agent to see it")

// write brings one route's entries of ours to what the model says, reading
// the route first; a conflict is retried with the route read again.
func (t *term) write(ctx context.Context, k discovery.RouteKey) error {
	res := t.w.Client.Resource(Resources[k.Kind]).Namespace(k.Namespace)
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err() // no longer leading: not one more write
		}
		u, err := res.Get(ctx, k.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			t.mu.Lock()
			delete(t.written, k)
			t.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		t.mu.Lock()
		r, known := t.computed[k]
		t.mu.Unlock()
		if known && string(u.GetUID()) != r.UID {
			return errStale
		}
		want := []gwv1.RouteParentStatus{} // not in the model: none of ours
		if known {
			want = Desired(r.Parents, r.Generation)
		}
		next, changed, err := Merge(parentsOf(u), want, metav1.NewTime(t.w.now().Truncate(time.Second)))
		if err != nil {
			return err
		}
		if !changed {
			t.remember(k, next)
			return nil
		}
		if err := setParents(u, next); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_, err = res.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "nodexds"})
		switch {
		case err == nil:
			t.w.Metrics.Writes.WithLabelValues("written").Inc()
			t.remember(k, next)
			return nil
		case apierrors.IsConflict(err) && attempt < 4:
			t.w.Metrics.Writes.WithLabelValues("conflict").Inc()
			continue
		case apierrors.IsConflict(err):
			t.w.Metrics.Writes.WithLabelValues("conflict").Inc()
			return err
		default:
			t.w.Metrics.Writes.WithLabelValues("error").Inc()
			return err
		}
	}
}

func (t *term) remember(k discovery.RouteKey, parents []json.RawMessage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ours := Ours(parents); len(ours) > 0 {
		t.written[k] = ours
	} else {
		delete(t.written, k)
	}
}

// parentsOf returns a route's status.parents, each entry as JSON.
func parentsOf(u *unstructured.Unstructured) []json.RawMessage {
	ps, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	out := make([]json.RawMessage, 0, len(ps))
	for _, p := range ps {
		if raw, err := json.Marshal(p); err == nil {
			out = append(out, raw)
		}
	}
	return out
}

// setParents sets a route's status.parents.
func setParents(u *unstructured.Unstructured, parents []json.RawMessage) error {
	ps := make([]any, 0, len(parents))
	for _, raw := range parents {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		ps = append(ps, v)
	}
	return unstructured.SetNestedSlice(u.Object, ps, "status", "parents")
}
