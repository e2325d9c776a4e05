package xds

import (
	"context"
	"fmt"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/internal/poll"
)

func csdsClient(t *testing.T, s *testServer) statusv3.ClientStatusDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(s.csdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return statusv3.NewClientStatusDiscoveryServiceClient(cc)
}

func exactNode(id string) []*matcherv3.NodeMatcher {
	return []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}}}
}

func fetch(t *testing.T, c statusv3.ClientStatusDiscoveryServiceClient, req *statusv3.ClientStatusRequest) *statusv3.ClientStatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), poll.Timeout)
	defer cancel()
	resp, err := c.FetchClientStatus(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// fetchUntil fetches until cond holds on the response; see poll.Check.
func fetchUntil(t *testing.T, c statusv3.ClientStatusDiscoveryServiceClient, req *statusv3.ClientStatusRequest, cond func(*statusv3.ClientStatusResponse) bool) *statusv3.ClientStatusResponse {
	t.Helper()
	var resp *statusv3.ClientStatusResponse
	poll.Check(t, func() string {
		if resp = fetch(t, c, req); cond(resp) {
			return ""
		}
		return fmt.Sprintf("CSDS never answered as wanted; last: %v", resp)
	})
	return resp
}

func configOf(resp *statusv3.ClientStatusResponse, node, name string) *statusv3.ClientConfig_GenericXdsConfig {
	for _, cc := range resp.GetConfig() {
		if cc.GetNode().GetId() != node {
			continue
		}
		for _, g := range cc.GetGenericXdsConfigs() {
			if g.GetName() == name {
				return g
			}
		}
	}
	return nil
}

func TestCSDSReportsEachClientsResources(t *testing.T) {
	s := startServer(t, "be1", "be2")
	a, b := dial(t, s), dial(t, s)
	a.node, b.node = "a", "b"
	s.world.hold("nosuch") // resolved only after be1 was answered: two responses, deterministically
	a.request("be1", "nosuch")
	a.expect("be1")
	s.world.release(ClusterType, "nosuch")
	a.expect("be1")
	a.request("be1", "nosuch") // ACK
	b.request("be2")
	b.expect("be2") // not ACKed
	c := csdsClient(t, s)

	all := fetchUntil(t, c, &statusv3.ClientStatusRequest{}, func(r *statusv3.ClientStatusResponse) bool {
		g := configOf(r, "a", "be1")
		return len(r.GetConfig()) == 2 && g != nil && g.GetConfigStatus() == statusv3.ConfigStatus_SYNCED
	})
	g := configOf(all, "a", "be1")
	if g.GetTypeUrl() != ClusterType || g.GetVersionInfo() != a.last.VersionInfo ||
		g.GetClientStatus() != adminv3.ClientResourceStatus_ACKED || g.GetLastUpdated() == nil {
		t.Errorf("a's be1 = %v, want CDS at version %s, ACKED, with a time", g, a.last.VersionInfo)
	}
	cluster := resources.Cluster("", resources.DefaultLB)
	if err := g.GetXdsConfig().UnmarshalTo(cluster); err != nil || cluster.GetName() != "be1" {
		t.Errorf("a's be1 carries %v (%v), want cluster be1", g.GetXdsConfig(), err)
	}
	if g := configOf(all, "a", "nosuch"); g.GetConfigStatus() != statusv3.ConfigStatus_NOT_SENT ||
		g.GetClientStatus() != adminv3.ClientResourceStatus_DOES_NOT_EXIST || g.GetXdsConfig() != nil {
		t.Errorf("a's nosuch = %v, want NOT_SENT, DOES_NOT_EXIST, no resource", g)
	}
	if g := configOf(all, "b", "be2"); g.GetConfigStatus() != statusv3.ConfigStatus_STALE {
		t.Errorf("b's be2 = %v, want STALE (sent, not ACKed)", g)
	}

	only := fetch(t, c, &statusv3.ClientStatusRequest{NodeMatchers: exactNode("b"), ExcludeResourceContents: true})
	if len(only.GetConfig()) != 1 || only.GetConfig()[0].GetNode().GetId() != "b" {
		t.Fatalf("node matcher b gave %v", only)
	}
	if g := configOf(only, "b", "be2"); g == nil || g.GetXdsConfig() != nil {
		t.Errorf("exclude_resource_contents: be2 = %v, want no resource", g)
	}

	changed := resources.Cluster("be1", resources.DefaultLB)
	changed.LbPolicy = 1
	s.world.update("be1", changed)
	a.expect("be1")
	a.nack("be1: no")
	nacked := fetchUntil(t, c, &statusv3.ClientStatusRequest{NodeMatchers: exactNode("a")}, func(r *statusv3.ClientStatusResponse) bool {
		return configOf(r, "a", "be1").GetConfigStatus() == statusv3.ConfigStatus_ERROR
	})
	g = configOf(nacked, "a", "be1")
	if g.GetClientStatus() != adminv3.ClientResourceStatus_NACKED || g.GetErrorState().GetDetails() != "be1: no" ||
		g.GetErrorState().GetLastUpdateAttempt() == nil || g.GetErrorState().GetFailedConfiguration() == nil {
		t.Errorf("NACKed be1 = %v, want NACKED with the error state", g)
	}
}

func TestCSDSStreamAnswersEachRequest(t *testing.T) {
	s := startServer(t, "be1")
	a := dial(t, s)
	a.request("be1")
	a.expect("be1")
	ctx, cancel := context.WithTimeout(context.Background(), poll.Timeout)
	defer cancel()
	st, err := csdsClient(t, s).StreamClientStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"test", "nobody"} {
		if err := st.Send(&statusv3.ClientStatusRequest{NodeMatchers: exactNode(node)}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int{"test": 1, "nobody": 0}[node]; len(resp.GetConfig()) != want {
			t.Errorf("node %s: %d configs, want %d", node, len(resp.GetConfig()), want)
		}
	}
}

func TestCSDSRejectsMetadataMatchers(t *testing.T) {
	s := startServer(t)
	_, err := csdsClient(t, s).FetchClientStatus(context.Background(), &statusv3.ClientStatusRequest{
		NodeMatchers: []*matcherv3.NodeMatcher{{NodeMetadatas: []*matcherv3.StructMatcher{{}}}},
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("metadata matcher: %v, want InvalidArgument", err)
	}
}

func TestNodeMatchers(t *testing.T) {
	sm := func(p any, fold bool) *matcherv3.NodeMatcher {
		m := &matcherv3.StringMatcher{IgnoreCase: fold}
		switch p := p.(type) {
		case *matcherv3.StringMatcher_Exact:
			m.MatchPattern = p
		case *matcherv3.StringMatcher_Prefix:
			m.MatchPattern = p
		case *matcherv3.StringMatcher_SafeRegex:
			m.MatchPattern = p
		}
		return &matcherv3.NodeMatcher{NodeId: m}
	}
	match, err := nodeMatchers([]*matcherv3.NodeMatcher{
		sm(&matcherv3.StringMatcher_Exact{Exact: "ns/Pod-1"}, true),
		sm(&matcherv3.StringMatcher_Prefix{Prefix: "other/"}, false),
		sm(&matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "x[0-9]"}}, false),
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"ns/pod-1": true, "ns/pod-10": false, "other/x": true, "x1": true, "ax1": false, "x12": false} {
		if match(id) != want {
			t.Errorf("match(%q) = %v, want %v", id, !want, want)
		}
	}
}
