package resources

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

func unknown(netip.AddrPort) health.Status { return health.Unknown }

// checkGRPCRules fails for anything grpc-go's EDS parser rejects (NACKs) or
// silently mishandles: priorities must be contiguous from 0, a locality may
// appear once per priority, an address once per assignment, and a priority
// whose localities all weigh 0 would be ignored.
func checkGRPCRules(t *testing.T, cla *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	maxPrio := -1
	weight := map[uint32]uint32{}
	localities := map[string]bool{}
	addrs := map[string]bool{}
	for _, l := range cla.Endpoints {
		p := l.GetPriority()
		maxPrio = max(maxPrio, int(p))
		weight[p] += l.GetLoadBalancingWeight().GetValue()
		key := fmt.Sprintf("%d/%s/%s/%s", p, l.Locality.GetRegion(), l.Locality.GetZone(), l.Locality.GetSubZone())
		if localities[key] {
			t.Errorf("locality %s twice in one priority", key)
		}
		localities[key] = true
		if len(l.LbEndpoints) == 0 {
			t.Errorf("empty locality %s", key)
		}
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			a := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
			if addrs[a] {
				t.Errorf("address %s listed twice", a)
			}
			addrs[a] = true
		}
	}
	for p := 0; p <= maxPrio; p++ {
		if w, ok := weight[uint32(p)]; !ok {
			t.Errorf("priority %d missing: priorities must be contiguous", p)
		} else if w == 0 {
			t.Errorf("priority %d has zero total weight", p)
		}
	}
}

func TestLoadAssignmentShape(t *testing.T) {
	ep := func(addr, node, zone, region, pod string) discovery.Endpoint {
		return discovery.Endpoint{Addr: netip.MustParseAddrPort(addr), Node: node, Zone: zone, Region: region, Pod: pod, Ready: true}
	}
	prios := []topology.Priority{
		{Tiers: topology.Tiers{topology.TierNode}, Endpoints: []discovery.Endpoint{ep("10.0.0.1:80", "a1", "a", "r1", "p1")}},
		{Tiers: topology.Tiers{topology.TierAny}, Endpoints: []discovery.Endpoint{
			ep("10.0.0.2:80", "a2", "a", "r1", "p2"), ep("10.0.0.3:80", "c1", "c", "r2", "p3"), ep("10.0.0.4:80", "c2", "c", "r2", "p4"),
		}},
	}
	status := func(a netip.AddrPort) health.Status {
		if a.Addr() == netip.MustParseAddr("10.0.0.3") {
			return health.Unhealthy
		}
		return health.Unknown
	}
	cla := LoadAssignment("be1.ns.svc.cluster.local:80", prios, status)
	checkGRPCRules(t, cla)

	type row struct {
		prio           uint32
		region, zone   string
		weight         uint32
		addrs, healths string
	}
	var got []row
	for _, l := range cla.Endpoints {
		r := row{prio: l.Priority, region: l.Locality.Region, zone: l.Locality.Zone, weight: l.LoadBalancingWeight.GetValue()}
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			r.addrs += fmt.Sprintf("%s:%d(%s) ", sa.Address, sa.GetPortValue(), e.GetEndpoint().GetHostname())
			r.healths += e.HealthStatus.String() + " "
		}
		got = append(got, r)
	}
	want := []row{
		{0, "r1", "a", 1, "10.0.0.1:80(p1) ", "UNKNOWN "},
		{1, "r1", "a", 1, "10.0.0.2:80(p2) ", "UNKNOWN "},
		{1, "r2", "c", 2, "10.0.0.3:80(p3) 10.0.0.4:80(p4) ", "UNHEALTHY UNKNOWN "},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("load assignment:\n got  %v\n want %v", got, want)
	}
}

func TestNoPrioritiesIsAnEmptyAssignment(t *testing.T) {
	cla := LoadAssignment("x", nil, unknown)
	if cla.ClusterName != "x" || len(cla.Endpoints) != 0 {
		t.Errorf("got %v, want an empty assignment named x", cla)
	}
}

// TestRandomClustersNeverBreakGRPCRules runs the whole topology → EDS path
// over many random clusters, policies and nodes, and checks every result
// against what grpc-go accepts.
func TestRandomClustersNeverBreakGRPCRules(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	zones := []string{"", "a", "b", "c"}
	regions := []string{"", "r1", "r2"}
	policies := []string{"node,zone,region,*", "node", "zone,*", "region", "*", "node,*", "zone,region"}
	for i := range 2000 {
		var eps []discovery.Endpoint
		for j := range r.IntN(30) {
			eps = append(eps, discovery.Endpoint{
				Addr:        netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(j / 250), byte(j % 250)}), uint16(8000+r.IntN(2))),
				Node:        fmt.Sprintf("n%d", r.IntN(6)),
				Zone:        zones[r.IntN(len(zones))],
				Region:      regions[r.IntN(len(regions))],
				Ready:       r.IntN(5) > 0,
				Serving:     r.IntN(2) > 0,
				Terminating: r.IntN(4) == 0,
			})
		}
		tiers, _ := topology.ParseTiers(policies[r.IntN(len(policies))])
		p := topology.Policy{Tiers: tiers, MinTierEndpoints: 1 + r.IntN(4)}
		here := topology.Here{Node: fmt.Sprintf("n%d", r.IntN(6)), Zone: zones[r.IntN(len(zones))], Region: regions[r.IntN(len(regions))]}
		cla := LoadAssignment("c", topology.Prioritize(eps, p, here), unknown)
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkGRPCRules(t, cla) })
		if t.Failed() {
			t.Fatalf("case %d: policy %v here %+v endpoints %+v", i, p, here, eps)
		}
	}
}

func TestListenerPointsAtTheSharedRouteConfig(t *testing.T) {
	l := Listener("be1:8080", "be1.default.svc.cluster.local:8080")
	hcm := &hcmv3.HttpConnectionManager{}
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if got := hcm.GetRds().GetRouteConfigName(); got != "be1.default.svc.cluster.local:8080" {
		t.Errorf("route config = %q", got)
	}
	if hcm.GetRds().GetConfigSource().GetAds() == nil {
		t.Error("RDS must come over ADS")
	}
	if f := hcm.GetHttpFilters(); len(f) != 1 || f[len(f)-1].GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" {
		t.Errorf("filters = %v, want the router last", f)
	}
	c := Cluster("be1.default.svc.cluster.local:8080", DefaultLB)
	if c.GetType().String() != "EDS" || c.GetEdsClusterConfig().GetServiceName() != c.Name || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Errorf("cluster = %v", c)
	}
}
