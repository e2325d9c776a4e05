package discovery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodexds/nodexds/discovery/clientset"
	"github.com/nodexds/nodexds/internal/poll"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	metafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

var (
	servicesResource   = corev1.SchemeGroupVersion.WithResource("services")
	namespacesResource = corev1.SchemeGroupVersion.WithResource("namespaces")
	slicesResource     = discoveryv1.SchemeGroupVersion.WithResource("endpointslices")
)

// kubeFixture is a KubeSource over fake API clients, feeding a Store the way
// the agent does. Objects are written through the fakes' trackers with an
// increasing resourceVersion, as the API server would set it (the fakes do
// not, and client-go takes an unchanged resourceVersion for a resync).
type kubeFixture struct {
	t      *testing.T
	client *fake.Clientset
	meta   *metafake.FakeMetadataClient
	rv     int

	mu      sync.Mutex
	store   *Store
	events  []Event
	changes []Change
	errs    int
}

// startKube starts a KubeSource over objs (Services, EndpointSlices, Nodes,
// Namespaces)
// and returns once Start has.
func startKube(t *testing.T, objs ...runtime.Object) *kubeFixture {
	t.Helper()
	return startKubeWithSink(t, nil, objs...)
}

// startKubeWithSink is startKube with a hook run on each event before it is
// applied.
func startKubeWithSink(t *testing.T, hook func(Event), objs ...runtime.Object) *kubeFixture {
	t.Helper()
	scheme := metafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &kubeFixture{t: t, client: fake.NewClientset(), meta: metafake.NewSimpleMetadataClient(scheme), store: NewStore()}
	for _, o := range objs {
		f.write(o, false)
	}
	// A fake's watch starts where it is opened, not at the list's
	// resourceVersion as the API server's does: writes made before the
	// source has opened its watches would be lost. Know when it has.
	watching := make(chan string, 16)
	for _, c := range []struct {
		fake    *clienttesting.Fake
		tracker clienttesting.ObjectTracker
	}{{&f.client.Fake, f.client.Tracker()}, {&f.meta.Fake, f.meta.Tracker()}} {
		c.fake.PrependWatchReactor("*", func(a clienttesting.Action) (bool, watch.Interface, error) {
			w, err := c.tracker.Watch(a.GetResource(), a.GetNamespace())
			if err == nil {
				select {
				case watching <- a.GetResource().Resource:
				default:
				}
			}
			return true, w, err
		})
	}
	k := &KubeSource{
		API: clientset.API(f.client, f.meta), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnError: func(error) { f.mu.Lock(); f.errs++; f.mu.Unlock() },
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := k.Start(ctx, func(e Event) {
		if hook != nil {
			hook(e)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.events = append(f.events, e)
		ch := f.store.Apply(e)
		for _, k := range f.store.TakeMoved() {
			f.changes = append(f.changes, Change{Service: &k})
		}
		if !ch.None() {
			f.changes = append(f.changes, ch)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 { // services, endpointslices, nodes, namespaces
		select {
		case <-watching:
		case <-time.After(poll.Timeout):
			t.Fatal("the kube source did not open its watches")
		}
	}
	return f
}

func (f *kubeFixture) tracker(o runtime.Object) (interface {
	Create(schema.GroupVersionResource, runtime.Object, string, ...metav1.CreateOptions) error
	Update(schema.GroupVersionResource, runtime.Object, string, ...metav1.UpdateOptions) error
}, schema.GroupVersionResource) {
	switch o.(type) {
	case *corev1.Service:
		return f.client.Tracker(), servicesResource
	case *discoveryv1.EndpointSlice:
		return f.client.Tracker(), slicesResource
	case *corev1.Namespace:
		return f.client.Tracker(), namespacesResource
	case *metav1.PartialObjectMetadata:
		return f.meta.Tracker(), corev1.SchemeGroupVersion.WithResource("nodes")
	}
	f.t.Fatalf("unexpected %T", o)
	return nil, schema.GroupVersionResource{}
}

// write creates or updates o with the next resourceVersion.
func (f *kubeFixture) write(o runtime.Object, update bool) {
	f.t.Helper()
	f.rv++
	m := o.(metav1.Object)
	m.SetResourceVersion(fmt.Sprint(f.rv))
	tr, gvr := f.tracker(o)
	var err error
	if update {
		err = tr.Update(gvr, o, m.GetNamespace())
	} else {
		err = tr.Create(gvr, o, m.GetNamespace())
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *kubeFixture) update(o runtime.Object) { f.t.Helper(); f.write(o, true) }

func (f *kubeFixture) delete(o runtime.Object) {
	f.t.Helper()
	m := o.(metav1.Object)
	var err error
	switch o.(type) {
	case *metav1.PartialObjectMetadata:
		err = f.meta.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("nodes"), "", m.GetName())
	default:
		_, gvr := f.tracker(o)
		err = f.client.Tracker().Delete(gvr, m.GetNamespace(), m.GetName())
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

// dump renders the Store: one line per Service port with its endpoints
// (as store_test's show does), then one per Node, then one per Namespace
// with its annotations.
func (f *kubeFixture) dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, k := range f.store.ServiceKeys() {
		svc, _ := f.store.Service(k)
		for _, p := range svc.Ports {
			lines = append(lines, fmt.Sprintf("%s %s: %s", k, p.Name, show(f.store.Endpoints(k, p.Name))))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.store.nodes)) {
		n := f.store.nodes[name]
		lines = append(lines, fmt.Sprintf("node %s %s/%s", name, n.Zone, n.Region))
	}
	for _, name := range slices.Sorted(maps.Keys(f.store.namespaces)) {
		lines = append(lines, fmt.Sprintf("namespace %s %v", name, f.store.namespaces[name].Annotations))
	}
	return strings.Join(lines, "\n")
}

// waitFor polls until the Store renders as want.
func (f *kubeFixture) waitFor(want string) {
	f.t.Helper()
	poll.Check(f.t, func() string {
		if got := f.dump(); got != want {
			return fmt.Sprintf("store:\n%s\nwant:\n%s", got, want)
		}
		return ""
	})
}

func kubeService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Ports:      []corev1.ServicePort{{Name: "grpc", Port: 80}},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
		},
	}
}

// kubeSlice is an IPv4 slice of service with endpoints "ip@node".
func kubeSlice(name, service string, eps ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](8080)}},
	}
	for _, e := range eps {
		addr, node, _ := strings.Cut(e, "@")
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr.To(node)})
	}
	return es
}

// kubeNamespace is a Namespace with annotations "k=v".
func kubeNamespace(name string, annotations ...string) *corev1.Namespace {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range annotations {
		k, v, _ := strings.Cut(a, "=")
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[k] = v
	}
	return n
}

// kubeNode is a Node as the metadata API returns it.
func kubeNode(name string, labels ...string) *metav1.PartialObjectMetadata {
	n := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
	}
	for i := 0; i+1 < len(labels); i += 2 {
		n.Labels[labels[i]] = labels[i+1]
	}
	return n
}

func TestKubeSourceFollowsTheAPI(t *testing.T) {
	for _, tc := range []struct {
		name    string
		initial []runtime.Object
		then    func(f *kubeFixture)
		want    string
		errs    int
	}{
		{
			name:    "objects listed at start are in the store when Start returns",
			initial: []runtime.Object{kubeService("be1"), kubeSlice("be1-a", "be1", "10.0.0.1@n1"), kubeNode("n1", LabelZone, "z1", LabelRegion, "r1")},
			want:    "ns/be1 grpc: 10.0.0.1:8080@n1/z1/r1(true)\nnode n1 z1/r1",
		},
		{
			name:    "a Service and a slice added later are served",
			initial: []runtime.Object{kubeService("be1")},
			then: func(f *kubeFixture) {
				f.write(kubeService("be2"), false)
				f.write(kubeSlice("be2-a", "be2", "10.0.0.2@n1"), false)
			},
			want: "ns/be1 grpc: \nns/be2 grpc: 10.0.0.2:8080@n1//(true)",
		},
		{
			name:    "an updated slice replaces its endpoints",
			initial: []runtime.Object{kubeService("be1"), kubeSlice("be1-a", "be1", "10.0.0.1@n1")},
			then:    func(f *kubeFixture) { f.update(kubeSlice("be1-a", "be1", "10.0.0.3@n2", "10.0.0.4@n2")) },
			want:    "ns/be1 grpc: 10.0.0.3:8080@n2//(true) 10.0.0.4:8080@n2//(true)",
		},
		{
			name:    "an updated Service changes its ports",
			initial: []runtime.Object{kubeService("be1")},
			then: func(f *kubeFixture) {
				s := kubeService("be1")
				s.Spec.Ports[0].Name = "rpc"
				f.update(s)
			},
			want: "ns/be1 rpc: ",
		},
		{
			name:    "a deleted slice takes its endpoints with it",
			initial: []runtime.Object{kubeService("be1"), kubeSlice("be1-a", "be1", "10.0.0.1@n1"), kubeSlice("be1-b", "be1", "10.0.0.2@n1")},
			then:    func(f *kubeFixture) { f.delete(kubeSlice("be1-a", "be1")) },
			want:    "ns/be1 grpc: 10.0.0.2:8080@n1//(true)",
		},
		{
			name:    "a deleted Service is gone",
			initial: []runtime.Object{kubeService("be1"), kubeService("be2"), kubeSlice("be1-a", "be1", "10.0.0.1@n1")},
			then:    func(f *kubeFixture) { f.delete(kubeService("be1")) },
			want:    "ns/be2 grpc: ",
		},
		{
			name:    "a slice relabelled to another Service moves its endpoints there",
			initial: []runtime.Object{kubeService("be1"), kubeService("be2"), kubeSlice("s", "be1", "10.0.0.1@n1")},
			then:    func(f *kubeFixture) { f.update(kubeSlice("s", "be2", "10.0.0.1@n1")) },
			want:    "ns/be1 grpc: \nns/be2 grpc: 10.0.0.1:8080@n1//(true)",
		},
		{
			name:    "a slice that loses its Service label serves nothing and is reported",
			initial: []runtime.Object{kubeService("be1"), kubeSlice("s", "be1", "10.0.0.1@n1")},
			then: func(f *kubeFixture) {
				es := kubeSlice("s", "be1", "10.0.0.1@n1")
				es.Labels = nil
				f.update(es)
			},
			want: "ns/be1 grpc: ",
			errs: 1,
		},
		{
			name: "a Node's zone and region labels changing move its endpoints",
			initial: []runtime.Object{kubeService("be1"), kubeSlice("s", "be1", "10.0.0.1@n1"),
				kubeNode("n1", LabelZone, "z1", LabelRegion, "r1")},
			then: func(f *kubeFixture) { f.update(kubeNode("n1", LabelZone, "z2", LabelRegion, "r2")) },
			want: "ns/be1 grpc: 10.0.0.1:8080@n1/z2/r2(true)\nnode n1 z2/r2",
		},
		{
			name:    "Namespaces are kept with only their nodexds.io/ annotations",
			initial: []runtime.Object{kubeNamespace("a", "nodexds.io/mtls=strict", "other.io/x=y"), kubeNamespace("b", "other.io/x=y")},
			want:    "namespace a map[nodexds.io/mtls:strict]\nnamespace b map[]",
		},
		{
			name:    "a Namespace's annotations changing and a Namespace deleted",
			initial: []runtime.Object{kubeNamespace("a", "nodexds.io/mtls=strict"), kubeNamespace("b")},
			then: func(f *kubeFixture) {
				f.update(kubeNamespace("a", "nodexds.io/mtls=permissive", "nodexds.io/allow-from=b/*"))
				f.delete(kubeNamespace("b"))
			},
			want: "namespace a map[nodexds.io/allow-from:b/* nodexds.io/mtls:permissive]",
		},
		{
			name: "a deleted Node no longer places its endpoints",
			initial: []runtime.Object{kubeService("be1"), kubeSlice("s", "be1", "10.0.0.1@n1"),
				kubeNode("n1", LabelZone, "z1", LabelRegion, "r1")},
			then: func(f *kubeFixture) { f.delete(kubeNode("n1")) },
			want: "ns/be1 grpc: 10.0.0.1:8080@n1//(true)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startKube(t, tc.initial...)
			if tc.then != nil {
				tc.then(f)
			}
			f.waitFor(tc.want)
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.errs != tc.errs {
				t.Errorf("errors reported = %d, want %d", f.errs, tc.errs)
			}
		})
	}
}

// Start must not return before the sink has every object of the initial
// lists: an informer's store is synced before its handler has delivered them,
// and an agent answering then would tell clients that existing Services are
// gone. The slow sink makes the gap wide; the check itself does not depend on
// timing (Start returning early is the failure).
func TestKubeSourceStartReturnsOnlyAfterTheSinkHasEveryInitialObject(t *testing.T) {
	var objs []runtime.Object
	for i := range 20 {
		objs = append(objs, kubeService(fmt.Sprint("be", i)), kubeSlice(fmt.Sprint("be", i, "-a"), fmt.Sprint("be", i), "10.0.0.1@n1"))
	}
	objs = append(objs, kubeNode("n1", LabelZone, "z1"), kubeNamespace("ns", AnnotationPrefix+"mtls=strict"))
	f := startKubeWithSink(t, func(Event) { time.Sleep(20 * time.Millisecond) }, objs...)
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.events); n != len(objs) {
		t.Errorf("Start returned when %d of %d initial objects had reached the sink", n, len(objs))
	}
}

// A Node update that changes nothing nodexds reads (a heartbeat, another
// label) must not reach the agent: every agent would otherwise rebuild all it
// serves for every Node write in the cluster.
func TestKubeSourceIgnoresNodeUpdatesOutsideTopology(t *testing.T) {
	f := startKube(t, kubeNode("n1", LabelZone, "z1", LabelRegion, "r1"), kubeNode("n2", LabelZone, "z1"))
	f.waitFor("node n1 z1/r1\nnode n2 z1/")
	f.mu.Lock()
	before := len(f.events)
	f.mu.Unlock()

	hb := kubeNode("n1", LabelZone, "z1", LabelRegion, "r1", "node.kubernetes.io/instance-type", "big")
	hb.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	f.update(hb) // another label, an annotation
	f.update(hb) // a heartbeat: only the resourceVersion moves
	// Events of one informer arrive in order: once this one is in, the
	// updates above would have been delivered too.
	f.update(kubeNode("n2", LabelZone, "z2"))
	f.waitFor("node n1 z1/r1\nnode n2 z2/")

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.events[before:] {
		if e.Node != nil && e.Node.Name == "n1" {
			t.Errorf("event for n1 after an update outside its topology: %+v", *e.Node)
		}
	}
	var nodeChanges []string
	for _, c := range f.changes {
		if c.Node != "" {
			nodeChanges = append(nodeChanges, c.Node)
		}
	}
	if want := []string{"n1", "n2", "n2"}; !slices.Equal(nodeChanges, want) {
		t.Errorf("node changes = %v, want %v (the initial two, then n2's zone)", nodeChanges, want)
	}
}

// Namespaces change labels and status often (controllers, finalizers); only
// a change of their nodexds.io/ annotations may reach the agent, and only
// that is a Change.
func TestKubeSourceForwardsOnlyNamespaceAnnotationChanges(t *testing.T) {
	f := startKube(t, kubeNamespace("a", "nodexds.io/mtls=strict"), kubeNamespace("b"))
	f.waitFor("namespace a map[nodexds.io/mtls:strict]\nnamespace b map[]")
	f.mu.Lock()
	before := len(f.events)
	f.mu.Unlock()

	labelled := kubeNamespace("a", "nodexds.io/mtls=strict", "scheduler.alpha.kubernetes.io/node-selector=x")
	labelled.Labels = map[string]string{"team": "shop"}
	labelled.Status.Phase = corev1.NamespaceActive
	f.update(labelled) // labels, another annotation, status
	f.update(kubeNamespace("b", "other.io/x=y"))
	// Events of one reflector arrive in order: once this one is in, the
	// updates above would have been delivered too.
	f.update(kubeNamespace("b", "nodexds.io/mtls=permissive"))
	f.waitFor("namespace a map[nodexds.io/mtls:strict]\nnamespace b map[nodexds.io/mtls:permissive]")
	f.delete(kubeNamespace("a"))
	f.waitFor("namespace b map[nodexds.io/mtls:permissive]")

	f.mu.Lock()
	defer f.mu.Unlock()
	var got []string
	for _, e := range f.events[before:] {
		got = append(got, fmt.Sprintf("%s %v deleted=%t", e.Namespace.Name, e.Namespace.Annotations, e.Deleted))
	}
	want := []string{"b map[nodexds.io/mtls:permissive] deleted=false", "a map[nodexds.io/mtls:strict] deleted=true"}
	if !slices.Equal(got, want) {
		t.Errorf("events after the initial list:\n got  %q\n want %q", got, want)
	}
	var changed []string
	for _, c := range f.changes {
		if c.Namespace != "" {
			changed = append(changed, c.Namespace)
		}
	}
	if want := []string{"a", "b", "a"}; !slices.Equal(changed, want) {
		t.Errorf("namespace changes = %v, want %v (a added with annotations, b's first, a deleted)", changed, want)
	}
}

// The source's store takes what a Reflector writes: each write tells the sink
// what changed for nodexds, and only that; a re-list deletes what is no
// longer listed; the first list closes synced only once all of it reached the
// sink.
func TestSourceStoreTellsTheSinkWhatChanged(t *testing.T) {
	var got []string
	var s *sourceStore
	initial := true
	s = &sourceStore{compact: compactSlice, report: func(error) { got = append(got, "error") },
		objs: map[string]*cached{}, synced: make(chan struct{}),
		sink: func(e Event) {
			select {
			case <-s.synced:
				if initial {
					t.Errorf("synced closed before %s reached the sink", e.Slice.Name)
				}
			default:
			}
			op := "put"
			if e.Deleted {
				op = "delete"
			}
			got = append(got, op+" "+e.Slice.Name)
		}}
	a, b := kubeSlice("be1-a", "be1", "10.0.0.1@n1"), kubeSlice("be1-b", "be1", "10.0.0.2@n2")
	unlabelled := kubeSlice("be1-c", "be1", "10.0.0.3@n1")
	delete(unlabelled.Labels, discoveryv1.LabelServiceName)

	step := func(name string, do func(), want ...string) {
		t.Helper()
		got = nil
		do()
		if !slices.Equal(got, want) {
			t.Errorf("%s: sink got %q, want %q", name, got, want)
		}
	}
	step("the initial list", func() { s.Replace([]any{a, b}, "1") }, "put be1-a", "put be1-b")
	select {
	case <-s.synced:
	default:
		t.Fatal("synced still open after the initial list")
	}
	initial = false
	other := a.DeepCopy()
	other.ResourceVersion = "8"
	other.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "now"}
	step("an update outside what nodexds reads", func() { s.Update(other) })
	moved := kubeSlice("be1-a", "be1", "10.0.0.9@n1")
	step("an update of an endpoint", func() { s.Update(moved) }, "put be1-a")
	step("a slice that cannot be read", func() { s.Add(unlabelled) }, "error", "delete be1-c")
	step("a re-list without be1-b", func() { s.Replace([]any{moved, unlabelled}, "9") }, "delete be1-b")
	step("a delete", func() { s.Delete(cache.DeletedFinalStateUnknown{Key: "ns/be1-a", Obj: moved}) }, "delete be1-a")
	step("a delete of what is not there", func() { s.Delete(b) })
	step("an object of another kind", func() { s.Add(&corev1.Service{}) }, "error")
}
