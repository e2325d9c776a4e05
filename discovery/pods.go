package discovery

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nodexds/nodexds/discovery/kubeapi"

	"github.com/hashicorp/golang-lru/v2/expirable"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
)

// PodRef names a Pod.
type PodRef struct{ Namespace, Name string }

// PodIndex knows the IPs of the Pods on one node: the clients an agent may
// admit. It watches only that node's Pods (a field selector, as kubelet
// does) and keeps only their names and IPs. hostNetwork Pods carry the
// node's IP, so processes on the host network are found by it too.
type PodIndex struct {
	API  kubeapi.API
	Node string

	indexer cache.Indexer
}

const podsByIP = "ip"

// Start watches the node's Pods and returns once the first list is indexed.
func (p *PodIndex) Start(ctx context.Context) error {
	inf := cache.NewSharedIndexInformer(p.API.PodsOn(p.Node), &corev1.Pod{}, 0, cache.Indexers{})
	if err := inf.SetTransform(stripPod); err != nil {
		return fmt.Errorf("pod index: %w", err)
	}
	if err := inf.AddIndexers(cache.Indexers{podsByIP: podIPs}); err != nil {
		return fmt.Errorf("pod index: %w", err)
	}
	p.indexer = inf.GetIndexer()
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("pod index: pods did not sync: %w", context.Cause(ctx))
	}
	return nil
}

// Lookup returns the Pods on the node that have ip, sorted.
func (p *PodIndex) Lookup(ip netip.Addr) []PodRef {
	if p.indexer == nil || !ip.IsValid() {
		return nil
	}
	objs, err := p.indexer.ByIndex(podsByIP, ip.Unmap().String())
	if err != nil {
		return nil
	}
	out := make([]PodRef, 0, len(objs))
	for _, o := range objs {
		if pod, ok := o.(*corev1.Pod); ok {
			out = append(out, PodRef{pod.Namespace, pod.Name})
		}
	}
	slices.SortFunc(out, func(a, b PodRef) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

// podIPs indexes a running Pod by its IPs. A finished Pod's IP may already
// belong to a new Pod, so it indexes none.
func podIPs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, nil
	}
	var out []string
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out, nil
}

// stripPod keeps only what admission reads: namespace, name, phase and IPs.
func stripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Status:     corev1.PodStatus{Phase: pod.Status.Phase, PodIPs: pod.Status.PodIPs},
	}, nil
}

// PodsOnNode looks up, through the API server, the Pods of another node that
// have ip: how an agent serving as another node's xDS fallback verifies that
// a client is a pod of the node it claims. Answers are cached for a minute
// (positive and negative), so a client reconnecting does not cost a request
// each time, and the cache is bounded.
type PodsOnNode struct {
	API   kubeapi.API
	cache *expirable.LRU[podOnNodeKey, []PodRef]
	once  sync.Once
}

type podOnNodeKey struct {
	ip   netip.Addr
	node string
}

// Lookup returns the running Pods on node with ip.
func (p *PodsOnNode) Lookup(ctx context.Context, ip netip.Addr, node string) ([]PodRef, error) {
	p.once.Do(func() { p.cache = expirable.NewLRU[podOnNodeKey, []PodRef](4096, nil, time.Minute) })
	k := podOnNodeKey{ip.Unmap(), node}
	if refs, ok := p.cache.Get(k); ok {
		return refs, nil
	}
	list, err := p.API.ListPods(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("spec.nodeName", node),
			fields.OneTermEqualSelector("status.podIP", k.ip.String()),
		).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("looking up pods of node %s with IP %s: %w", node, k.ip, err)
	}
	var refs []PodRef
	for i := range list.Items {
		pod := &list.Items[i]
		if ips, _ := podIPs(pod); slices.Contains(ips, k.ip.String()) {
			refs = append(refs, PodRef{pod.Namespace, pod.Name})
		}
	}
	p.cache.Add(k, refs)
	return refs, nil
}
