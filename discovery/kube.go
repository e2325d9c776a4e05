package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/nodexds/nodexds/discovery/kubeapi"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// KubeSource watches Services, EndpointSlices and Nodes with shared informers.
// The informers cache a compact value per object (its key and the model value
// the Store keeps, shared with it) instead of the API object, so the model is
// the only copy: memory stays small with tens of thousands of Services.
type KubeSource struct {
	// API is where it reads. Nodes are watched as metadata only: their labels
	// are all nodexds reads, while their status is large and changes at
	// every heartbeat.
	API kubeapi.API
	Log *slog.Logger
	// OnError is told about objects that could not be converted; may be nil.
	OnError func(error)
}

// Start begins watching and returns once every object of the initial lists
// has been sent to sink (or ctx ends). Watching continues in the background
// until ctx is done; client-go re-lists and re-watches by itself after API
// server outages. sink is called from one goroutine per kind of object.
func (k *KubeSource) Start(ctx context.Context, sink func(Event)) error {
	informer := func(lw cache.ListerWatcher, example runtime.Object) cache.SharedIndexInformer {
		return cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{})
	}
	kinds := []struct {
		inf     cache.SharedIndexInformer
		compact cache.TransformFunc
	}{
		{informer(k.API.Services, &corev1.Service{}), compactService},
		{informer(k.API.EndpointSlices, &discoveryv1.EndpointSlice{}), compactSlice},
		{informer(k.API.Nodes, &metav1.PartialObjectMetadata{}), compactNode},
	}
	var synced []cache.DoneChecker
	for _, kind := range kinds {
		if err := kind.inf.SetTransform(kind.compact); err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
		reg, err := kind.inf.AddEventHandler(k.handler(kind.compact, sink))
		if err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
		synced = append(synced, reg.HasSyncedChecker())
	}
	for _, kind := range kinds {
		go kind.inf.RunWithContext(ctx)
	}
	// The handlers' registrations, not the informers: an informer is synced
	// once its store holds the initial list, while its handlers may still be
	// delivering it, and answering from a half-read state tells clients that
	// existing Services are gone.
	if !cache.WaitFor(ctx, "", synced...) {
		return fmt.Errorf("kube source: initial lists not read: %w", context.Cause(ctx))
	}
	k.Log.Info("kube source synced", "services", len(kinds[0].inf.GetStore().ListKeys()),
		"endpointslices", len(kinds[1].inf.GetStore().ListKeys()), "nodes", len(kinds[2].inf.GetStore().ListKeys()))
	return nil
}

// handler forwards an informer's notifications to sink as Events.
func (k *KubeSource) handler(compact cache.TransformFunc, sink func(Event)) cache.ResourceEventHandler {
	get := func(obj any) *cached {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		// Objects arrive compacted by the transform; compacting is idempotent,
		// so an API object reaching here some other way is handled the same.
		c, _ := compact(obj)
		if c, ok := c.(*cached); ok {
			return c
		}
		err := fmt.Errorf("unexpected %T from an informer", obj)
		k.Log.Error("kube source: skipping object", "error", err)
		if k.OnError != nil {
			k.OnError(err)
		}
		return nil
	}
	send := func(c *cached) {
		if c.err != nil {
			// The API server validates objects, so this is a bug or a very odd
			// object; skipping it keeps every other Service served.
			k.Log.Error("kube source: skipping object", "error", c.err)
			if k.OnError != nil {
				k.OnError(c.err)
			}
		}
		sink(c.ev)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if c := get(obj); c != nil {
				send(c)
			}
		},
		UpdateFunc: func(oldObj, obj any) {
			old, c := get(oldObj), get(obj)
			// A Node's heartbeat or an unrelated label changes the object but
			// not what nodexds reads: do not wake the agent for it.
			if c != nil && (old == nil || !old.same(c)) {
				send(c)
			}
		},
		DeleteFunc: func(obj any) {
			if c := get(obj); c != nil {
				sink(c.deleted())
			}
		},
	}
}

// cached is what an informer keeps in place of an API object: the key and
// resourceVersion client-go needs, and the Event the object amounts to. The
// Event's model value is the one the Store keeps, so the informer cache is not
// a second copy of the model, let alone of the API objects.
type cached struct {
	objectKey
	ev Event
	// err says why the object could not be converted; ev then removes
	// whatever the object served before.
	err error
}

// GetObjectMeta lets client-go read the key (see objectKey).
func (c *cached) GetObjectMeta() metav1.Object { return &c.objectKey }

func (c *cached) same(o *cached) bool {
	return reflect.DeepEqual(c.ev, o.ev) && (c.err == nil) == (o.err == nil)
}

// deleted is the Event for the object's deletion.
func (c *cached) deleted() Event {
	e := c.ev
	e.Deleted = true
	return e
}

// compactService is the Service informer's transform.
func compactService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil // already compact
	}
	return &cached{objectKey: keyOf(s), ev: Event{Service: FromService(s)}}, nil
}

// compactSlice is the EndpointSlice informer's transform. A slice that cannot
// be converted is cached as its identity and an error: it serves nothing.
func compactSlice(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	c := &cached{objectKey: keyOf(es)}
	sl, err := FromEndpointSlice(es)
	if err != nil {
		// A slice that lost its Service label (or holds a bad address) serves
		// no Service: drop whatever it served before.
		c.ev, c.err = Event{Slice: &Slice{Service: ServiceKey{Namespace: es.Namespace}, Name: es.Name}, Deleted: true}, err
		return c, nil
	}
	c.ev = Event{Slice: sl}
	return c, nil
}

// compactNode is the Node metadata informer's transform.
func compactNode(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &cached{
		objectKey: keyOf(m),
		ev:        Event{Node: nodeFromLabels(m.Name, m.Labels)},
	}, nil
}

// EventRecorder posts Kubernetes Events about Services.
type EventRecorder struct {
	rec  record.EventRecorder
	stop func()
}

// NewEventRecorder records Events as component "nodexds" from node.
func NewEventRecorder(api kubeapi.API, node string) *EventRecorder {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(api.Events)
	return &EventRecorder{
		rec:  b.NewRecorder(kubeapi.Scheme, corev1.EventSource{Component: "nodexds", Host: node}),
		stop: b.Shutdown,
	}
}

// Warn posts a Warning Event on a Service.
func (r *EventRecorder) Warn(svc ServiceKey, uid, reason, message string) {
	ref := &corev1.ObjectReference{
		APIVersion: "v1", Kind: "Service",
		Namespace: svc.Namespace, Name: svc.Name, UID: types.UID(uid),
	}
	r.rec.Event(ref, corev1.EventTypeWarning, reason, message)
}

// Stop flushes and stops recording.
func (r *EventRecorder) Stop() { r.stop() }
