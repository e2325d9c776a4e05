package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/nodexds/nodexds/discovery/kubeapi"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// KubeSource watches Services, EndpointSlices, Nodes and Namespaces. Each
// kind has a client-go Reflector (list, then watch; re-list and re-watch
// after outages) writing into a sourceStore, which keeps a compact value per
// object (the model value the Store keeps, shared with it) and tells the
// sink what changed, in the reflector's own goroutine.
//
// Not a shared informer: that keeps each listed API object, whole, in a
// queue until a processor goroutine hands it to a handler, and reports
// synced before its handlers have seen the last one. Here the reflector
// writes the store itself: the initial list has reached the sink when
// synced closes, by construction, and API objects are dropped as they are
// read, so a large list costs the agent its compact values rather than the
// objects (figures in docs/BENCHMARKS.md, "Reflectors write the source's own
// store").
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
// until ctx is done. sink is called from one goroutine per kind of object.
func (k *KubeSource) Start(ctx context.Context, sink func(Event)) error {
	kinds := []struct {
		name    string
		lw      cache.ListerWatcher
		example runtime.Object
		compact compactFunc
	}{
		{"services", k.API.Services, &corev1.Service{}, compactService},
		{"endpointslices", k.API.EndpointSlices, &discoveryv1.EndpointSlice{}, compactSlice},
		{"nodes", k.API.Nodes, &metav1.PartialObjectMetadata{}, compactNode},
		{"namespaces", k.API.Namespaces, &corev1.Namespace{}, compactNamespace},
	}
	stores := make([]*sourceStore, len(kinds))
	for i, kind := range kinds {
		stores[i] = &sourceStore{compact: kind.compact, sink: sink, report: k.report,
			objs: map[string]*cached{}, synced: make(chan struct{})}
		r := cache.NewReflectorWithOptions(kind.lw, kind.example, stores[i], cache.ReflectorOptions{Name: "nodexds " + kind.name})
		go r.RunWithContext(ctx)
	}
	for i, s := range stores {
		select {
		case <-s.synced:
		case <-ctx.Done():
			return fmt.Errorf("kube source: initial list of %s not read: %w", kinds[i].name, context.Cause(ctx))
		}
	}
	routes, err := k.startRoutes(ctx, sink)
	if err != nil {
		return err
	}
	k.Log.Info("kube source synced", "services", stores[0].len(), "endpointslices", stores[1].len(), "nodes", stores[2].len(),
		"namespaces", stores[3].len(), "gateway_api_objects", routes)
	return nil
}

// startRoutes watches the Gateway API kinds whose CRDs exist, now and
// later, and returns once the initial lists of those present have reached
// sink, with how many objects they hold.
func (k *KubeSource) startRoutes(ctx context.Context, sink func(Event)) (int, error) {
	if k.API.CRDs == nil {
		return 0, nil
	}
	gate := &crdGate{
		ctx: ctx, log: k.Log, synced: make(chan struct{}),
		kinds: gatewayKinds(k.API.GRPCRoutes, k.API.HTTPRoutes, k.API.ReferenceGrants),
		newSrc: func(c compactFunc) *sourceStore {
			return &sourceStore{compact: c, sink: sink, report: k.report, objs: map[string]*cached{}, synced: make(chan struct{})}
		},
	}
	r := cache.NewReflectorWithOptions(k.API.CRDs, &metav1.PartialObjectMetadata{}, gate, cache.ReflectorOptions{Name: "nodexds customresourcedefinitions"})
	go r.RunWithContext(ctx)
	// What cannot be listed (a CRD not yet established, a role without
	// these kinds) must not keep the agent from serving its Services.
	limit := time.NewTimer(routesListWait)
	defer limit.Stop()
	wait := func(synced <-chan struct{}) error {
		select {
		case <-synced:
			return nil
		case <-limit.C:
			return errNotListed
		case <-ctx.Done():
			return fmt.Errorf("kube source: initial list of Gateway API routes not read: %w", context.Cause(ctx))
		}
	}
	err := wait(gate.synced)
	n := 0
	for _, s := range gate.started() {
		if err == nil {
			err = wait(s.synced)
		}
		n += s.len()
	}
	if errors.Is(err, errNotListed) {
		k.Log.Warn("kube source: Gateway API objects not listed yet; serving without them until they are", "waited", routesListWait.String())
		return n, nil
	}
	return n, err
}

var errNotListed = errors.New("not listed in time")

// routesListWait bounds the wait for the routes' initial lists at start.
const routesListWait = 20 * time.Second

// report logs and counts an object that could not be used.
func (k *KubeSource) report(err error) {
	// The API server validates objects, so this is a bug or a very odd
	// object; skipping it keeps every other Service served.
	k.Log.Error("kube source: skipping object", "error", err)
	if k.OnError != nil {
		k.OnError(err)
	}
}

// sourceStore is what a Reflector writes into (cache.ReflectorStore): the
// compact value of every object of one kind, by namespace/name. Each write
// tells sink what it changed for nodexds; a write that changes nothing
// nodexds reads (a Node's heartbeat, an annotation) tells it nothing. The
// first Replace is the initial list: synced closes once all of it reached
// sink.
type sourceStore struct {
	compact compactFunc
	sink    func(Event)
	report  func(error)

	mu     sync.Mutex // the Reflector writes from one goroutine; len reads
	objs   map[string]*cached
	synced chan struct{}
	once   sync.Once
}

func (s *sourceStore) Add(obj any) error    { s.put(obj); return nil }
func (s *sourceStore) Update(obj any) error { s.put(obj); return nil }
func (s *sourceStore) Resync() error        { return nil }

func (s *sourceStore) Delete(obj any) error {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	key, c := s.convert(obj)
	if c == nil {
		return nil
	}
	s.mu.Lock()
	_, known := s.objs[key]
	delete(s.objs, key)
	s.mu.Unlock()
	if known {
		s.sink(c.deleted())
	}
	return nil
}

// Replace takes a (re-)list: what is listed is put, what is no longer there
// is deleted.
func (s *sourceStore) Replace(list []any, _ string) error {
	listed := make(map[string]bool, len(list))
	for _, obj := range list {
		if key := s.put(obj); key != "" {
			listed[key] = true
		}
	}
	s.mu.Lock()
	var gone []*cached
	for key, c := range s.objs {
		if !listed[key] {
			gone = append(gone, c)
			delete(s.objs, key)
		}
	}
	s.mu.Unlock()
	for _, c := range gone {
		s.sink(c.deleted())
	}
	s.once.Do(func() { close(s.synced) })
	return nil
}

// put records an object and tells sink if what nodexds reads of it changed.
// It returns the object's key ("" if it could not be read).
func (s *sourceStore) put(obj any) string {
	key, c := s.convert(obj)
	if c == nil {
		return ""
	}
	s.mu.Lock()
	old := s.objs[key]
	s.objs[key] = c
	s.mu.Unlock()
	if old != nil && old.same(c) {
		return key
	}
	if c.err != nil {
		s.report(c.err)
	}
	s.sink(c.ev)
	return key
}

func (s *sourceStore) convert(obj any) (string, *cached) {
	key, c, ok := s.compact(obj)
	if !ok {
		s.report(fmt.Errorf("unexpected %T from the API", obj))
		return "", nil
	}
	return key, c
}

func (s *sourceStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objs)
}

// cached is what the source keeps of an object: the Event it amounts to. Its
// model value is the one the Store keeps, so this is not a second copy of
// the model, let alone of the API objects.
type cached struct {
	ev Event
	// err says why the object could not be converted; ev then removes
	// whatever the object served before.
	err error
}

func (c *cached) same(o *cached) bool {
	return reflect.DeepEqual(c.ev, o.ev) && (c.err == nil) == (o.err == nil)
}

// deleted is the Event for the object's deletion.
func (c *cached) deleted() Event {
	e := c.ev
	e.Deleted = true
	return e
}

// compactFunc reads an API object of one kind: its namespace/name key and
// what it amounts to; ok is false for an object of another type.
type compactFunc func(obj any) (key string, c *cached, ok bool)

func objectKey(m metav1.Object) string {
	if m.GetNamespace() == "" {
		return m.GetName()
	}
	return m.GetNamespace() + "/" + m.GetName()
}

// compactAs reads objects of one type that always convert.
func compactAs[T metav1.Object](convert func(T) Event) compactFunc {
	return func(obj any) (string, *cached, bool) {
		o, ok := obj.(T)
		if !ok {
			return "", nil, false
		}
		return objectKey(o), &cached{ev: convert(o)}, true
	}
}

var (
	compactService = compactAs(func(s *corev1.Service) Event { return Event{Service: FromService(s)} })
	// Nodes are read as metadata: their labels are all nodexds reads.
	compactNode = compactAs(func(m *metav1.PartialObjectMetadata) Event { return Event{Node: nodeFromLabels(m.Name, m.Labels)} })
	// Namespaces are kept as their nodexds.io/ annotations: a write to their
	// labels or status changes nothing nodexds reads, and is not forwarded.
	compactNamespace = compactAs(func(n *corev1.Namespace) Event { return Event{Namespace: FromNamespace(n)} })
)

// compactSlice reads an EndpointSlice. One that cannot be converted is kept
// as an error: it serves nothing.
func compactSlice(obj any) (string, *cached, bool) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return "", nil, false
	}
	sl, err := FromEndpointSlice(es)
	if err != nil {
		// A slice that lost its Service label (or holds a bad address) serves
		// no Service: drop whatever it served before.
		return objectKey(es), &cached{ev: Event{Slice: &Slice{Service: ServiceKey{Namespace: es.Namespace}, Name: es.Name}, Deleted: true}, err: err}, true
	}
	return objectKey(es), &cached{ev: Event{Slice: sl}}, true
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

// WarnRoute posts a Warning Event on a GRPCRoute or HTTPRoute.
func (r *EventRecorder) WarnRoute(route *Route, reason, message string) {
	ref := &corev1.ObjectReference{
		APIVersion: gwv1.GroupVersion.String(), Kind: route.Key.Kind,
		Namespace: route.Key.Namespace, Name: route.Key.Name, UID: types.UID(route.UID),
	}
	r.rec.Event(ref, corev1.EventTypeWarning, reason, message)
}

// Stop flushes and stops recording.
func (r *EventRecorder) Stop() { r.stop() }
