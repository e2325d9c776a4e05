package agent_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/xds"
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
