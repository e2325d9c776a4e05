package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nodexds/nodexds/discovery"
)

// here is node a1, in zone a of region r1. The fixture cluster:
//
//	r1: zone a (nodes a1, a2), zone b (node b1)
//	r2: zone c (node c1)
var here = Here{Node: "a1", Zone: "a", Region: "r1"}

// fixtureNodes places the fixture cluster's nodes: name → {zone, region}.
var fixtureNodes = map[string][2]string{
	"a1": {"a", "r1"}, "a2": {"a", "r1"}, "b1": {"b", "r1"}, "c1": {"c", "r2"},
}

// ep builds a ready endpoint "ip:port@node" with the node's zone and region.
func ep(spec string) discovery.Endpoint {
	addr, node, _ := strings.Cut(spec, "@")
	loc := fixtureNodes[node]
	return discovery.Endpoint{
		Addr: netip.MustParseAddrPort(addr), Node: node, Zone: loc[0], Region: loc[1],
		Ready: true, Serving: true,
	}
}

func eps(specs ...string) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(specs))
	for i, s := range specs {
		out[i] = ep(s)
	}
	return out
}

func terminating(e discovery.Endpoint, serving bool) discovery.Endpoint {
	e.Ready, e.Serving, e.Terminating = false, serving, true
	return e
}

func hinted(e discovery.Endpoint, zones, nodes string) discovery.Endpoint {
	e.Hints = &discovery.Hints{}
	if zones != "" {
		e.Hints.Zones = strings.Split(zones, ",")
	}
	if nodes != "" {
		e.Hints.Nodes = strings.Split(nodes, ",")
	}
	return e
}

func policy(tiers string, minPerTier int) Policy {
	ts, err := ParseTiers(tiers)
	if err != nil {
		panic(err)
	}
	return Policy{Tiers: ts, MinTierEndpoints: minPerTier}
}

// show renders priorities as "tiers: ip:port ip:port | ...", the form the
// test table's expectations are written in.
func show(ps []Priority) string {
	var parts []string
	for _, p := range ps {
		addrs := make([]string, len(p.Endpoints))
		for i, e := range p.Endpoints {
			addrs[i] = e.Addr.String()
		}
		parts = append(parts, p.Tiers.String()+": "+strings.Join(addrs, " "))
	}
	return strings.Join(parts, " | ")
}

// localPolicy is what a Service with internalTrafficPolicy Local gets.
var localPolicy = func() Policy {
	p, _ := PolicyFor(&discovery.Service{InternalTrafficLocal: true}, DefaultTiers)
	return p
}()

var all4 = eps("10.0.0.1:80@a1", "10.0.0.2:80@a2", "10.0.0.3:80@b1", "10.0.0.4:80@c1")

func TestPrioritize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		eps    []discovery.Endpoint
		policy Policy
		want   string
	}{
		{
			name:   "default policy puts each tier in its own priority",
			eps:    all4,
			policy: policy("node,zone,region,*", 1),
			want:   "node: 10.0.0.1:80 | zone: 10.0.0.2:80 | region: 10.0.0.3:80 | *: 10.0.0.4:80",
		},
		{
			name:   "no local endpoint: zone becomes priority 0, no gap",
			eps:    eps("10.0.0.2:80@a2", "10.0.0.4:80@c1"),
			policy: policy("node,zone,region,*", 1),
			want:   "zone: 10.0.0.2:80 | *: 10.0.0.4:80",
		},
		{
			name:   "all endpoints remote, PreferSameNode falls back to zone then anywhere",
			eps:    eps("10.0.0.2:80@a2", "10.0.0.3:80@b1", "10.0.0.4:80@c1"),
			policy: policy("node,zone,*", 1),
			want:   "zone: 10.0.0.2:80 | *: 10.0.0.3:80 10.0.0.4:80",
		},
		{
			name:   "strict node policy with no local endpoint yields nothing",
			eps:    eps("10.0.0.2:80@a2", "10.0.0.3:80@b1"),
			policy: policy("node", 1),
			want:   "",
		},
		{
			name:   "strict zone,region policy never reaches another region",
			eps:    all4,
			policy: policy("zone,region", 1),
			want:   "zone: 10.0.0.1:80 10.0.0.2:80 | region: 10.0.0.3:80",
		},
		{
			name:   "anywhere alone is one flat priority",
			eps:    all4,
			policy: policy("*", 1),
			want:   "*: 10.0.0.1:80 10.0.0.2:80 10.0.0.3:80 10.0.0.4:80",
		},
		{
			name:   "guard merges a lone local pod into the zone tier",
			eps:    eps("10.0.0.1:80@a1", "10.0.0.2:80@a2", "10.0.0.5:80@a2", "10.0.0.4:80@c1"),
			policy: policy("node,zone,*", 2),
			want:   "node,zone: 10.0.0.1:80 10.0.0.2:80 10.0.0.5:80 | *: 10.0.0.4:80",
		},
		{
			name:   "guard keeps merging until the count is met, and the last tier takes what is left",
			eps:    eps("10.0.0.1:80@a1", "10.0.0.2:80@a2", "10.0.0.3:80@b1"),
			policy: policy("node,zone,region,*", 5),
			want:   "node,zone,region,*: 10.0.0.1:80 10.0.0.2:80 10.0.0.3:80",
		},
		{
			name:   "guard in a strict policy keeps a small last tier rather than dropping it",
			eps:    eps("10.0.0.1:80@a1"),
			policy: policy("node", 3),
			want:   "node: 10.0.0.1:80",
		},
		{
			name: "terminating endpoints are not used while a ready one exists",
			eps: []discovery.Endpoint{
				terminating(ep("10.0.0.1:80@a1"), true), ep("10.0.0.4:80@c1"),
			},
			policy: policy("node,zone,region,*", 1),
			want:   "*: 10.0.0.4:80",
		},
		{
			name: "serving terminating endpoints are used when nothing is ready",
			eps: []discovery.Endpoint{
				terminating(ep("10.0.0.1:80@a1"), true), terminating(ep("10.0.0.4:80@c1"), true),
			},
			policy: policy("node,zone,region,*", 1),
			want:   "node: 10.0.0.1:80 | *: 10.0.0.4:80",
		},
		{
			name: "strict node policy keeps a serving terminating local pod although ready pods exist elsewhere",
			eps: []discovery.Endpoint{
				terminating(ep("10.0.0.1:80@a1"), true), ep("10.0.0.2:80@a2"),
			},
			policy: policy("node", 1),
			want:   "node: 10.0.0.1:80",
		},
		{
			name: "strict zone policy prefers a ready zone pod over a terminating local one",
			eps: []discovery.Endpoint{
				terminating(ep("10.0.0.1:80@a1"), true), ep("10.0.0.2:80@a2"), ep("10.0.0.4:80@c1"),
			},
			policy: policy("node,zone", 1),
			want:   "zone: 10.0.0.2:80",
		},
		{
			name: "not-serving endpoints are never used",
			eps: []discovery.Endpoint{
				terminating(ep("10.0.0.1:80@a1"), false), terminating(ep("10.0.0.4:80@c1"), true),
			},
			policy: policy("node,zone,region,*", 1),
			want:   "*: 10.0.0.4:80",
		},
		{
			name: "zone hints on every endpoint replace the zone label",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.2:80@a2"), "b", ""),
				hinted(ep("10.0.0.3:80@b1"), "a", ""),
				hinted(ep("10.0.0.4:80@c1"), "c", ""),
			},
			policy: policy("zone,*", 1),
			want:   "zone: 10.0.0.3:80 | *: 10.0.0.2:80 10.0.0.4:80",
		},
		{
			name: "zone hints on only some endpoints are ignored",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.2:80@a2"), "b", ""),
				ep("10.0.0.3:80@b1"),
			},
			policy: policy("zone,*", 1),
			want:   "zone: 10.0.0.2:80 | *: 10.0.0.3:80",
		},
		{
			name: "zone hints that name no endpoint for our zone are ignored",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.2:80@a2"), "b", ""),
				hinted(ep("10.0.0.3:80@b1"), "b", ""),
			},
			policy: policy("zone,*", 1),
			want:   "zone: 10.0.0.2:80 | *: 10.0.0.3:80",
		},
		{
			name: "node hints on every endpoint replace the node name",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.1:80@a1"), "", "a2"),
				hinted(ep("10.0.0.2:80@a2"), "", "a1"),
			},
			policy: policy("node,*", 1),
			want:   "node: 10.0.0.2:80 | *: 10.0.0.1:80",
		},
		{
			name: "kube-proxy topologyModeFromHints: only ready endpoints count, so with none ready hints are ignored and labels place the serving terminating ones",
			eps: []discovery.Endpoint{
				terminating(hinted(ep("10.0.0.2:80@a2"), "b", ""), true),
				terminating(hinted(ep("10.0.0.3:80@b1"), "a", ""), true),
			},
			policy: policy("zone,*", 1),
			want:   "zone: 10.0.0.2:80 | *: 10.0.0.3:80",
		},
		{
			name: "kube-proxy topologyModeFromHints: a terminating endpoint without hints does not void the ready endpoints' hints",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.2:80@a2"), "b", ""),
				hinted(ep("10.0.0.3:80@b1"), "a", ""),
				terminating(ep("10.0.0.5:80@a2"), true),
			},
			policy: policy("zone,*", 1),
			want:   "zone: 10.0.0.3:80 | *: 10.0.0.2:80",
		},
		{
			name: "kube-proxy topologyModeFromHints: a not-ready endpoint without hints does not void them either",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.2:80@a2"), "b", ""),
				hinted(ep("10.0.0.3:80@b1"), "a", ""),
				{Addr: netip.MustParseAddrPort("10.0.0.6:80"), Node: "a1", Zone: "a", Region: "r1"},
			},
			policy: policy("zone,*", 1),
			want:   "zone: 10.0.0.3:80 | *: 10.0.0.2:80",
		},
		{
			name: "kube-proxy CategorizeEndpoints: internalTrafficPolicy Local picks this node's endpoints by nodeName, ignoring node hints",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.1:80@a1"), "a", "a2"),
				hinted(ep("10.0.0.2:80@a2"), "a", "a1"),
			},
			policy: localPolicy,
			want:   "node: 10.0.0.1:80",
		},
		{
			name: "kube-proxy CategorizeEndpoints: internalTrafficPolicy Local with only a hint for this node has no local endpoint",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.2:80@a2"), "a", "a1"),
			},
			policy: localPolicy,
			want:   "",
		},
		{
			name: "hints still apply to a strict node policy chosen by annotation (only Local ignores them)",
			eps: []discovery.Endpoint{
				hinted(ep("10.0.0.1:80@a1"), "a", "a2"),
				hinted(ep("10.0.0.2:80@a2"), "a", "a1"),
			},
			policy: policy("node", 1),
			want:   "node: 10.0.0.2:80",
		},
		{
			name:   "an endpoint with no node or zone only matches anywhere",
			eps:    []discovery.Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.9:80"), Ready: true, Serving: true}},
			policy: policy("node,zone,region,*", 1),
			want:   "*: 10.0.0.9:80",
		},
		{
			name:   "no endpoints at all",
			policy: policy("node,zone,region,*", 1),
			want:   "",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Prioritize(tc.eps, tc.policy, here)
			if s := show(got); s != tc.want {
				t.Errorf("Prioritize:\n got  %q\n want %q", s, tc.want)
			}
			if tc.want == "" && got != nil {
				t.Errorf("want nil result for no usable endpoint, got %#v", got)
			}
		})
	}
}

func TestPrioritizeUsesEachEndpointOnce(t *testing.T) {
	got := Prioritize(all4, policy("node,zone,region,*", 1), here)
	var seen []netip.AddrPort
	for _, p := range got {
		for _, e := range p.Endpoints {
			if slices.Contains(seen, e.Addr) {
				t.Errorf("endpoint %v in two priorities", e.Addr)
			}
			seen = append(seen, e.Addr)
		}
	}
	if len(seen) != len(all4) {
		t.Errorf("placed %d endpoints, want %d", len(seen), len(all4))
	}
}

func TestParseTiers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "node,zone,region,*", want: "node,zone,region,*"},
		{in: " zone , * ", want: "zone,*"},
		{in: "node", want: "node"},
		{in: "*", want: "*"},
		{in: "", wantErr: `unknown tier ""`},
		{in: "node,,zone", wantErr: `unknown tier ""`},
		{in: "rack,*", wantErr: `unknown tier "rack"`},
		{in: "node,node", wantErr: `"node" listed twice`},
		{in: "*,node", wantErr: `"node" after "*"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTiers(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseTiers(%q) error = %v, want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("ParseTiers(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestPolicyFor(t *testing.T) {
	svc := func(mut func(*discovery.Service)) *discovery.Service {
		s := &discovery.Service{Key: discovery.ServiceKey{Namespace: "ns", Name: "be1"}}
		mut(s)
		return s
	}
	annotated := func(kv ...string) func(*discovery.Service) {
		return func(s *discovery.Service) {
			s.Annotations = map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				s.Annotations[kv[i]] = kv[i+1]
			}
		}
	}
	for _, tc := range []struct {
		name     string
		svc      *discovery.Service
		want     string // "source tiers min"
		wantErrs []string
	}{
		{
			name: "nothing set uses the agent default",
			svc:  svc(func(*discovery.Service) {}),
			want: "default node,zone,region,* 1",
		},
		{
			name: "annotation wins over everything",
			svc: svc(func(s *discovery.Service) {
				annotated(AnnotationTopology, "region,*")(s)
				s.InternalTrafficLocal = true
				s.TrafficDistribution = "PreferSameNode"
			}),
			want: "annotation region,* 1",
		},
		{
			name: "internalTrafficPolicy Local is node only, strict",
			svc:  svc(func(s *discovery.Service) { s.InternalTrafficLocal = true; s.TrafficDistribution = "PreferClose" }),
			want: "internalTrafficPolicy node 1",
		},
		{
			name: "PreferSameNode",
			svc:  svc(func(s *discovery.Service) { s.TrafficDistribution = "PreferSameNode" }),
			want: "trafficDistribution node,zone,* 1",
		},
		{
			name: "PreferSameZone",
			svc:  svc(func(s *discovery.Service) { s.TrafficDistribution = "PreferSameZone" }),
			want: "trafficDistribution zone,* 1",
		},
		{
			name: "PreferClose is the old name of PreferSameZone",
			svc:  svc(func(s *discovery.Service) { s.TrafficDistribution = "PreferClose" }),
			want: "trafficDistribution zone,* 1",
		},
		{
			name: "unknown trafficDistribution falls through to the default",
			svc:  svc(func(s *discovery.Service) { s.TrafficDistribution = "PreferSomethingNew" }),
			want: "default node,zone,region,* 1",
		},
		{
			name: "a typo in the topology annotation falls back to the next rule and is reported",
			svc: svc(func(s *discovery.Service) {
				annotated(AnnotationTopology, "node,zoen,*")(s)
				s.TrafficDistribution = "PreferSameZone"
			}),
			want:     "trafficDistribution zone,* 1",
			wantErrs: []string{`annotation nodexds.io/topology="node,zoen,*": unknown tier "zoen"`},
		},
		{
			name: "min-tier-endpoints is read alongside any rule",
			svc:  svc(annotated(AnnotationMinTierEndpoints, "3")),
			want: "default node,zone,region,* 3",
		},
		{
			name:     "a bad min-tier-endpoints keeps the default of 1 and is reported",
			svc:      svc(annotated(AnnotationMinTierEndpoints, "0", AnnotationTopology, "node,*")),
			want:     "annotation node,* 1",
			wantErrs: []string{`nodexds.io/min-tier-endpoints="0": must be between 1 and 10000`},
		},
		{
			name:     "a non-numeric min-tier-endpoints is reported",
			svc:      svc(annotated(AnnotationMinTierEndpoints, "two")),
			want:     "default node,zone,region,* 1",
			wantErrs: []string{`nodexds.io/min-tier-endpoints="two"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, errs := PolicyFor(tc.svc, DefaultTiers)
			if got := fmt.Sprintf("%s %s %d", p.Source, p.Tiers, p.MinTierEndpoints); got != tc.want {
				t.Errorf("policy = %q, want %q", got, tc.want)
			}
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("errors = %v, want %d", errs, len(tc.wantErrs))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.wantErrs[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e, tc.wantErrs[i])
				}
			}
		})
	}
}
