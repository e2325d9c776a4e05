// Package kubeapi is nodexds's edge to the Kubernetes API: what it lists,
// watches and writes, over REST with only the API groups it reads.
package kubeapi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// API is what nodexds reads from and writes to the Kubernetes API: a
// ListerWatcher per kind it watches, a Pod list for admission, and an Event
// sink. New implements it over REST; package discovery/clientset over any
// client-go clientset (tests use the fake ones).
type API struct {
	Services       cache.ListerWatcher // *corev1.Service
	EndpointSlices cache.ListerWatcher // *discoveryv1.EndpointSlice
	Nodes          cache.ListerWatcher // *metav1.PartialObjectMetadata: labels are all nodexds reads
	// PodsOn lists and watches the Pods of one node.
	PodsOn   func(node string) cache.ListerWatcher
	ListPods func(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Events   record.EventSink
}

// Scheme knows the API types nodexds uses and no others: client-go's
// Clientset registers every API group, which made the agent's binary a third
// larger and most of those pages resident (docs/BENCHMARKS.md).
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

var nodesResource = corev1.SchemeGroupVersion.WithResource("nodes")

// New is API over REST: protobuf for Services, EndpointSlices and Pods,
// and the metadata form (JSON, the only one it has) for Nodes.
func New(cfg *rest.Config) (API, error) {
	codecs := serializer.NewCodecFactory(Scheme)
	params := runtime.NewParameterCodec(Scheme)
	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.ContentType = "application/vnd.kubernetes.protobuf"
		c.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
		c.NegotiatedSerializer = codecs.WithoutConversion()
		return rest.RESTClientFor(c)
	}
	core, err := client(corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return API{}, fmt.Errorf("kubernetes client: %w", err)
	}
	disc, err := client(discoveryv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return API{}, fmt.Errorf("kubernetes client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return API{}, fmt.Errorf("kubernetes metadata client: %w", err)
	}
	lw := func(c *rest.RESTClient, resource string, newList func() runtime.Object, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
		return &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				tweak(&o)
				out := newList()
				return out, c.Get().Resource(resource).VersionedParams(&o, params).Do(ctx).Into(out)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				tweak(&o)
				o.Watch = true
				return c.Get().Resource(resource).VersionedParams(&o, params).Watch(ctx)
			},
		}
	}
	all := func(*metav1.ListOptions) {}
	return API{
		Services:       lw(core, "services", func() runtime.Object { return &corev1.ServiceList{} }, all),
		EndpointSlices: lw(disc, "endpointslices", func() runtime.Object { return &discoveryv1.EndpointSliceList{} }, all),
		Nodes:          NodeMetadata(meta),
		PodsOn: func(node string) cache.ListerWatcher {
			return lw(core, "pods", func() runtime.Object { return &corev1.PodList{} }, func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
			})
		},
		ListPods: func(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
			out := &corev1.PodList{}
			return out, core.Get().Resource("pods").VersionedParams(&o, params).Do(ctx).Into(out)
		},
		Events: eventSink{core},
	}, nil
}

// NodeMetadata lists and watches Nodes as metadata only.
func NodeMetadata(meta metadata.Interface) *cache.ListWatch {
	nodes := meta.Resource(nodesResource)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return nodes.Watch(ctx, o)
		},
	}
}

// eventSink writes Events, as client-go's typed EventSinkImpl does.
type eventSink struct{ c *rest.RESTClient }

func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	return out, s.c.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(context.Background()).Into(out)
}

func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	return out, s.c.Put().Namespace(e.Namespace).Resource("events").Name(e.Name).Body(e).Do(context.Background()).Into(out)
}

func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	return out, s.c.Patch(types.StrategicMergePatchType).Namespace(e.Namespace).Resource("events").Name(e.Name).
		Body(data).Do(context.Background()).Into(out)
}
