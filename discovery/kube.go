package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// KubeSource watches Services, EndpointSlices and Nodes with shared informers.
// Objects are stripped to what nodexds reads before they are cached, so memory
// stays small with tens of thousands of Services.
type KubeSource struct {
	Client kubernetes.Interface
	Log    *slog.Logger
	// OnError is told about objects that could not be converted; may be nil.
	OnError func(error)
}

// Start begins watching and returns once the initial lists have been sent to
// sink (or ctx ends). Watching continues in the background until ctx is done;
// client-go re-lists and re-watches by itself after API server outages.
func (k *KubeSource) Start(ctx context.Context, sink func(Event)) error {
	f := informers.NewSharedInformerFactory(k.Client, 0)
	svc := f.Core().V1().Services().Informer()
	eps := f.Discovery().V1().EndpointSlices().Informer()
	nodes := f.Core().V1().Nodes().Informer()
	for _, inf := range []cache.SharedIndexInformer{svc, eps, nodes} {
		if err := inf.SetTransform(strip); err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
	}
	handlers := []struct {
		inf     cache.SharedIndexInformer
		convert func(obj any, deleted bool) (Event, error)
	}{
		{svc, func(obj any, deleted bool) (Event, error) {
			s, ok := obj.(*corev1.Service)
			if !ok {
				return Event{}, fmt.Errorf("unexpected %T in Service informer", obj)
			}
			return Event{Service: FromService(s), Deleted: deleted}, nil
		}},
		{eps, func(obj any, deleted bool) (Event, error) {
			es, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return Event{}, fmt.Errorf("unexpected %T in EndpointSlice informer", obj)
			}
			sl, err := FromEndpointSlice(es)
			if err != nil {
				// A slice that lost its Service label (or holds a bad address)
				// serves no Service: drop whatever it served before.
				sink(Event{Slice: &Slice{Service: ServiceKey{Namespace: es.Namespace}, Name: es.Name}, Deleted: true})
				return Event{}, err
			}
			return Event{Slice: sl, Deleted: deleted}, nil
		}},
		{nodes, func(obj any, deleted bool) (Event, error) {
			n, ok := obj.(*corev1.Node)
			if !ok {
				return Event{}, fmt.Errorf("unexpected %T in Node informer", obj)
			}
			return Event{Node: FromNode(n), Deleted: deleted}, nil
		}},
	}
	for _, h := range handlers {
		send := func(obj any, deleted bool) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			e, err := h.convert(obj, deleted)
			if err != nil {
				// The API server validates objects, so this is a bug or a very odd
				// object; skipping it keeps every other Service served.
				k.Log.Error("kube source: skipping object", "error", err)
				if k.OnError != nil {
					k.OnError(err)
				}
				return
			}
			sink(e)
		}
		_, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { send(obj, false) },
			UpdateFunc: func(_, obj any) { send(obj, false) },
			DeleteFunc: func(obj any) { send(obj, true) },
		})
		if err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), svc.HasSynced, eps.HasSynced, nodes.HasSynced) {
		return fmt.Errorf("kube source: caches did not sync: %w", context.Cause(ctx))
	}
	k.Log.Info("kube source synced", "services", len(svc.GetStore().ListKeys()),
		"endpointslices", len(eps.GetStore().ListKeys()), "nodes", len(nodes.GetStore().ListKeys()))
	return nil
}

// strip drops what nodexds never reads before an object is cached.
func strip(obj any) (any, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	m.SetManagedFields(nil)
	if a := m.GetAnnotations(); len(a) > 0 {
		kept := map[string]string{}
		for k, v := range a {
			if strings.HasPrefix(k, AnnotationPrefix) {
				kept[k] = v
			}
		}
		m.SetAnnotations(kept)
	}
	if n, ok := obj.(*corev1.Node); ok {
		// Node status (images, conditions) is large and changes every heartbeat.
		labels := map[string]string{}
		for _, k := range []string{LabelHostname, LabelZone, LabelRegion} {
			if v, ok := n.Labels[k]; ok {
				labels[k] = v
			}
		}
		n.Labels = labels
		n.Spec = corev1.NodeSpec{}
		n.Status = corev1.NodeStatus{}
	}
	return obj, nil
}

// EventRecorder posts Kubernetes Events about Services.
type EventRecorder struct {
	rec  record.EventRecorder
	stop func()
}

// NewEventRecorder records Events as component "nodexds" from node.
func NewEventRecorder(client kubernetes.Interface, node string) *EventRecorder {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return &EventRecorder{
		rec:  b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "nodexds", Host: node}),
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
