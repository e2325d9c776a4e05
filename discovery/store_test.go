package discovery

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var be1 = ServiceKey{Namespace: "ns", Name: "be1"}

func svc(ports ...Port) *Service {
	return &Service{Key: be1, Ports: ports, IPFamily: "IPv4"}
}

func slice(name, family string, port Port, eps ...SliceEndpoint) *Slice {
	return &Slice{Service: be1, Name: name, AddressType: family, Ports: []Port{port}, Endpoints: eps}
}

func sep(addr, node string, ready bool) SliceEndpoint {
	return SliceEndpoint{Addr: netip.MustParseAddr(addr), Node: node, Ready: ready, Serving: ready}
}

// show renders endpoints as "ip:port@node/zone/region(ready)".
func show(eps []Endpoint) string {
	var s []string
	for _, e := range eps {
		s = append(s, fmt.Sprintf("%v@%s/%s/%s(%t)", e.Addr, e.Node, e.Zone, e.Region, e.Ready))
	}
	return strings.Join(s, " ")
}

func TestStoreEndpoints(t *testing.T) {
	grpc := Port{Name: "grpc", Port: 8080}
	for _, tc := range []struct {
		name   string
		events []Event
		port   string
		want   string
	}{
		{
			name: "slices of one service are merged and sorted",
			events: []Event{
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s2", "IPv4", grpc, sep("10.0.0.2", "n1", true))},
				{Slice: slice("s1", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
			},
			port: "grpc",
			want: "10.0.0.1:8080@n1//(true) 10.0.0.2:8080@n1//(true)",
		},
		{
			name: "an address in two slices appears once, with its ready copy",
			events: []Event{
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("old", "IPv4", grpc, sep("10.0.0.1", "n1", false))},
				{Slice: slice("new", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
			},
			port: "grpc",
			want: "10.0.0.1:8080@n1//(true)",
		},
		{
			name: "region and missing zone come from the endpoint's node",
			events: []Event{
				{Node: &Node{Name: "n1", Zone: "z1", Region: "r1"}},
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s1", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
			},
			port: "grpc",
			want: "10.0.0.1:8080@n1/z1/r1(true)",
		},
		{
			name: "dual-stack: only the primary family is served, so no pod counts twice",
			events: []Event{
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("v4", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
				{Slice: slice("v6", "IPv6", grpc, sep("fd00::1", "n1", true))},
			},
			port: "grpc",
			want: "10.0.0.1:8080@n1//(true)",
		},
		{
			name: "topology-parity: an endpoint without nodeName takes its region from its zone's Nodes",
			events: []Event{
				{Node: &Node{Name: "n1", Zone: "z1", Region: "r1"}},
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s1", "IPv4", grpc, SliceEndpoint{Addr: mustAddr("10.0.0.1"), Zone: "z1", Ready: true, Serving: true})},
			},
			port: "grpc",
			want: "10.0.0.1:8080@/z1/r1(true)",
		},
		{
			name: "topology-parity: an endpoint on a Node not seen yet takes its region from its zone's Nodes",
			events: []Event{
				{Node: &Node{Name: "n1", Zone: "z1", Region: "r1"}},
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s1", "IPv4", grpc, SliceEndpoint{Addr: mustAddr("10.0.0.1"), Node: "new", Zone: "z1", Ready: true, Serving: true})},
			},
			port: "grpc",
			want: "10.0.0.1:8080@new/z1/r1(true)",
		},
		{
			name: "topology-parity: a zone whose Nodes disagree on their region places nothing in a region",
			events: []Event{
				{Node: &Node{Name: "n1", Zone: "z1", Region: "r1"}},
				{Node: &Node{Name: "n2", Zone: "z1", Region: "r2"}},
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s1", "IPv4", grpc, SliceEndpoint{Addr: mustAddr("10.0.0.1"), Zone: "z1", Ready: true, Serving: true})},
			},
			port: "grpc",
			want: "10.0.0.1:8080@/z1/(true)",
		},
		{
			name: "topology-parity: a zone's region follows its Nodes moving and leaving",
			events: []Event{
				{Node: &Node{Name: "n1", Zone: "z1", Region: "r1"}},
				{Node: &Node{Name: "n2", Zone: "z1", Region: "r2"}},
				{Node: &Node{Name: "n1", Zone: "z9", Region: "r1"}},
				{Node: &Node{Name: "n3", Zone: "z1", Region: "r3"}},
				{Node: &Node{Name: "n3"}, Deleted: true},
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s1", "IPv4", grpc, SliceEndpoint{Addr: mustAddr("10.0.0.1"), Zone: "z1", Ready: true, Serving: true})},
			},
			port: "grpc",
			want: "10.0.0.1:8080@/z1/r2(true)",
		},
		{
			name: "topology-parity: ipFamilies [IPv6, IPv4] serves only the IPv6 slices",
			events: []Event{
				{Service: &Service{Key: be1, IPFamily: "IPv6", Ports: []Port{{Name: "grpc", Port: 80}}}},
				{Slice: slice("v4", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
				{Slice: slice("v6", "IPv6", grpc, sep("fd00::1", "n1", true))},
			},
			port: "grpc",
			want: "[fd00::1]:8080@n1//(true)",
		},
		{
			name: "topology-parity: no ipFamilies serves the IPv4 slices only, so no dual-stack pod counts twice",
			events: []Event{
				{Service: &Service{Key: be1, Ports: []Port{{Name: "grpc", Port: 80}}}},
				{Slice: slice("v6", "IPv6", grpc, sep("fd00::1", "n1", true))},
				{Slice: slice("v4", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
			},
			port: "grpc",
			want: "10.0.0.1:8080@n1//(true)",
		},
		{
			name: "topology-parity: no ipFamilies and only IPv6 slices serves them",
			events: []Event{
				{Service: &Service{Key: be1, Ports: []Port{{Name: "grpc", Port: 80}}}},
				{Slice: slice("v6", "IPv6", grpc, sep("fd00::1", "n1", true))},
			},
			port: "grpc",
			want: "[fd00::1]:8080@n1//(true)",
		},
		{
			name: "a slice without the port contributes nothing to it",
			events: []Event{
				{Service: svc(Port{Name: "grpc", Port: 80}, Port{Name: "admin", Port: 90})},
				{Slice: slice("s1", "IPv4", Port{Name: "admin", Port: 9090}, sep("10.0.0.1", "n1", true))},
			},
			port: "grpc",
			want: "",
		},
		{
			name: "a deleted slice takes its endpoints with it",
			events: []Event{
				{Service: svc(Port{Name: "grpc", Port: 80})},
				{Slice: slice("s1", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
				{Slice: slice("s2", "IPv4", grpc, sep("10.0.0.2", "n1", true))},
				{Slice: &Slice{Service: be1, Name: "s1"}, Deleted: true},
			},
			port: "grpc",
			want: "10.0.0.2:8080@n1//(true)",
		},
		{
			name: "slices without their service serve nothing",
			events: []Event{
				{Slice: slice("s1", "IPv4", grpc, sep("10.0.0.1", "n1", true))},
			},
			port: "grpc",
			want: "",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			for _, e := range tc.events {
				s.Apply(e)
			}
			if got := show(s.Endpoints(be1, tc.port)); got != tc.want {
				t.Errorf("Endpoints:\n got  %s\n want %s", got, tc.want)
			}
		})
	}
}

func TestStoreReportsOnlyRealChanges(t *testing.T) {
	s := NewStore()
	if c := s.Apply(Event{Service: svc(Port{Port: 80})}); c.Service == nil || *c.Service != be1 {
		t.Errorf("new service: change = %+v", c)
	}
	if c := s.Apply(Event{Service: svc(Port{Port: 80})}); !c.None() {
		t.Errorf("equal update: change = %+v, want none", c)
	}
	if c := s.Apply(Event{Node: &Node{Name: "n1", Zone: "z"}}); c.Node != "n1" {
		t.Errorf("new node: change = %+v", c)
	}
	if c := s.Apply(Event{Node: &Node{Name: "n1", Zone: "z"}}); !c.None() {
		t.Errorf("node heartbeat: change = %+v, want none", c)
	}
	if c := s.Apply(Event{Slice: &Slice{Service: be1, Name: "gone"}, Deleted: true}); !c.None() {
		t.Errorf("deleting an unknown slice: change = %+v, want none", c)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestSliceRelabelledToAnotherServiceLeavesTheFirst(t *testing.T) {
	s := NewStore()
	be2 := ServiceKey{Namespace: "ns", Name: "be2"}
	grpc := Port{Name: "grpc", Port: 8080}
	s.Apply(Event{Service: svc(Port{Name: "grpc", Port: 80})})
	s.Apply(Event{Service: &Service{Key: be2, IPFamily: "IPv4", Ports: []Port{{Name: "grpc", Port: 80}}}})
	s.Apply(Event{Slice: slice("s1", "IPv4", grpc, sep("10.0.0.1", "n1", true))})
	moved := *slice("s1", "IPv4", grpc, sep("10.0.0.1", "n1", true))
	moved.Service = be2
	if c := s.Apply(Event{Slice: &moved}); c.Service == nil || *c.Service != be2 {
		t.Fatalf("change = %+v, want be2", c)
	}
	if got := s.TakeMoved(); len(got) != 1 || got[0] != be1 {
		t.Errorf("moved = %v, want be1", got)
	}
	if eps := s.Endpoints(be1, "grpc"); eps != nil {
		t.Errorf("be1 still serves %v", show(eps))
	}
	if eps := s.Endpoints(be2, "grpc"); len(eps) != 1 {
		t.Errorf("be2 serves %v, want the moved endpoint", show(eps))
	}
	// Deleting by name alone (the label is gone) finds the owner.
	if c := s.Apply(Event{Slice: &Slice{Service: ServiceKey{Namespace: "ns"}, Name: "s1"}, Deleted: true}); c.Service == nil || *c.Service != be2 {
		t.Errorf("delete by name: change = %+v, want be2", c)
	}
}

func TestStoreNamespaces(t *testing.T) {
	ns := func(name string, annotations ...string) *Namespace {
		n := &Namespace{Name: name}
		for i := 0; i+1 < len(annotations); i += 2 {
			if n.Annotations == nil {
				n.Annotations = map[string]string{}
			}
			n.Annotations[annotations[i]] = annotations[i+1]
		}
		return n
	}
	const mtls = AnnotationPrefix + "mtls"
	for _, tc := range []struct {
		name   string
		before []Event
		event  Event
		change string // Change.Namespace; "" for no Change
		want   *Namespace
	}{
		{name: "added with annotations", event: Event{Namespace: ns("a", mtls, "strict")}, change: "a", want: ns("a", mtls, "strict")},
		{name: "added without annotations is kept, no Change", event: Event{Namespace: ns("a")}, want: ns("a")},
		{
			name:   "annotation changed",
			before: []Event{{Namespace: ns("a", mtls, "permissive")}},
			event:  Event{Namespace: ns("a", mtls, "strict")}, change: "a", want: ns("a", mtls, "strict"),
		},
		{
			name:   "annotation added",
			before: []Event{{Namespace: ns("a")}},
			event:  Event{Namespace: ns("a", mtls, "strict")}, change: "a", want: ns("a", mtls, "strict"),
		},
		{
			name:   "annotation removed",
			before: []Event{{Namespace: ns("a", mtls, "strict")}},
			event:  Event{Namespace: ns("a")}, change: "a", want: ns("a"),
		},
		{
			name:   "annotations unchanged (a label or status write upstream)",
			before: []Event{{Namespace: ns("a", mtls, "strict")}},
			event:  Event{Namespace: ns("a", mtls, "strict")}, want: ns("a", mtls, "strict"),
		},
		{
			name:   "an empty map is no annotations",
			before: []Event{{Namespace: ns("a")}},
			event:  Event{Namespace: &Namespace{Name: "a", Annotations: map[string]string{}}}, want: &Namespace{Name: "a", Annotations: map[string]string{}},
		},
		{
			name:   "deleted with annotations",
			before: []Event{{Namespace: ns("a", mtls, "strict")}},
			event:  Event{Namespace: ns("a"), Deleted: true}, change: "a",
		},
		{
			name:   "deleted without annotations",
			before: []Event{{Namespace: ns("a")}},
			event:  Event{Namespace: ns("a"), Deleted: true},
		},
		{name: "deleting an unknown Namespace", event: Event{Namespace: ns("a"), Deleted: true}},
		{
			name:   "another Namespace's annotations are its own",
			before: []Event{{Namespace: ns("a", mtls, "strict")}},
			event:  Event{Namespace: ns("b", mtls, "strict")}, change: "b", want: ns("b", mtls, "strict"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			for _, e := range tc.before {
				s.Apply(e)
			}
			c := s.Apply(tc.event)
			if c.Namespace != tc.change || c.None() != (tc.change == "") {
				t.Errorf("change = %+v, want Namespace %q", c, tc.change)
			}
			got, ok := s.Namespace(tc.event.Namespace.Name)
			if tc.want == nil {
				if ok {
					t.Errorf("Namespace(%q) = %+v, want none", tc.event.Namespace.Name, got)
				}
				return
			}
			if !ok || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Namespace(%q) = %+v, %t; want %+v", tc.event.Namespace.Name, got, ok, tc.want)
			}
		})
	}
}
