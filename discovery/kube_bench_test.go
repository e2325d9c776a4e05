package discovery

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// apiService is a Service as the API server returns it (managed fields,
// cluster IPs, selector), which is what an informer is handed.
func apiService(i int) *corev1.Service {
	name := fmt.Sprintf("svc%d", i)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("ns%d", i%50), Name: name, UID: types.UID(fmt.Sprintf("5e7c1a0b-0000-4000-8000-%012d", i)),
			ResourceVersion: fmt.Sprint(1000 + i), CreationTimestamp: metav1.Now(),
			Labels:      map[string]string{"app": name, "app.kubernetes.io/part-of": "bench"},
			Annotations: map[string]string{AnnotationPrefix + "topology": "node,zone,*"},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1",
				Time: ptr.To(metav1.Now()), FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:nodexds.io/topology":{}},"f:labels":{"f:app":{},"f:app.kubernetes.io/part-of":{}}},"f:spec":{"f:ports":{"k:{\"port\":8080,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{},"f:targetPort":{}}},"f:selector":{}}}`)},
			}},
		},
		Spec: corev1.ServiceSpec{
			Ports:                 []corev1.ServicePort{{Name: "grpc", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(50051)}},
			Selector:              map[string]string{"app": name},
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

// apiSlice is the EndpointSlice the controller writes for apiService(i),
// with n endpoints spread over 100 nodes in 4 zones.
func apiSlice(i, n int) *discoveryv1.EndpointSlice {
	svc := fmt.Sprintf("svc%d", i)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("ns%d", i%50), Name: svc + "-x7k2p", GenerateName: svc + "-",
			UID: types.UID(fmt.Sprintf("e5a1c0b2-0000-4000-8000-%012d", i)), ResourceVersion: fmt.Sprint(2000 + i),
			CreationTimestamp: metav1.Now(), Generation: 3,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io",
				"app": svc,
			},
			Annotations: map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-01T10:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc, UID: types.UID(fmt.Sprintf("5e7c1a0b-0000-4000-8000-%012d", i)),
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
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
	for e := range n {
		k := i*n + e
		node := k % 100
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", k>>16&255, k>>8&255, k&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			TargetRef: &corev1.ObjectReference{
				Kind: "Pod", Namespace: es.Namespace, Name: fmt.Sprintf("%s-6d8f9c7b5-%05d", svc, e),
				UID: types.UID(fmt.Sprintf("0d0e0f00-0000-4000-8000-%012d", k)),
			},
			NodeName: ptr.To(fmt.Sprintf("node-%03d.cluster.example", node)),
			Zone:     ptr.To(fmt.Sprintf("zone-%d", node%4)),
		})
	}
	return es
}

// BenchmarkKubeModel feeds N Services with 10 endpoints each, as the API
// server sends them, through what the kube source does with them (the
// source's stores, which a reflector writes, and the Store) and reports the
// heap that stays live per Service: the source's compact values and the
// model together. With local=true the Store indexes the endpoints of one
// node of the 100 (SetLocalNode), as the agent does.
func BenchmarkKubeModel(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, local := range []bool{false, true} {
			b.Run(fmt.Sprintf("services=%d/local=%t", n, local), func(b *testing.B) {
				benchmarkKubeModel(b, n, local)
			})
		}
	}
}

func benchmarkKubeModel(b *testing.B, n int, local bool) {
	var perSvc float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		st := NewStore()
		if local {
			st.SetLocalNode("node-000.cluster.example")
		}
		svcs, slices := benchSourceStore(b, compactService, st), benchSourceStore(b, compactSlice, st)
		for i := range n {
			if err := svcs.Add(apiService(i)); err != nil {
				b.Fatal(err)
			}
			if err := slices.Add(apiSlice(i, 10)); err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perSvc = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
		runtime.KeepAlive(svcs)
		runtime.KeepAlive(slices)
		runtime.KeepAlive(st)
		b.ReportMetric(float64(elapsed.Nanoseconds())/float64(n), "ns/svc")
	}
	b.ReportMetric(perSvc, "heapB/svc")
}

// benchSourceStore is the kube source's store of one kind, as a reflector
// writes it, handing its Events to st.
func benchSourceStore(b *testing.B, compact compactFunc, st *Store) *sourceStore {
	return &sourceStore{
		compact: compact, sink: func(e Event) { st.Apply(e) }, report: func(err error) { b.Fatal(err) },
		objs: map[string]*cached{}, synced: make(chan struct{}),
	}
}
