package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// benchCluster is services × endpointsPer endpoints spread over 100 nodes in
// 4 zones of 2 regions; the agent runs on node n0.
func benchCluster(services, endpointsPer int) []discovery.Event {
	var evs []discovery.Event
	for n := range 100 {
		evs = append(evs, discovery.Event{Node: &discovery.Node{
			Name: fmt.Sprintf("n%d", n), Zone: fmt.Sprintf("z%d", n%4), Region: fmt.Sprintf("r%d", n%2),
		}})
	}
	for s := range services {
		key := discovery.ServiceKey{Namespace: fmt.Sprintf("ns%d", s%50), Name: fmt.Sprintf("svc%d", s)}
		evs = append(evs, discovery.Event{Service: &discovery.Service{Key: key, IPFamily: "IPv4", Ports: []discovery.Port{{Name: "grpc", Port: 8080}}}})
		evs = append(evs, discovery.Event{Slice: benchSlice(key, s, endpointsPer, 0)})
	}
	return evs
}

// benchSlice is a service's slice; gen shifts one endpoint's node so that
// successive generations differ.
func benchSlice(key discovery.ServiceKey, s, n, gen int) *discovery.Slice {
	sl := &discovery.Slice{Service: key, Name: key.Name + "-1", AddressType: "IPv4", Ports: []discovery.Port{{Name: "grpc", Port: 50051}}}
	for e := range n {
		i := s*n + e
		node := (i + s) % 100
		if e == 0 {
			node = (node + gen) % 100
		}
		sl.Endpoints = append(sl.Endpoints, discovery.SliceEndpoint{
			Addr:  netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Node:  fmt.Sprintf("n%d", node),
			Ready: true, Serving: true,
		})
	}
	return sl
}

func benchAgent(b testing.TB) (*Agent, *xds.Cache, *metrics.Metrics) {
	cache := xds.NewCache()
	m := metrics.New(prometheus.NewRegistry())
	a := New(Config{
		NodeName:     "n0",
		Names:        names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
		DefaultTiers: topology.DefaultTiers,
	}, cache, nil, nil, m, slog.New(slog.DiscardHandler))
	return a, cache, m
}

// subscribeAll makes every service's four resources wanted, as if clients on
// this node used every service: the worst case for a rebuild.
func subscribeAll(b testing.TB, a *Agent, cache *xds.Cache, services int) {
	s := xds.NewTestSubscriber(cache)
	for i := range services {
		key := discovery.ServiceKey{Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("svc%d", i)}
		canonical := a.cfg.Names.Canonical(key, 8080)
		s.Subscribe(xds.ListenerType, key.Name+"."+key.Namespace+":8080")
		for _, typ := range []string{xds.RouteType, xds.ClusterType, xds.EndpointType} {
			s.Subscribe(typ, canonical)
		}
	}
	a.interests(cache.TakeInterests())
}

// BenchmarkEndpointChange is the cost of one EndpointSlice update, from event
// to the new load assignment stored (marshalled and hashed) in the cache, with
// every service subscribed.
func BenchmarkEndpointChange(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			a, cache, m := benchAgent(b)
			for _, e := range benchCluster(services, 10) {
				a.apply(e, time.Now())
			}
			a.flush(time.Now(), true)
			subscribeAll(b, a, cache, services)
			key := discovery.ServiceKey{Namespace: "ns7", Name: "svc7"}
			rebuilds := testutil.ToFloat64(m.Rebuilds)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				a.apply(discovery.Event{Slice: benchSlice(key, 7, 10, i+1)}, time.Now())
				a.flush(time.Now(), true)
			}
			b.StopTimer()
			if got := testutil.ToFloat64(m.Rebuilds) - rebuilds; got != float64(b.N) {
				b.Fatalf("%v rebuilds for %d changes: other services were rebuilt", got, b.N)
			}
		})
	}
}

// BenchmarkFullBuild is a cold start at 10k services / 100k endpoints: every
// event applied, then every service's four resources built, as if clients on
// this node used all of them.
func BenchmarkFullBuild(b *testing.B) {
	evs := benchCluster(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		a, cache, _ := benchAgent(b)
		for _, e := range evs {
			a.apply(e, time.Now())
		}
		a.flush(time.Now(), true)
		subscribeAll(b, a, cache, 10000)
	}
}

// BenchmarkPickerRebuild is one endpoint change in a Service with the
// endpoint picker, every member's cluster and load assignment subscribed:
// linear in the members (each load assignment finds its endpoint by index).
func BenchmarkPickerRebuild(b *testing.B) {
	for _, members := range []int{100, 1000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			a, cache, _ := benchAgent(b)
			key := discovery.ServiceKey{Namespace: "ns0", Name: "picked"}
			a.apply(discovery.Event{Service: &discovery.Service{Key: key, IPFamily: "IPv4",
				Ports:       []discovery.Port{{Name: "grpc", Port: 8080}},
				Annotations: map[string]string{resources.AnnotationEndpointHeader: "x-pod"}}}, time.Now())
			a.apply(discovery.Event{Slice: benchSlice(key, 0, members, 0)}, time.Now())
			a.flush(time.Now(), true)
			s := xds.NewTestSubscriber(cache)
			canonical := a.cfg.Names.Canonical(key, 8080)
			for _, typ := range []string{xds.RouteType, xds.ClusterType, xds.EndpointType} {
				s.Subscribe(typ, canonical)
			}
			for _, e := range a.store.Endpoints(key, "grpc") {
				picked := names.Resource{Base: canonical, Subset: names.OneEndpoint, Endpoint: e.Addr}.String()
				s.Subscribe(xds.ClusterType, picked)
				s.Subscribe(xds.EndpointType, picked)
			}
			a.interests(cache.TakeInterests())
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				a.apply(discovery.Event{Slice: benchSlice(key, 0, members, i+1)}, time.Now())
				a.flush(time.Now(), true)
			}
		})
	}
}
