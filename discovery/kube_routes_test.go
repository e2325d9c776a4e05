package discovery

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/internal/poll"
)

// fakeLW lists what list returns and hands out watches the test drives.
type fakeLW struct {
	list    func() runtime.Object
	lists   atomic.Int32
	missing atomic.Int32 // lists to answer NotFound first, as for a kind not served yet
	mu      sync.Mutex
	watches []*watch.RaceFreeFakeWatcher
}

func (f *fakeLW) ListWithContext(_ context.Context, _ metav1.ListOptions) (runtime.Object, error) {
	f.lists.Add(1)
	if f.missing.Add(-1) >= 0 {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: gwv1.GroupName, Resource: "grpcroutes"}, "")
	}
	return f.list(), nil
}

func (f *fakeLW) WatchWithContext(_ context.Context, _ metav1.ListOptions) (watch.Interface, error) {
	w := watch.NewRaceFreeFake()
	f.mu.Lock()
	f.watches = append(f.watches, w)
	f.mu.Unlock()
	return w, nil
}

func (f *fakeLW) List(o metav1.ListOptions) (runtime.Object, error) {
	return f.ListWithContext(context.Background(), o)
}

func (f *fakeLW) Watch(o metav1.ListOptions) (watch.Interface, error) {
	return f.WatchWithContext(context.Background(), o)
}

// Fakes stream no watch-lists; say so, as client-go's fake clientsets do.
func (f *fakeLW) IsWatchListSemanticsUnSupported() bool { return true }

// send delivers an event on the newest watch, once there is one.
func (f *fakeLW) send(t *testing.T, typ watch.EventType, obj runtime.Object) {
	t.Helper()
	poll.Until(t, "a watch is open", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.watches) > 0
	})
	f.mu.Lock()
	w := f.watches[len(f.watches)-1]
	f.mu.Unlock()
	w.Action(typ, obj)
}

func crd(name string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "2"}}
}

// TestGatewayKindsAreWatchedWhileTheirCRDsExist: without the CRDs nothing
// is listed; a CRD installed later starts its kind, whose routes reach the
// sink; removing the CRD deletes what it served.
func TestGatewayKindsAreWatchedWhileTheirCRDsExist(t *testing.T) {
	crds := &fakeLW{list: func() runtime.Object { return &metav1.PartialObjectMetadataList{} }}
	grpc := &fakeLW{list: func() runtime.Object {
		return &gwv1.GRPCRouteList{Items: []gwv1.GRPCRoute{{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "a"}}}}
	}}
	none := func() runtime.Object { panic("listed a kind whose CRD does not exist") }
	http, grants := &fakeLW{list: none}, &fakeLW{list: none}

	var mu sync.Mutex
	routes := map[RouteKey]bool{}
	sink := func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.Route != nil {
			routes[e.Route.Key] = !e.Deleted
		}
	}
	has := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return routes[RouteKey{KindGRPCRoute, "a", "r"}]
	}
	k := &KubeSource{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	k.API.CRDs, k.API.GRPCRoutes, k.API.HTTPRoutes, k.API.ReferenceGrants = crds, grpc, http, grants
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := k.startRoutes(ctx, sink)
	if err != nil || n != 0 {
		t.Fatalf("started with %d objects, %v", n, err)
	}
	if grpc.lists.Load() != 0 {
		t.Fatal("GRPCRoutes listed without their CRD")
	}

	grpc.missing.Store(2) // the API server serves the kind a moment after the CRD appears
	crds.send(t, watch.Added, crd("grpcroutes."+gwv1.GroupName))
	poll.Until(t, "the GRPCRoute reaches the sink once its CRD exists", has)

	crds.send(t, watch.Deleted, crd("grpcroutes."+gwv1.GroupName))
	poll.Until(t, "the GRPCRoute is deleted with its CRD", func() bool { return !has() })
	if http.lists.Load() != 0 || grants.lists.Load() != 0 {
		t.Error("kinds without CRDs were listed")
	}
}

// TestAKindNotServedYetIsWaitedOut: the moments between a CRD's creation
// and its kind being served answer NotFound; the list waits them out
// instead of failing (the reflector would log each failure), but not for
// ever.
func TestAKindNotServedYetIsWaitedOut(t *testing.T) {
	lw := &fakeLW{list: func() runtime.Object { return &gwv1.GRPCRouteList{} }}
	lw.missing.Store(2)
	if _, err := (notYetServed{lw}).ListWithContext(t.Context(), metav1.ListOptions{}); err != nil || lw.lists.Load() != 3 {
		t.Fatalf("after %d lists: %v, want the third to succeed", lw.lists.Load(), err)
	}
	lw.missing.Store(1 << 30)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := (notYetServed{lw}).ListWithContext(ctx, metav1.ListOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a list cancelled while waiting: %v, want the NotFound", err)
	}
}
