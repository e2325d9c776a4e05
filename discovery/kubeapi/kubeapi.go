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
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// API is what nodexds reads from and writes to the Kubernetes API: a
// ListerWatcher per kind it watches, a Pod list for admission, and an Event
// sink. New implements it over REST; package discovery/clientset over any
// client-go clientset (tests use the fake ones).
type API struct {
	Services       cache.ListerWatcher // *corev1.Service
	EndpointSlices cache.ListerWatcher // *discoveryv1.EndpointSlice
	Nodes          cache.ListerWatcher // *metav1.PartialObjectMetadata: labels are all nodexds reads
	// Namespaces: their nodexds.io/ annotations set defaults for their Services.
	Namespaces cache.ListerWatcher // *corev1.Namespace
	// PodsOn lists and watches the Pods of one node.
	PodsOn   func(node string) cache.ListerWatcher
	ListPods func(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Events   record.EventSink
	// Gateway API, nil when not read. CRDs lists CustomResourceDefinitions
	// as metadata: a route kind is watched while its CRD exists.
	CRDs            cache.ListerWatcher // *metav1.PartialObjectMetadata
	GRPCRoutes      cache.ListerWatcher // *gwv1.GRPCRoute
	HTTPRoutes      cache.ListerWatcher // *gwv1.HTTPRoute
	ReferenceGrants cache.ListerWatcher // *gwv1.ReferenceGrant
}

// Scheme knows the API types nodexds uses and no others: client-go's
// Clientset registers every API group, which made the agent's binary a third
// larger and most of those pages resident (docs/BENCHMARKS.md).
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, gwv1.Install} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

var (
	nodesResource = corev1.SchemeGroupVersion.WithResource("nodes")
	crdsResource  = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// New is API over REST: protobuf for Services, EndpointSlices, Namespaces
// and Pods, and the metadata form (JSON, the only one it has) for Nodes.
func New(cfg *rest.Config) (API, error) {
	codecs := serializer.NewCodecFactory(Scheme)
	params := runtime.NewParameterCodec(Scheme)
	client := func(gv schema.GroupVersion, apiPath string, contentType string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.ContentType, c.AcceptContentTypes = contentType, contentType
		if contentType == protobuf {
			c.AcceptContentTypes = protobuf + ",application/json"
		}
		c.NegotiatedSerializer = codecs.WithoutConversion()
		return rest.RESTClientFor(c)
	}
	core, err := client(corev1.SchemeGroupVersion, "/api", protobuf)
	if err != nil {
		return API{}, fmt.Errorf("kubernetes client: %w", err)
	}
	disc, err := client(discoveryv1.SchemeGroupVersion, "/apis", protobuf)
	if err != nil {
		return API{}, fmt.Errorf("kubernetes client: %w", err)
	}
	gw, err := client(gwv1.SchemeGroupVersion, "/apis", "application/json") // custom resources have no protobuf form
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
		Namespaces:     lw(core, "namespaces", func() runtime.Object { return &corev1.NamespaceList{} }, all),
		PodsOn: func(node string) cache.ListerWatcher {
			return lw(core, "pods", func() runtime.Object { return &corev1.PodList{} }, func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
			})
		},
		ListPods: func(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
			out := &corev1.PodList{}
			return out, core.Get().Resource("pods").VersionedParams(&o, params).Do(ctx).Into(out)
		},
		Events:          eventSink{core},
		CRDs:            metadataListWatch(meta.Resource(crdsResource)),
		GRPCRoutes:      lw(gw, "grpcroutes", func() runtime.Object { return &gwv1.GRPCRouteList{} }, all),
		HTTPRoutes:      lw(gw, "httproutes", func() runtime.Object { return &gwv1.HTTPRouteList{} }, all),
		ReferenceGrants: lw(gw, "referencegrants", func() runtime.Object { return &gwv1.ReferenceGrantList{} }, all),
	}, nil
}

const protobuf = "application/vnd.kubernetes.protobuf"

// metadataListWatch lists and watches one resource as metadata only.
func metadataListWatch(r metadata.Getter) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return r.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return r.Watch(ctx, o)
		},
	}
}

// NodeMetadata lists and watches Nodes as metadata only.
func NodeMetadata(meta metadata.Interface) *cache.ListWatch {
	return metadataListWatch(meta.Resource(nodesResource))
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

// Dynamic is a dynamic client (JSON, no typed clients linked) for what
// nodexds writes as a whole object: the route status writer's
// coordination.k8s.io Lease, and the status subresource of GRPCRoutes and
// HTTPRoutes (package agent/routestatus).
//
// Its client-side limit (unless cfg sets one) is 25 requests a second after
// a burst of 50: above a status write (a read and an update) at the writer's
// own bound, 10 a second, plus the Lease's renewals.
func Dynamic(cfg *rest.Config) (dynamic.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg.QPS, cfg.Burst = 25, 50
	}
	c, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return c, nil
}
