package xds

import (
	"fmt"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
)

// BenchmarkEndpointPush is one load assignment changing under a stream that
// subscribes to n of them: publish → the client has the response. Its cost
// must not grow with n (the stream looks up only what changed).
func BenchmarkEndpointPush(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("subscribed=%d", n), func(b *testing.B) {
			s := startServerWith(b, Options{})
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("svc%d.ns.svc.cluster.local:8080", i)
				s.world.data[names[i]] = cla(names[i], 0)
			}
			c := dial(b, s)
			c.typ = EndpointType
			c.request(names...)
			// Route and Endpoint responses carry what is resolved so far:
			// gather them until every name has been answered.
			for got := 0; got < n; {
				r := <-c.responses
				got += len(r.Resources)
				c.last = r
				c.request(names...) // ACK
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				s.world.cache.Set(EndpointType, names[7], cla(names[7], i+1), Scope{}, time.Now())
				s.world.cache.Publish()
				if r := <-c.responses; len(r.Resources) != 1 {
					b.Fatalf("push holds %d, want 1", len(r.Resources))
				}
			}
		})
	}
}

func cla(name string, gen int) proto.Message {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LoadBalancingWeight: nil, Priority: uint32(gen % 3)}}}
}
