// Package clientset builds a kubeapi.API from client-go clientsets, such as
// the fake ones tests and benchmarks use. The agent itself uses
// kubeapi.New, which does not link every API group in.
package clientset

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/nodexds/nodexds/discovery/kubeapi"
)

// API reads through client and meta. Fake clientsets cannot stream
// watch-lists; the ListerWatchers say so to client-go, as its informers do.
func API(client kubernetes.Interface, meta metadata.Interface) kubeapi.API {
	return kubeapi.API{
		Services:       listWatch(client, client.CoreV1().Services(""), ""),
		EndpointSlices: listWatch(client, client.DiscoveryV1().EndpointSlices(""), ""),
		Nodes:          cache.ToListWatcherWithWatchListSemantics(kubeapi.NodeMetadata(meta), meta),
		Namespaces:     listWatch(client, client.CoreV1().Namespaces(), ""),
		PodsOn: func(node string) cache.ListerWatcher {
			return listWatch(client, client.CoreV1().Pods(""), fields.OneTermEqualSelector("spec.nodeName", node).String())
		},
		ListPods: func(ctx context.Context, o metav1.ListOptions) (*corev1.PodList, error) {
			return client.CoreV1().Pods("").List(ctx, o)
		},
		Events: &typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")},
	}
}

// lister is the List and Watch of one typed client-go resource.
type lister[L runtime.Object] interface {
	List(context.Context, metav1.ListOptions) (L, error)
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
}

// listWatch lists and watches through r, restricted to fieldSelector unless
// it is "".
func listWatch[L runtime.Object](client kubernetes.Interface, r lister[L], fieldSelector string) cache.ListerWatcher {
	selected := func(o metav1.ListOptions) metav1.ListOptions {
		if fieldSelector != "" {
			o.FieldSelector = fieldSelector
		}
		return o
	}
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return r.List(ctx, selected(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return r.Watch(ctx, selected(o))
		},
	}, client)
}
