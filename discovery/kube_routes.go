package discovery

import (
	"context"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// gatedKind is a Gateway API kind, watched while its CRD exists: a cluster
// without the Gateway API is served as before, without an error every few
// seconds from a reflector listing what is not there, and CRDs installed
// later are picked up without a restart.
type gatedKind struct {
	crd     string // the CRD's name
	lw      cache.ListerWatcher
	example runtime.Object
	compact compactFunc

	store  *sourceStore
	cancel context.CancelFunc
	done   chan struct{}
}

// crdGate is the ReflectorStore of CustomResourceDefinitions (metadata): it
// starts a kind's reflector when its CRD appears and stops it, deleting what
// it served, when the CRD goes.
type crdGate struct {
	ctx    context.Context
	kinds  []*gatedKind
	newSrc func(compactFunc) *sourceStore
	log    *slog.Logger

	mu      sync.Mutex
	present map[string]bool // CRD names seen, by the metadata list and watch
	synced  chan struct{}
	once    sync.Once
}

func (g *crdGate) Add(obj any) error    { g.set(obj, true); return nil }
func (g *crdGate) Update(obj any) error { g.set(obj, true); return nil }
func (g *crdGate) Delete(obj any) error {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	g.set(obj, false)
	return nil
}
func (g *crdGate) Resync() error { return nil }

func (g *crdGate) Replace(list []any, _ string) error {
	g.mu.Lock()
	g.present = map[string]bool{}
	for _, obj := range list {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			g.present[m.Name] = true
		}
	}
	g.apply()
	g.mu.Unlock()
	g.once.Do(func() { close(g.synced) })
	return nil
}

func (g *crdGate) set(obj any, present bool) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	g.mu.Lock()
	if g.present == nil {
		g.present = map[string]bool{}
	}
	g.present[m.Name] = present
	g.apply()
	g.mu.Unlock()
}

// apply starts the kinds whose CRD is present and stops the others. g.mu
// is held.
func (g *crdGate) apply() {
	for _, k := range g.kinds {
		want := g.present[k.crd]
		switch {
		case want && k.cancel == nil:
			g.log.Info("kube source: watching", "crd", k.crd)
			k.store = g.newSrc(k.compact)
			ctx, cancel := context.WithCancel(g.ctx)
			k.cancel, k.done = cancel, make(chan struct{})
			r := cache.NewReflectorWithOptions(notYetServed{k.lw}, k.example, k.store, cache.ReflectorOptions{Name: "nodexds " + k.crd})
			go func(done chan struct{}) {
				defer close(done)
				r.RunWithContext(ctx)
			}(k.done)
		case !want && k.cancel != nil:
			g.log.Info("kube source: CRD removed, forgetting its objects", "crd", k.crd)
			k.cancel()
			<-k.done
			_ = k.store.Replace(nil, "") // everything it served is deleted
			k.cancel, k.store = nil, nil
		}
	}
}

// started returns the stores of the kinds watched now, to wait for their
// initial lists.
func (g *crdGate) started() []*sourceStore {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*sourceStore
	for _, k := range g.kinds {
		if k.store != nil {
			out = append(out, k.store)
		}
	}
	return out
}

// gatewayKinds are the Gateway API kinds the kube source reads.
func gatewayKinds(grpc, http, grants cache.ListerWatcher) []*gatedKind {
	return []*gatedKind{
		{crd: "grpcroutes." + gwv1.GroupName, lw: grpc, example: &gwv1.GRPCRoute{}, compact: compactGRPCRoute},
		{crd: "httproutes." + gwv1.GroupName, lw: http, example: &gwv1.HTTPRoute{}, compact: compactHTTPRoute},
		{crd: "referencegrants." + gwv1.GroupName, lw: grants, example: &gwv1.ReferenceGrant{}, compact: compactGrant},
	}
}

var (
	compactGRPCRoute = compactAs(func(r *gwv1.GRPCRoute) Event { return Event{Route: FromGRPCRoute(r)} })
	compactHTTPRoute = compactAs(func(r *gwv1.HTTPRoute) Event { return Event{Route: FromHTTPRoute(r)} })
	compactGrant     = compactAs(func(g *gwv1.ReferenceGrant) Event { return Event{Grant: FromReferenceGrant(g)} })
)

// notYetServed lists through lw, waiting out the moments after a CRD is
// created and before the API server serves its kind (a NotFound): the
// reflector would log an error for each, and nothing is wrong.
type notYetServed struct{ lw cache.ListerWatcher }

// servedWithin bounds that wait; a kind still not served after it is an
// error worth the reflector's log.
const servedWithin = 30 * time.Second

func (n notYetServed) ListWithContext(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
	deadline := time.Now().Add(servedWithin)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		obj, err := cache.ToListerWatcherWithContext(n.lw).ListWithContext(ctx, o)
		if !apierrors.IsNotFound(err) || time.Now().Add(wait).After(deadline) {
			return obj, err
		}
		select {
		case <-ctx.Done():
			return obj, err
		case <-time.After(wait):
		}
	}
}

func (n notYetServed) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return cache.ToListerWatcherWithContext(n.lw).WatchWithContext(ctx, o)
}

func (n notYetServed) List(o metav1.ListOptions) (runtime.Object, error) {
	return n.ListWithContext(context.Background(), o)
}

func (n notYetServed) Watch(o metav1.ListOptions) (watch.Interface, error) {
	return n.WatchWithContext(context.Background(), o)
}

// IsWatchListSemanticsUnSupported passes on what lw says of watch-lists.
func (n notYetServed) IsWatchListSemanticsUnSupported() bool {
	u, ok := n.lw.(interface{ IsWatchListSemanticsUnSupported() bool })
	return ok && u.IsWatchListSemanticsUnSupported()
}
