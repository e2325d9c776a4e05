package main

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// BenchmarkDecodeInitialLists is what a cold start spends before the kube
// source sees an object, which the fake clientset skips: decoding the
// initial lists of 11k Services and 11k EndpointSlices (10 endpoints each),
// as JSON (client-go's default) and as protobuf.
func BenchmarkDecodeInitialLists(b *testing.B) {
	const n = 11000
	slices := &discoveryv1.EndpointSliceList{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSliceList"}}
	services := &corev1.ServiceList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceList"}}
	for i := range n {
		slices.Items = append(slices.Items, *apiSlice(i, 10))
		services.Items = append(services.Items, *apiService(i))
	}
	pb := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	for _, enc := range []struct {
		name   string
		encode func(kruntime.Object) ([]byte, error)
	}{
		{"json", func(o kruntime.Object) ([]byte, error) { return json.Marshal(o) }},
		{"protobuf", func(o kruntime.Object) ([]byte, error) { return kruntime.Encode(pb, o) }},
	} {
		var lists [][]byte
		size := 0
		for _, o := range []kruntime.Object{services, slices} {
			data, err := enc.encode(o)
			if err != nil {
				b.Fatal(err)
			}
			lists, size = append(lists, data), size+len(data)
		}
		b.Run(enc.name, func(b *testing.B) {
			dec := scheme.Codecs.UniversalDeserializer()
			b.ReportAllocs()
			for b.Loop() {
				for _, data := range lists {
					if _, _, err := dec.Decode(data, nil, nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(size)/(1<<20), "MiB/lists")
		})
	}
}
