package agent

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// The builder on its own: a model, a node and what health checking knows go
// in; resources and what they ask of the agent come out. No Agent, no
// checker, no cache.
func TestBuilder(t *testing.T) {
	const be1 = "be1.default.svc.cluster.local:80"
	for _, tc := range []struct {
		name      string
		ann       map[string]string
		unhealthy []string // endpoints whose checks fail
		typ, res  string   // what to build
		ref       names.Resource
		want      string // the resource, summarized
		track     string // the endpoints to check; "-" for no checks field
		failOpen  bool
	}{
		{name: "this node's endpoints come first, then its zone's, then the rest",
			typ: xds.EndpointType, res: be1,
			want:  "p0: 10.0.0.1:80(HEALTHY) | p1: 10.0.0.2:80(HEALTHY) | p2: 10.0.1.1:80(HEALTHY)",
			track: "10.0.0.1:80 10.0.0.2:80 10.0.1.1:80"},
		{name: "another node's view is prioritized for that node",
			typ: xds.EndpointType, res: be1 + "@n2", ref: names.Resource{View: "n2"},
			want:  "p0: 10.0.0.2:80(HEALTHY) | p1: 10.0.0.1:80(HEALTHY) | p2: 10.0.1.1:80(HEALTHY)",
			track: "10.0.0.2:80 10.0.0.1:80 10.0.1.1:80"},
		{name: "an endpoint failing its checks is served UNHEALTHY",
			typ: xds.EndpointType, res: be1, unhealthy: []string{"10.0.0.1:80"},
			want:  "p0: 10.0.0.1:80(UNHEALTHY) | p1: 10.0.0.2:80(HEALTHY) | p2: 10.0.1.1:80(HEALTHY)",
			track: "10.0.0.1:80 10.0.0.2:80 10.0.1.1:80"},
		{name: "every endpoint failing is served as UNKNOWN: the cluster fails open",
			typ: xds.EndpointType, res: be1, unhealthy: []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.1.1:80"},
			want:  "p0: 10.0.0.1:80 | p1: 10.0.0.2:80 | p2: 10.0.1.1:80",
			track: "10.0.0.1:80 10.0.0.2:80 10.0.1.1:80", failOpen: true},
		{name: "checks off: nothing to check, nothing marked",
			ann: map[string]string{health.AnnotationCheck: "off"}, unhealthy: []string{"10.0.0.1:80"},
			typ: xds.EndpointType, res: be1,
			want: "p0: 10.0.0.1:80 | p1: 10.0.0.2:80 | p2: 10.0.1.1:80", track: ""},
		{name: "a port the Service does not have: no endpoints, and checks stop",
			typ: xds.EndpointType, res: "be1.default.svc.cluster.local:81",
			want: "(none)", track: ""},
		{name: "a listener of another node's view names that view's route",
			typ: xds.ListenerType, res: "be1:80@n2",
			want: "listener be1:80 → route " + be1 + "@n2", track: "-"},
		{name: "a listener of a Service that does not exist is absent",
			typ: xds.ListenerType, res: "nope:80",
			want: "absent", track: "-"},
		{name: "a C-core client's variant of a ring_hash cluster is round_robin",
			ann: map[string]string{resources.AnnotationLBPolicy: "ring_hash"},
			typ: xds.ClusterType, res: be1 + "#no-ring-hash", ref: names.Resource{NoRingHash: true},
			want: "cluster " + be1 + " ROUND_ROBIN", track: "-"},
		{name: "a ring_hash cluster",
			ann: map[string]string{resources.AnnotationLBPolicy: "ring_hash"},
			typ: xds.ClusterType, res: be1,
			want: "cluster " + be1 + " RING_HASH", track: "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testBuilder(t, tc.ann, tc.unhealthy)
			var ref portRef
			key := discovery.ServiceKey{Namespace: "default", Name: "be1"}
			if tc.typ == xds.ListenerType {
				tg, err := b.names.Parse(names.ParseListener(tc.res).Base)
				if err != nil {
					t.Fatal(err)
				}
				key = tg.Service
			} else {
				r, err := names.ParseResource(tc.res)
				if err != nil {
					t.Fatal(err)
				}
				ref = portRef{Resource: r, port: int32(80)}
				if strings.HasSuffix(r.Base, ":81") {
					ref.port = 81
				}
			}
			out := b.build(key, tc.typ, tc.res, ref)
			if got := summarize(out.resource); got != tc.want {
				t.Errorf("built %s, want %s", got, tc.want)
			}
			track := "-"
			if out.checks != nil {
				var addrs []string
				for _, t := range out.checks.targets {
					addrs = append(addrs, t.Addr.String())
				}
				track = strings.Join(addrs, " ")
				if out.checks.failOpen != tc.failOpen {
					t.Errorf("fail open %v, want %v", out.checks.failOpen, tc.failOpen)
				}
			}
			if track != tc.track {
				t.Errorf("to check %q, want %q", track, tc.track)
			}
			if wantWorkaround := tc.ref.NoRingHash && strings.Contains(tc.want, "ROUND_ROBIN"); (out.workaround != "") != wantWorkaround {
				t.Errorf("workaround %q, want one: %v", out.workaround, wantWorkaround)
			}
		})
	}
}

// testBuilder builds for node n1 of zone z1 (n2 is in z1 too, n3 in z2), over
// Service be1 with one endpoint on each node.
func testBuilder(t *testing.T, ann map[string]string, unhealthy []string) *builder {
	t.Helper()
	store := discovery.NewStore()
	for _, n := range []discovery.Node{{Name: "n1", Zone: "z1", Region: "r"}, {Name: "n2", Zone: "z1", Region: "r"}, {Name: "n3", Zone: "z2", Region: "r"}} {
		store.Apply(discovery.Event{Node: &n})
	}
	key := discovery.ServiceKey{Namespace: "default", Name: "be1"}
	store.Apply(discovery.Event{Service: &discovery.Service{Key: key, IPFamily: "IPv4", Ports: []discovery.Port{{Name: "grpc", Port: 80}}, Annotations: ann}})
	sl := &discovery.Slice{Service: key, Name: "be1-1", AddressType: "IPv4", Ports: []discovery.Port{{Name: "grpc", Port: 80}}}
	for _, e := range []struct{ ip, node string }{{"10.0.0.1", "n1"}, {"10.0.0.2", "n2"}, {"10.0.1.1", "n3"}} {
		sl.Endpoints = append(sl.Endpoints, discovery.SliceEndpoint{Addr: netip.MustParseAddr(e.ip), Node: e.node, Ready: true, Serving: true})
	}
	store.Apply(discovery.Event{Slice: sl})
	p := names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"}
	return &builder{
		names:   p,
		service: store.Service,
		config: func(s *discovery.Service) *serviceConfig {
			return readConfig(s, nil, topology.DefaultTiers, VisibilityCluster, false, "")
		},
		endpoints: func(k discovery.ServiceKey, port string) *portEndpoints {
			return &portEndpoints{list: store.Endpoints(k, port)}
		},
		here: func(view string) topology.Here {
			n, _ := store.Node(cmp.Or(view, "n1"))
			return topology.Here{Node: n.Name, Zone: n.Zone, Region: n.Region}
		},
		health: func(tg health.Target) health.Status {
			if slices.Contains(unhealthy, tg.Addr.String()) {
				return health.Unhealthy
			}
			return health.Healthy
		},
		failOpen:  func(string) bool { return false },
		maxPicker: DefaultMaxPickerEndpoints,
		late:      func(discovery.ServiceKey) late { return late{} }, // no Service has moved
	}
}

// summarize writes a built resource as a line a test can compare.
func summarize(m proto.Message) string {
	switch r := m.(type) {
	case nil:
		return "absent"
	case *endpointv3.ClusterLoadAssignment:
		var prios []string
		for _, l := range r.GetEndpoints() {
			var eps []string
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				s := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				if hs := e.GetHealthStatus(); hs != corev3.HealthStatus_UNKNOWN {
					s += "(" + hs.String() + ")"
				}
				eps = append(eps, s)
			}
			prios = append(prios, fmt.Sprintf("p%d: %s", l.GetPriority(), strings.Join(eps, " ")))
		}
		if len(prios) == 0 {
			return "(none)"
		}
		return strings.Join(prios, " | ")
	case *clusterv3.Cluster:
		return "cluster " + r.GetName() + " " + r.GetLbPolicy().String()
	case *listenerv3.Listener:
		var hcm hcmv3.HttpConnectionManager
		if err := r.GetApiListener().GetApiListener().UnmarshalTo(&hcm); err != nil {
			return err.Error()
		}
		return "listener " + r.GetName() + " → route " + hcm.GetRds().GetRouteConfigName()
	}
	return fmt.Sprintf("%T", m)
}
