package discovery

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// showSelections renders Selecting's answer as "ns/svc name:port".
func showSelections(sel []Selection) string {
	var s []string
	for _, x := range sel {
		s = append(s, fmt.Sprintf("%s %s:%d", x.Service, x.Port.Name, x.Port.Port))
	}
	return strings.Join(s, ", ")
}

func showAddrs(addrs []netip.Addr) string {
	var s []string
	for _, a := range addrs {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}

func TestStoreSelecting(t *testing.T) {
	be2 := ServiceKey{Namespace: "ns", Name: "be2"}
	other := ServiceKey{Namespace: "other", Name: "be1"}
	service := func(k ServiceKey, family string, ports ...Port) *Service {
		return &Service{Key: k, IPFamily: family, Ports: ports}
	}
	sliceOf := func(k ServiceKey, name, family string, ports []Port, eps ...SliceEndpoint) *Slice {
		return &Slice{Service: k, Name: name, AddressType: family, Ports: ports, Endpoints: eps}
	}
	grpc80, admin90 := Port{Name: "grpc", Port: 80}, Port{Name: "admin", Port: 90}
	grpc8080, admin9090 := []Port{{Name: "grpc", Port: 8080}}, []Port{{Name: "admin", Port: 9090}}
	drained := sep("10.0.0.1", "n1", false)
	drained.Terminating = true
	for _, tc := range []struct {
		name   string
		node   string // the local node; "n1" unless set
		events []Event
		// local is Change.Local of the last event.
		local string
		// selecting maps an ip:port to Selecting's answer for it.
		selecting map[string]string
	}{
		{
			name: "a pod selected by two Services on different ports",
			events: []Event{
				{Service: svc(grpc80)},
				{Service: service(be2, "IPv4", admin90)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
				{Slice: sliceOf(be2, "be2-a", "IPv4", admin9090, sep("10.0.0.1", "n1", true))},
			},
			local: "10.0.0.1",
			selecting: map[string]string{
				"10.0.0.1:8080": "ns/be1 grpc:80",
				"10.0.0.1:9090": "ns/be2 admin:90",
				"10.0.0.1:80":   "", // the Service port is not what the server listens on
				"10.0.0.2:8080": "",
			},
		},
		{
			name: "two Services on one target port, sorted by Service",
			events: []Event{
				{Service: service(other, "IPv4", Port{Name: "rpc", Port: 70})},
				{Service: service(be2, "IPv4", grpc80)},
				{Service: svc(grpc80)},
				{Slice: sliceOf(other, "be1-a", "IPv4", []Port{{Name: "rpc", Port: 8080}}, sep("10.0.0.1", "n1", true))},
				{Slice: sliceOf(be2, "be2-a", "IPv4", grpc8080, sep("10.0.0.1", "n1", true))},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
			},
			local:     "10.0.0.1",
			selecting: map[string]string{"10.0.0.1:8080": "ns/be1 grpc:80, ns/be2 grpc:80, other/be1 rpc:70"},
		},
		{
			name: "the slice port is named after the Service port, whatever the container calls it",
			events: []Event{
				{Service: svc(grpc80, admin90)},
				// targetPort: server (a container port named "server"); the
				// slice names it after the Service port.
				{Slice: &Slice{Service: be1, Name: "be1-a", AddressType: "IPv4",
					Ports:     []Port{{Name: "grpc", Port: 50051}, {Name: "admin", Port: 50051}, {Name: "stale", Port: 9000}},
					Endpoints: []SliceEndpoint{sep("10.0.0.1", "n1", true)}}},
			},
			local: "10.0.0.1",
			selecting: map[string]string{
				"10.0.0.1:50051": "ns/be1 grpc:80, ns/be1 admin:90",
				"10.0.0.1:9000":  "", // no Service port of that name
			},
		},
		{
			name: "a slice moved to another Service",
			events: []Event{
				{Service: svc(grpc80)},
				{Service: service(be2, "IPv4", grpc80)},
				{Slice: slice("s1", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.9", "n2", true))},
				{Slice: sliceOf(be2, "s1", "IPv4", grpc8080, sep("10.0.0.1", "n1", true), sep("10.0.0.9", "n2", true))},
			},
			local:     "10.0.0.1",
			selecting: map[string]string{"10.0.0.1:8080": "ns/be2 grpc:80"},
		},
		{
			name: "an endpoint on another node is ignored",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
				{Slice: slice("be1-b", "IPv4", grpc8080[0], sep("10.0.0.2", "n2", true), SliceEndpoint{Addr: mustAddr("10.0.0.3"), Ready: true})},
			},
			local: "",
			selecting: map[string]string{
				"10.0.0.1:8080": "ns/be1 grpc:80",
				"10.0.0.2:8080": "",
				"10.0.0.3:8080": "", // no nodeName: not known to be here
			},
		},
		{
			name: "an IPv6 Service: its IPv6 slices select, its IPv4 ones do not",
			events: []Event{
				{Service: &Service{Key: be1, IPFamily: "IPv6", Ports: []Port{grpc80}}},
				{Slice: slice("v4", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
				{Slice: slice("v6", "IPv6", grpc8080[0], sep("fd00::1", "n1", true))},
			},
			local: "fd00::1",
			selecting: map[string]string{
				"[fd00::1]:8080":   "ns/be1 grpc:80",
				"10.0.0.1:8080":    "",
				"[fd00::1%1]:8080": "ns/be1 grpc:80", // a peer's zone is not part of the pod's address
			},
		},
		{
			name: "a Service without ipFamilies serves IPv4 when it has IPv4 slices",
			events: []Event{
				{Service: &Service{Key: be1, Ports: []Port{grpc80}}},
				{Slice: slice("v6", "IPv6", grpc8080[0], sep("fd00::1", "n1", true))},
				{Slice: slice("v4", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
			},
			local: "10.0.0.1",
			selecting: map[string]string{
				"10.0.0.1:8080":          "ns/be1 grpc:80",
				"[::ffff:10.0.0.1]:8080": "ns/be1 grpc:80", // as a dual-stack listener sees an IPv4 peer
				"[fd00::1]:8080":         "",
			},
		},
		{
			name: "a deleted slice: Local reports its addresses, and they are no longer selected",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.2", "n1", true), sep("10.0.0.9", "n2", true))},
				{Slice: slice("be1-b", "IPv4", grpc8080[0], sep("10.0.0.3", "n1", true))},
				{Slice: &Slice{Service: ServiceKey{Namespace: "ns"}, Name: "be1-a"}, Deleted: true},
			},
			local: "10.0.0.1 10.0.0.2",
			selecting: map[string]string{
				"10.0.0.1:8080": "",
				"10.0.0.2:8080": "",
				"10.0.0.3:8080": "ns/be1 grpc:80",
			},
		},
		{
			name: "endpoints not ready, not serving, terminating are still selected; their conditions changing is Local",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.2", "n1", true))},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], drained, sep("10.0.0.2", "n1", true))},
			},
			local:     "10.0.0.1",
			selecting: map[string]string{"10.0.0.1:8080": "ns/be1 grpc:80"},
		},
		{
			name: "a change to other nodes' endpoints is not Local",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.9", "n2", true))},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.9", "n2", false), sep("10.0.0.8", "n2", true))},
			},
			local:     "",
			selecting: map[string]string{"10.0.0.1:8080": "ns/be1 grpc:80"},
		},
		{
			name: "a slice's ports changing is Local for all its local endpoints",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.2", "n1", true), sep("10.0.0.1", "n1", true))},
				{Slice: slice("be1-a", "IPv4", Port{Name: "grpc", Port: 8081}, sep("10.0.0.2", "n1", true), sep("10.0.0.1", "n1", true))},
			},
			local: "10.0.0.1 10.0.0.2",
			selecting: map[string]string{
				"10.0.0.1:8080": "",
				"10.0.0.1:8081": "ns/be1 grpc:80",
			},
		},
		{
			name: "an endpoint moving to this node, another leaving it",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.2", "n2", true))},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n2", true), sep("10.0.0.2", "n1", true))},
			},
			local: "10.0.0.1 10.0.0.2",
			selecting: map[string]string{
				"10.0.0.1:8080": "",
				"10.0.0.2:8080": "ns/be1 grpc:80",
			},
		},
		{
			name: "an address in two slices of a Service (a controller moving it) is selected once, until both drop it",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("old", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
				{Slice: slice("new", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
				{Slice: slice("old", "IPv4", grpc8080[0])},
			},
			local:     "10.0.0.1",
			selecting: map[string]string{"10.0.0.1:8080": "ns/be1 grpc:80"},
		},
		{
			name: "an address listed twice in one slice is reported once",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true), sep("10.0.0.1", "n1", false))},
				{Slice: &Slice{Service: be1, Name: "be1-a"}, Deleted: true},
			},
			local:     "10.0.0.1",
			selecting: map[string]string{"10.0.0.1:8080": ""},
		},
		{
			name: "only Services the store holds select; one deleted no longer does",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "n1", true))},
				{Slice: sliceOf(be2, "be2-a", "IPv4", grpc8080, sep("10.0.0.1", "n1", true))},
				{Service: &Service{Key: be1}, Deleted: true},
			},
			local:     "",
			selecting: map[string]string{"10.0.0.1:8080": ""},
		},
		{
			name: "no local node: nothing is indexed",
			node: "-",
			events: []Event{
				{Service: svc(grpc80)},
				{Slice: slice("be1-a", "IPv4", grpc8080[0], sep("10.0.0.1", "", true))},
			},
			local:     "",
			selecting: map[string]string{"10.0.0.1:8080": ""},
		},
		{
			name: "port 0 is nobody's",
			events: []Event{
				{Service: svc(Port{Port: 80})},
				{Slice: slice("be1-a", "IPv4", Port{}, sep("10.0.0.1", "n1", true))},
			},
			local:     "10.0.0.1",
			selecting: map[string]string{"10.0.0.1:0": ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			switch tc.node {
			case "":
				s.SetLocalNode("n1")
			case "-":
				s.SetLocalNode("")
			default:
				s.SetLocalNode(tc.node)
			}
			var c Change
			for _, e := range tc.events {
				c = s.Apply(e)
			}
			if got := showAddrs(c.Local); got != tc.local {
				t.Errorf("Change.Local of the last event = %q, want %q", got, tc.local)
			}
			checkLocalIndex(t, s)
			for ap, want := range tc.selecting {
				if got := showSelections(s.Selecting(netip.MustParseAddrPort(ap))); got != want {
					t.Errorf("Selecting(%s) = %q, want %q", ap, got, want)
				}
			}
		})
	}
}

// SetLocalNode after the store holds slices indexes them, reporting no
// Change; naming another node re-indexes.
func TestSetLocalNodeIndexesWhatTheStoreHolds(t *testing.T) {
	s := NewStore()
	s.Apply(Event{Service: svc(Port{Name: "grpc", Port: 80})})
	s.Apply(Event{Slice: slice("be1-a", "IPv4", Port{Name: "grpc", Port: 8080}, sep("10.0.0.1", "n1", true), sep("10.0.0.2", "n2", true))})
	ap1, ap2 := netip.MustParseAddrPort("10.0.0.1:8080"), netip.MustParseAddrPort("10.0.0.2:8080")
	if got := s.Selecting(ap1); got != nil {
		t.Errorf("no local node: Selecting = %v", got)
	}
	s.SetLocalNode("n1")
	if got := showSelections(s.Selecting(ap1)); got != "ns/be1 grpc:80" {
		t.Errorf("after SetLocalNode(n1): Selecting(%v) = %q", ap1, got)
	}
	s.SetLocalNode("n2")
	if got, got2 := showSelections(s.Selecting(ap1)), showSelections(s.Selecting(ap2)); got != "" || got2 != "ns/be1 grpc:80" {
		t.Errorf("after SetLocalNode(n2): Selecting = %q, %q", got, got2)
	}
	if c := s.Apply(Event{Slice: &Slice{Service: be1, Name: "be1-a"}, Deleted: true}); showAddrs(c.Local) != "10.0.0.2" {
		t.Errorf("deleting the slice: Local = %v, want n2's endpoint", c.Local)
	}
	if len(s.local.byAddr)+len(s.local.positions) != 0 {
		t.Errorf("the index still holds %v, %v", s.local.byAddr, s.local.positions)
	}
}

// checkLocalIndex compares the store's local index, kept up to date event
// by event, with one built afresh from the slices it holds: nothing left
// behind by a slice replaced, moved or deleted.
func checkLocalIndex(t *testing.T, s *Store) {
	t.Helper()
	render := func(x localIndex) string {
		var lines []string
		for a, refs := range x.byAddr {
			for _, sl := range refs {
				lines = append(lines, fmt.Sprintf("%v in %s/%s %p", a, sl.Service, sl.Name, sl))
			}
		}
		for sl, pos := range x.positions {
			lines = append(lines, fmt.Sprintf("%s/%s %p at %v", sl.Service, sl.Name, sl, pos))
		}
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	fresh := &Store{slices: s.slices}
	fresh.SetLocalNode(s.local.node)
	if got, want := render(s.local), render(fresh.local); got != want {
		t.Errorf("local index:\n%s\nbuilt afresh:\n%s", got, want)
	}
}
