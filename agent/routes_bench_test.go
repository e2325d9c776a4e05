package agent

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// benchRoute is a GRPCRoute on svc<i> splitting it with svc<i+1>, with a
// method match and a header match, as a canary route would be.
func benchRoute(i int, weight int32) *discovery.Route {
	ns := gwv1.Namespace(fmt.Sprintf("ns%d", (i+1)%50))
	return &discovery.Route{
		Key:        discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("route%d", i)},
		Generation: int64(weight),
		GRPC: &gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Group: ptr.To[gwv1.Group](""), Kind: ptr.To[gwv1.Kind]("Service"), Name: gwv1.ObjectName(fmt.Sprintf("svc%d", i)),
			}}},
			Rules: []gwv1.GRPCRouteRule{
				{
					Matches: []gwv1.GRPCRouteMatch{{
						Method:  &gwv1.GRPCMethodMatch{Service: ptr.To("pkg.Svc"), Method: ptr.To("Get")},
						Headers: []gwv1.GRPCHeaderMatch{{Name: "x-canary", Value: "yes"}},
					}},
					BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
						Name: gwv1.ObjectName(fmt.Sprintf("svc%d", i+1)), Namespace: &ns, Port: ptr.To[gwv1.PortNumber](8080)}}}},
				},
				{BackendRefs: []gwv1.GRPCBackendRef{
					{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(fmt.Sprintf("svc%d", i)), Port: ptr.To[gwv1.PortNumber](8080)}, Weight: ptr.To(100 - weight)}},
					{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(fmt.Sprintf("svc%d", i+1)), Namespace: &ns, Port: ptr.To[gwv1.PortNumber](8080)}, Weight: ptr.To(weight)}},
				}},
			},
		},
	}
}

// BenchmarkRouteChange is the cost of one route's weight change, from event
// to the new route configuration stored in the cache, with 1,000 routes
// (each parent's backends in another namespace, granted) and every Service
// subscribed. Only the parent's listener and route configuration are
// rebuilt. It also reports what a route costs the agent's heap.
func BenchmarkRouteChange(b *testing.B) {
	const routes = 1000
	for _, services := range []int{1000 + 1, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			a, cache, m := benchAgent(b)
			for _, e := range benchCluster(services, 10) {
				a.apply(e, time.Now())
			}
			for ns := range 50 {
				a.apply(discovery.Event{Grant: &discovery.Grant{Namespace: fmt.Sprintf("ns%d", ns), Name: "all", Spec: gwv1.ReferenceGrantSpec{
					From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "GRPCRoute", Namespace: gwv1.Namespace(fmt.Sprintf("ns%d", (ns+49)%50))}},
					To:   []gwv1.ReferenceGrantTo{{Kind: "Service"}},
				}}}, time.Now())
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range routes {
				a.apply(discovery.Event{Route: benchRoute(i, 10)}, time.Now())
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			a.flush(time.Now(), true)
			subscribeAll(b, a, cache, services)

			builds := func(typ string) float64 { return testutil.ToFloat64(m.Builds.WithLabelValues(typ)) }
			eds, cds, rebuilds := builds(xds.EndpointType), builds(xds.ClusterType), testutil.ToFloat64(m.Rebuilds)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				a.apply(discovery.Event{Route: benchRoute(7, int32(11+i%80))}, time.Now())
				a.flush(time.Now(), true)
			}
			b.StopTimer()
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/routes, "heap-B/route")
			if got := testutil.ToFloat64(m.Rebuilds) - rebuilds; got != float64(b.N) {
				b.Fatalf("%v rebuilds for %d route changes: other Services were rebuilt", got, b.N)
			}
			if builds(xds.EndpointType) != eds || builds(xds.ClusterType) != cds {
				b.Fatalf("a route change rebuilt clusters or load assignments")
			}
		})
	}
}
