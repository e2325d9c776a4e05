package discovery

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestFromEndpointSliceDefaultsConditionsAsTheAPIDocuments(t *testing.T) {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "be1-x", Labels: map[string]string{discoveryv1.LabelServiceName: "be1"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("grpc"), Port: ptr.To[int32](8080)},
			{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)},
		},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, NodeName: ptr.To("n1"), Zone: ptr.To("z1"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "be1-abc"},
				Hints:     &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z2"}}, ForNodes: []discoveryv1.ForNode{{Name: "n2"}}}},
			{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}},
			{Addresses: nil}, // no address: skipped
		},
	}
	got, err := FromEndpointSlice(es)
	if err != nil {
		t.Fatal(err)
	}
	want := &Slice{
		Service: ServiceKey{"ns", "be1"}, Name: "be1-x", AddressType: "IPv4",
		Ports: []Port{{Name: "grpc", Port: 8080}},
		Endpoints: []SliceEndpoint{
			{Addr: mustAddr("10.0.0.1"), Pod: "be1-abc", Node: "n1", Zone: "z1", Ready: true, Serving: true,
				Hints: &Hints{Zones: []string{"z2"}, Nodes: []string{"n2"}}},
			{Addr: mustAddr("10.0.0.2"), Ready: false, Serving: true, Terminating: true},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromEndpointSlice:\n got  %+v\n want %+v", got, want)
	}
}

func TestFromEndpointSliceRejectsWhatItCannotUse(t *testing.T) {
	if _, err := FromEndpointSlice(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "orphan"}}); err == nil {
		t.Error("a slice naming no service should be an error")
	}
	bad := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "x", Labels: map[string]string{discoveryv1.LabelServiceName: "be1"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"not-an-ip"}}},
	}
	if _, err := FromEndpointSlice(bad); err == nil {
		t.Error("a non-IP address should be an error")
	}
}

func TestFromServiceKeepsOnlyWhatNodexdsReads(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "be1", UID: "u1", Annotations: map[string]string{
			"nodexds.io/topology": "node,*", "kubectl.kubernetes.io/last-applied-configuration": "{...}",
		}},
		Spec: corev1.ServiceSpec{
			Ports:                 []corev1.ServicePort{{Name: "grpc", Port: 80}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
			InternalTrafficPolicy: &local,
			TrafficDistribution:   ptr.To("PreferSameZone"),
			IPFamilies:            []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol},
		},
	}
	want := &Service{
		Key: ServiceKey{"ns", "be1"}, UID: "u1", Ports: []Port{{Name: "grpc", Port: 80}},
		InternalTrafficLocal: true, TrafficDistribution: "PreferSameZone", IPFamily: "IPv6",
		Annotations: map[string]string{"nodexds.io/topology": "node,*"},
	}
	if got := FromService(s); !reflect.DeepEqual(got, want) {
		t.Errorf("FromService:\n got  %+v\n want %+v", got, want)
	}
}
