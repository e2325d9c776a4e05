package main

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/nodexds/nodexds/discovery"
)

// The synthetic cluster is agent/bench_test.go's benchCluster: services
// Services of perService endpoints each, spread over 100 nodes in 4 zones of
// 2 regions; the agent runs on node n0.
const nodes = 100

func serviceKey(s int) discovery.ServiceKey {
	return discovery.ServiceKey{Namespace: fmt.Sprintf("ns%d", s%50), Name: fmt.Sprintf("svc%d", s)}
}

// endpointAddr is endpoint e of Service s: unique up to 2^24 endpoints.
func endpointAddr(s, perService, e int) netip.Addr {
	i := s*perService + e
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// endpointNode is the node of endpoint e of Service s; gen moves endpoint 0
// so that successive generations of a slice differ (churn).
func endpointNode(s, perService, e, gen int) string {
	n := (s*perService + e + s) % nodes
	if e == 0 {
		n = (n + gen) % nodes
	}
	return fmt.Sprintf("n%d", n)
}

// eventSource is a discovery.Source that hands the agent model values
// directly, generated as they are sent (the source holds nothing): the
// agent's own cost without any informer.
type eventSource struct{ services, perService int }

func (s eventSource) Start(ctx context.Context, sink func(discovery.Event)) error {
	for n := range nodes {
		sink(discovery.Event{Node: &discovery.Node{
			Name: fmt.Sprintf("n%d", n), Zone: fmt.Sprintf("z%d", n%4), Region: fmt.Sprintf("r%d", n%2),
		}})
	}
	for i := range s.services {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		sink(discovery.Event{Service: &discovery.Service{Key: serviceKey(i), IPFamily: "IPv4",
			Ports: []discovery.Port{{Name: "grpc", Port: 8080}}}})
		sink(discovery.Event{Slice: s.slice(i, 0)})
	}
	return nil
}

func (s eventSource) slice(i, gen int) *discovery.Slice {
	key := serviceKey(i)
	sl := &discovery.Slice{Service: key, Name: key.Name + "-1", AddressType: "IPv4",
		Ports:     []discovery.Port{{Name: "grpc", Port: 50051}},
		Endpoints: make([]discovery.SliceEndpoint, 0, s.perService)}
	for e := range s.perService {
		sl.Endpoints = append(sl.Endpoints, discovery.SliceEndpoint{
			Addr: endpointAddr(i, s.perService, e), Node: endpointNode(i, s.perService, e, gen),
			Ready: true, Serving: true,
		})
	}
	return sl
}

// The kube path's objects are what the API server returns: metadata with
// UIDs, labels, managed fields and owner references, as a real cluster's
// informers receive them (compacted by the kube source's transforms).

func apiNode(n int) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d", n), ResourceVersion: "1", Labels: map[string]string{
			corev1.LabelTopologyZone:   fmt.Sprintf("z%d", n%4),
			corev1.LabelTopologyRegion: fmt.Sprintf("r%d", n%2),
			corev1.LabelHostname:       fmt.Sprintf("n%d", n),
			"kubernetes.io/os":         "linux",
		}},
	}
}

func apiService(i int) *corev1.Service {
	k := serviceKey(i)
	uid := types.UID(fmt.Sprintf("5e7c1a0b-0000-4000-8000-%012d", i))
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: k.Namespace, Name: k.Name, UID: uid, ResourceVersion: fmt.Sprint(1000 + i),
			CreationTimestamp: metav1.Now(),
			Labels:            map[string]string{"app": k.Name, "app.kubernetes.io/part-of": "bench"},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1",
				Time: ptr.To(metav1.Now()), FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:app":{},"f:app.kubernetes.io/part-of":{}}},"f:spec":{"f:ports":{"k:{\"port\":8080,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{},"f:targetPort":{}}},"f:selector":{}}}`)},
			}},
		},
		Spec: corev1.ServiceSpec{
			Ports:                 []corev1.ServicePort{{Name: "grpc", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(50051)}},
			Selector:              map[string]string{"app": k.Name},
			ClusterIP:             fmt.Sprintf("10.96.%d.%d", i>>8&255, i&255),
			ClusterIPs:            []string{fmt.Sprintf("10.96.%d.%d", i>>8&255, i&255)},
			Type:                  corev1.ServiceTypeClusterIP,
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicySingleStack),
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
		},
	}
}

func apiSlice(i, perService int) *discoveryv1.EndpointSlice {
	k := serviceKey(i)
	uid := types.UID(fmt.Sprintf("5e7c1a0b-0000-4000-8000-%012d", i))
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: k.Namespace, Name: k.Name + "-x7k2p", GenerateName: k.Name + "-",
			UID: types.UID(fmt.Sprintf("e5a1c0b2-0000-4000-8000-%012d", i)), ResourceVersion: fmt.Sprint(2000 + i),
			CreationTimestamp: metav1.Now(), Generation: 3,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: k.Name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io", "app": k.Name,
			},
			Annotations: map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-01T10:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: k.Name, UID: uid, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "discovery.k8s.io/v1",
				Time: ptr.To(metav1.Now()), FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:addressType":{},"f:endpoints":{},"f:metadata":{"f:annotations":{".":{},"f:endpoints.kubernetes.io/last-change-trigger-time":{}},"f:generateName":{},"f:labels":{".":{},"f:app":{},"f:endpointslice.kubernetes.io/managed-by":{},"f:kubernetes.io/service-name":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"x\"}":{}}},"f:ports":{}}`)},
			}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](50051), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for e := range perService {
		node := endpointNode(i, perService, e, 0)
		var n int
		fmt.Sscanf(node, "n%d", &n)
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{endpointAddr(i, perService, e).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			TargetRef: &corev1.ObjectReference{
				Kind: "Pod", Namespace: k.Namespace, Name: fmt.Sprintf("%s-6d8f9c7b5-%05d", k.Name, e),
				UID: types.UID(fmt.Sprintf("0d0e0f00-0000-4000-8000-%012d", i*perService+e)),
			},
			NodeName: ptr.To(node),
			Zone:     ptr.To(fmt.Sprintf("z%d", n%4)),
		})
	}
	return es
}
