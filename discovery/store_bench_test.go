package discovery

import (
	"fmt"
	"testing"

	"k8s.io/utils/ptr"
)

// BenchmarkStoreApplySlice is the Store's cost per EndpointSlice update:
// 1000 Services of one slice each, endpoints spread over 100 nodes as
// apiSlice spreads them, each update flipping one endpoint's readiness so
// that every Apply is a change. With a local node (SetLocalNode), 1% of
// the endpoints are on it, as on one node of the scale run's 101, and the
// endpoint flipped is a local one in one slice of ten (endpoints=10) or in
// every slice (endpoints=100).
//
// In the agent, the slice applied has just been decoded by the source: it
// is in the CPU's caches. So the loop reads its endpoints first, in both
// variants; cold=true leaves that out, for the cost of a slice read from
// memory (the index then reads every endpoint of it).
func BenchmarkStoreApplySlice(b *testing.B) {
	const local = "node-000.cluster.example"
	for _, cold := range []bool{false, true} {
		for _, eps := range []int{10, 100} {
			for _, node := range []string{"", local} {
				b.Run(fmt.Sprintf("cold=%t/endpoints=%d/local=%t", cold, eps, node != ""), func(b *testing.B) {
					benchmarkStoreApplySlice(b, eps, node, cold)
				})
			}
		}
	}
}

func benchmarkStoreApplySlice(b *testing.B, eps int, node string, cold bool) {
	const n = 1000
	st := NewStore()
	st.SetLocalNode(node)
	updates := make([][2]*Slice, n)
	for i := range n {
		st.Apply(Event{Service: FromService(apiService(i))})
		a, err := FromEndpointSlice(apiSlice(i, eps))
		if err != nil {
			b.Fatal(err)
		}
		es := apiSlice(i, eps)
		es.Endpoints[0].Conditions.Ready = ptr.To(false)
		flipped, err := FromEndpointSlice(es)
		if err != nil {
			b.Fatal(err)
		}
		updates[i] = [2]*Slice{a, flipped}
		st.Apply(Event{Slice: a})
	}
	i, touched := 0, 0
	for b.Loop() {
		sl := updates[i%n][(i/n+1)%2]
		if !cold {
			for j := range sl.Endpoints {
				touched += len(sl.Endpoints[j].Node)
			}
		}
		st.Apply(Event{Slice: sl})
		i++
	}
	if touched < 0 {
		b.Log(touched)
	}
}
