package agent_test

import (
	"cmp"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/internal/poll"
)

// clusterAs fetches one cluster over a raw ADS stream as a client with the
// given user agent would, and returns it.
func clusterAs(t *testing.T, addr, uaName, uaVersion, name string) *clusterv3.Cluster {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: uaName, UserAgentName: uaName,
			UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: uaVersion}},
		TypeUrl: xds.ClusterType, ResourceNames: []string{name},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 {
		t.Fatalf("%s got %d clusters, want 1", uaName, len(resp.GetResources()))
	}
	var c clusterv3.Cluster
	if err := resp.GetResources()[0].UnmarshalTo(&c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestCCore151GetsRoundRobinForARingHashService(t *testing.T) {
	w := newWorld(t)
	be1 := w.addService("default", "be1", func(s *service) {
		s.Annotations = map[string]string{resources.AnnotationHashHeader: "x-user"}
	})
	w.startBackend(be1, "l1", "a1")
	a := startAgent(t, w)
	const name = "be1.default.svc.cluster.local:8080"
	for _, tc := range []struct {
		client, ua, version string
		want                clusterv3.Cluster_LbPolicy
	}{
		{"grpc-go keeps ring_hash", "gRPC Go", "1.85.0", clusterv3.Cluster_RING_HASH},
		{"C-core 1.51 (Python), which crashes on ring_hash, gets round_robin", "gRPC C-core linux Python", "C-core 29.0.0 Python 1.51.1", clusterv3.Cluster_ROUND_ROBIN},
		{"a later C-core keeps ring_hash", "gRPC C-core linux Python", "C-core 33.0.0 Python 1.60.0", clusterv3.Cluster_RING_HASH},
	} {
		c := clusterAs(t, a.Addr, tc.ua, tc.version, name)
		if c.GetName() != name || c.GetLbPolicy() != tc.want {
			t.Errorf("%s: cluster %q with %v, want %q with %v", tc.client, c.GetName(), c.GetLbPolicy(), name, tc.want)
		}
	}
}

// certClientStream opens a raw ADS stream as a client with certificates
// (nodexds bootstrap --certs) and the given user agent, and returns the
// node its requests are to carry.
func certClientStream(t *testing.T, addr, uaName string) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, *corev3.Node) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st, &corev3.Node{Id: uaName, UserAgentName: uaName, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		xds.MetadataCertProvider: structpb.NewStringValue(xds.CertProvider),
	}}}
}

// tlsWatch subscribes to one cluster as a client with certificates and
// the given user agent would, and sends on the channel whether each cluster
// received has TLS settings.
func tlsWatch(t *testing.T, addr, uaName, name string) <-chan bool {
	out := make(chan bool, 16)
	in := followFrom(t, addr, uaName, xds.ClusterType, name)
	go func() {
		for f := range in {
			if f.what == "cluster" {
				out <- f.tls
			}
		}
	}()
	return out
}

// waitTLS waits for a cluster whose TLS settings are want, and returns when
// it came.
func waitTLS(t *testing.T, who string, c <-chan bool, want bool) time.Time {
	t.Helper()
	timeout := time.After(poll.Timeout)
	for {
		select {
		case got := <-c:
			if got == want {
				return time.Now()
			}
		case <-timeout:
			t.Fatalf("%s: no cluster with TLS %v", who, want)
		}
	}
}

// movingCart runs shop/cart with one plaintext backend, on an agent whose
// servers hand over after handover.
func movingCart(t *testing.T, handover time.Duration) (*world, *service, *testAgent) {
	w := newWorld(t)
	cart := w.addService("shop", "cart")
	w.startBackend(cart, "cart", "a1")
	return w, cart, startAgent(t, w, withHandover(handover))
}

// TestRedialingClientsMoveToTLSWithTheServers: when a Service moves between
// plaintext and TLS, a grpc-go client's cluster changes at once (it keeps
// its open connections until the servers hand over), and a grpc-js-xds or
// C-core client's, which would dial anew at once with what the servers do
// not speak yet, only after the servers' handover.
func TestRedialingClientsMoveToTLSWithTheServers(t *testing.T) {
	const handover = 500 * time.Millisecond
	w, cart, a := movingCart(t, handover)
	const name = "cart.shop.svc.cluster.local:8080"
	clients := map[string]<-chan bool{}
	for _, ua := range []string{"gRPC Go", "gRPC Node Pure JS", "gRPC C-core"} {
		clients[ua] = tlsWatch(t, a.Addr, ua, name)
		waitTLS(t, ua, clients[ua], false)
	}
	for _, step := range []struct {
		mode string
		tls  bool
	}{{"strict", true}, {"disabled", false}} {
		cart.Annotations = map[string]string{trust.AnnotationMTLS: step.mode}
		w.write()
		moved := waitTLS(t, "gRPC Go", clients["gRPC Go"], step.tls)
		for _, ua := range []string{"gRPC Node Pure JS", "gRPC C-core"} {
			if late := waitTLS(t, ua, clients[ua], step.tls).Sub(moved); late < handover-50*time.Millisecond {
				t.Errorf("%s: %s: its cluster moved %v after grpc-go's, want the handover (%v) or more", step.mode, ua, late, handover)
			}
		}
	}
}

// follow is what a client that follows a route learns, each thing when it
// came: the clusters the route names, whether each has TLS settings, and
// how many endpoints each cluster's load assignment has.
type follow struct {
	at   time.Time
	what string // "route", "cluster" or "endpoints"
	name string // the cluster
	tls  bool
	eps  int
}

// followFrom subscribes to one route configuration or cluster over a raw
// ADS stream as a client with certificates and the given user agent would,
// and to the clusters it names and their load assignments, ACKing every
// response. The channel is closed when the stream ends.
func followFrom(t *testing.T, addr, uaName, typ, name string) <-chan follow {
	t.Helper()
	st, node := certClientStream(t, addr, uaName)
	acked := map[string]*discoveryv3.DiscoveryRequest{}
	ask := func(typ string, names []string) error {
		r := acked[typ]
		if r == nil {
			r = &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}
			acked[typ] = r
		}
		r.ResourceNames = names
		return st.Send(r)
	}
	if err := ask(typ, []string{name}); err != nil {
		t.Fatal(err)
	}
	out := make(chan follow, 64)
	go func() {
		defer close(out)
		for {
			resp, err := st.Recv()
			if err != nil {
				return
			}
			now, typ := time.Now(), resp.GetTypeUrl()
			acked[typ].VersionInfo, acked[typ].ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
			var next []string // what the response makes the client ask for
			for _, r := range resp.GetResources() {
				switch typ {
				case xds.RouteType:
					var rc routev3.RouteConfiguration
					if r.UnmarshalTo(&rc) != nil {
						return
					}
					for _, vh := range rc.GetVirtualHosts() {
						for _, rt := range vh.GetRoutes() {
							if c := rt.GetRoute().GetCluster(); c != "" && !slices.Contains(next, c) {
								next = append(next, c)
								out <- follow{at: now, what: "route", name: c}
							}
						}
					}
				case xds.ClusterType:
					var c clusterv3.Cluster
					if r.UnmarshalTo(&c) != nil {
						return
					}
					next = append(next, cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.GetName()))
					out <- follow{at: now, what: "cluster", name: c.GetName(), tls: c.GetTransportSocket() != nil}
				case xds.EndpointType:
					var la endpointv3.ClusterLoadAssignment
					if r.UnmarshalTo(&la) != nil {
						return
					}
					eps := 0
					for _, l := range la.GetEndpoints() {
						eps += len(l.GetLbEndpoints())
					}
					out <- follow{at: now, what: "endpoints", name: la.GetClusterName(), eps: eps}
				}
			}
			if st.Send(acked[typ]) != nil {
				return
			}
			follows := map[string]string{xds.RouteType: xds.ClusterType, xds.ClusterType: xds.EndpointType}[typ]
			if follows != "" && next != nil && !slices.Equal(next, acked[follows].GetResourceNames()) && ask(follows, next) != nil {
				return
			}
		}
	}()
	return out
}

// TestALateClientMovesToAFreshClusterFilledAfterTheServers: a client that
// redials when its TLS settings change (C-core) is moved, when its Service
// moves between plaintext and TLS, to a fresh cluster: its route names it
// before the servers' handover, with the new TLS settings and no endpoints,
// so that its calls wait; its endpoints come only after the handover, once
// the servers speak what it will dial with. A grpc-go client's route keeps
// the cluster it had.
func TestALateClientMovesToAFreshClusterFilledAfterTheServers(t *testing.T) {
	const handover = 500 * time.Millisecond
	w, cart, a := movingCart(t, handover)
	const name = "cart.shop.svc.cluster.local:8080"
	late := followFrom(t, a.Addr, "gRPC C-core", xds.RouteType, name)
	goClient := followFrom(t, a.Addr, "gRPC Go", xds.RouteType, name)
	// next waits for what the client learns of cluster ("": any but
	// name), from its route.
	next := func(c <-chan follow, what, cluster string) follow {
		t.Helper()
		timeout := time.After(poll.Timeout)
		for {
			select {
			case f, ok := <-c:
				if !ok {
					t.Fatalf("the stream ended before a %s of %s", what, cluster)
				}
				if f.what == what && (f.name == cluster || cluster == "" && f.name != name) {
					return f
				}
			case <-timeout:
				t.Fatalf("no %s of %s", what, cluster)
			}
		}
	}
	if f := next(late, "endpoints", name); f.eps != 1 {
		t.Fatalf("cart's load assignment has %d endpoints, want 1", f.eps)
	}
	next(goClient, "endpoints", name)
	was := name
	for _, step := range []struct {
		mode string
		tls  bool
	}{{"strict", true}, {"disabled", false}} {
		seen := time.Now() // the agent sees the change after this
		cart.Annotations = map[string]string{trust.AnnotationMTLS: step.mode}
		w.write()
		named := next(late, "route", "")
		for named.name == was { // the route again, as its retries end
			named = next(late, "route", "")
		}
		fresh := named.name
		if r, err := names.ParseResource(fresh); err != nil || r.Gen < uint32(seen.Unix()) || fresh == was || r.Port().String() != name {
			t.Fatalf("%s: the route named %s after %s, want a fresh generation of %s (err %v)", step.mode, fresh, was, name, err)
		}
		was = fresh
		if min := seen.Add(handover - 100*time.Millisecond); named.at.Before(min) {
			t.Errorf("%s: the route named %s %v after the change, before the handover's lead (%v)", step.mode, fresh, named.at.Sub(seen), handover-100*time.Millisecond)
		}
		c := next(late, "cluster", fresh)
		if c.tls != step.tls {
			t.Errorf("%s: %s has TLS %v, want %v", step.mode, fresh, c.tls, step.tls)
		}
		filled := next(late, "endpoints", fresh)
		if filled.eps != 1 {
			t.Errorf("%s: %s's load assignment has %d endpoints, want 1", step.mode, fresh, filled.eps)
		}
		if min := seen.Add(handover + 100*time.Millisecond); filled.at.Before(min) {
			t.Errorf("%s: %s was filled %v after the change, before the servers' handover and lag (%v)", step.mode, fresh, filled.at.Sub(seen), handover+100*time.Millisecond)
		}
		if filled.at.Before(c.at) {
			t.Errorf("%s: %s was filled before its cluster came", step.mode, fresh)
		}
		// grpc-go's cluster takes the new settings, under its old name.
		for f := next(goClient, "cluster", name); f.tls != step.tls; f = next(goClient, "cluster", name) {
		}
	}
	for drained := false; !drained; {
		select {
		case f, ok := <-goClient:
			if drained = !ok; ok && f.name != name {
				t.Errorf("grpc-go's route named %s, want only %s", f.name, name)
			}
		default:
			drained = true
		}
	}
}
