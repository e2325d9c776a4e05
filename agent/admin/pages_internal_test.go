package admin

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// client is a synthetic stream subscribing to names by type URL.
func client(stream uint64, node string, byType map[string][]string) xds.ClientStatus {
	cl := xds.ClientStatus{Stream: stream, Node: node}
	for _, typ := range []string{xds.ListenerType, xds.RouteType, xds.ClusterType, xds.EndpointType} {
		if ns := byType[typ]; ns != nil {
			ts := xds.TypeStatus{Type: xds.ShortType(typ), TypeURL: typ}
			for _, n := range ns {
				ts.Resources = append(ts.Resources, xds.ResourceStatus{Name: n, State: xds.Synced})
			}
			cl.Types = append(cl.Types, ts)
		}
	}
	return cl
}

const (
	be1 = "be1.default.svc.cluster.local:8080"
	be2 = "be2.default.svc.cluster.local:8080"
	be3 = "be3.other.svc.cluster.local:9090"
)

var parser = names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"}

func TestPageClients(t *testing.T) {
	all := []xds.ClientStatus{
		client(1, "ns/a", map[string][]string{xds.ListenerType: {"be1:8080"}, xds.EndpointType: {be1}}),
		client(2, "ns/b", map[string][]string{xds.ClusterType: {be2, be2 + "|none"}}),
		client(3, "ns/c", map[string][]string{xds.ListenerType: {"be3.other:9090"}}),
		client(4, "ns/c", map[string][]string{xds.ClusterType: {be1}}),
		client(5, "ns/d", nil),
	}
	for _, tc := range []struct {
		name    string
		query   string
		streams []uint64
		total   int
		next    string
	}{
		{"no filter lists every stream", "", []uint64{1, 2, 3, 4, 5}, 5, ""},
		{"a node id selects all its streams", "client=ns/c", []uint64{3, 4}, 2, ""},
		{"a stream number selects that stream", "client=2", []uint64{2}, 1, ""},
		{"an unknown client selects nothing", "client=ns/zz", []uint64{}, 0, ""},
		{"a Service selects its subscribers by listener and by cluster", "service=default/be1", []uint64{1, 4}, 2, ""},
		{"a Service's derived clusters count", "service=default/be2", []uint64{2}, 1, ""},
		{"a listener alias in another namespace counts", "service=other/be3", []uint64{3}, 1, ""},
		{"both filters must hold", "service=default/be1&client=ns/c", []uint64{4}, 1, ""},
		{"limit cuts a page and links the next", "limit=2", []uint64{1, 2}, 5, "/debug/clients?limit=2&offset=2"},
		{"offset starts the page later", "limit=2&offset=2", []uint64{3, 4}, 5, "/debug/clients?limit=2&offset=4"},
		{"the last page links nothing", "limit=2&offset=4", []uint64{5}, 5, ""},
		{"an offset past the end is an empty page with the total", "offset=9", []uint64{}, 5, ""},
		{"filters stay in the next link", "service=default/be1&limit=1", []uint64{1}, 2, "/debug/clients?limit=1&offset=1&service=default%2Fbe1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &url.URL{Path: "/debug/clients", RawQuery: tc.query}
			q, err := readQuery(u.Query())
			if err != nil {
				t.Fatal(err)
			}
			out := pageClients(all, q, parser)
			out.Next = next(u, q, len(out.Clients), out.Total)
			got := []uint64{}
			for _, c := range out.Clients {
				got = append(got, c.Stream)
			}
			if !slices.Equal(got, tc.streams) || out.Total != tc.total || out.Next != tc.next {
				t.Errorf("streams %v total %d next %q, want %v total %d next %q", got, out.Total, out.Next, tc.streams, tc.total, tc.next)
			}
		})
	}
}

func TestBadDebugQueriesAreRefused(t *testing.T) {
	for _, query := range []string{
		"limit=0", "limit=-1", "limit=501", "limit=many", "offset=-1", "offset=x",
		"service=be1", "service=/be1", "service=default/",
	} {
		t.Run(query, func(t *testing.T) {
			v, _ := url.ParseQuery(query)
			if _, err := readQuery(v); err == nil {
				t.Errorf("%s accepted", query)
			}
		})
	}
	v, _ := url.ParseQuery("limit=500")
	if q, err := readQuery(v); err != nil || q.limit != MaxPageLimit {
		t.Errorf("limit=500: %+v %v, want the maximum accepted", q, err)
	}
	if q, _ := readQuery(url.Values{}); q.limit != DefaultPageLimit || q.offset != 0 {
		t.Errorf("no parameters: %+v, want limit %d from 0", q, DefaultPageLimit)
	}
}

// heavy is a client as large as the xds server lets one be, in the shape that
// costs the debug page most: every type at the name limit, long names.
func heavy(stream uint64, names int) xds.ClientStatus {
	long := strings.Repeat("x", 100_000)
	byType := map[string][]string{}
	for _, typ := range []string{xds.ListenerType, xds.RouteType, xds.ClusterType, xds.EndpointType} {
		ns := make([]string, names)
		for i := range ns {
			ns[i] = long[i:] // distinct names sharing long's bytes
		}
		byType[typ] = ns
	}
	return client(stream, fmt.Sprintf("heavy/%04d", stream), byType)
}

func TestDebugPagesStayBoundedWhateverClientsDo(t *testing.T) {
	// 5,000 streams, the first 100 (in node id order) at their heaviest.
	all := make([]xds.ClientStatus, 0, 5000)
	for i := range 5000 {
		if i < 100 {
			all = append(all, heavy(uint64(i), 1000))
			continue
		}
		all = append(all, client(uint64(i), fmt.Sprintf("light/%04d", i), map[string][]string{
			xds.ListenerType: {"be1:8080"}, xds.EndpointType: {be1},
		}))
	}
	// What one page can hold at most: limit clients of four types of
	// agent.ListCap names of MaxNameShown bytes (plus the clip note), with
	// room for the fields around them.
	perResource := MaxNameShown + 200
	perClient := 4*(agent.ListCap*perResource+1000) + 2000

	t.Run("a default page of /debug/clients", func(t *testing.T) {
		q, _ := readQuery(url.Values{})
		out := pageClients(all, q, parser)
		b, _ := json.Marshal(out)
		if out.Total != 5000 || len(out.Clients) != DefaultPageLimit {
			t.Fatalf("total %d, %d clients; want 5000 and a page of %d", out.Total, len(out.Clients), DefaultPageLimit)
		}
		if max := DefaultPageLimit * perClient; len(b) > max {
			t.Errorf("page is %d bytes, want at most %d", len(b), max)
		}
		c := out.Clients[0]
		if len(c.Types) != 4 || c.Types[0].ResourcesTotal != 1000 || len(c.Types[0].Resources) != agent.ListCap ||
			len(c.Types[0].Resources[0].Name) > MaxNameShown+20 || !strings.Contains(c.Types[0].Resources[0].Name, "bytes)") {
			t.Errorf("heavy client shown with %d types, %d of %d names, name of %d bytes; want %d of 1000 names, clipped",
				len(c.Types), len(c.Types[0].Resources), c.Types[0].ResourcesTotal, len(c.Types[0].Resources[0].Name), agent.ListCap)
		}
		t.Logf("default page of 5,000 streams (100 at the limits): %d bytes", len(b))
		// The page was cut from copies: the snapshot handed in is untouched.
		if len(all[0].Types[0].Resources) != 1000 || len(all[0].Types[0].Resources[0].Name) < 100_000 {
			t.Errorf("pageClients changed its input")
		}
	})

	t.Run("a Service with 5,000 subscribers on /debug/services", func(t *testing.T) {
		v := agent.View{Total: 1, Services: []agent.ServiceView{{Cluster: be1, Service: "default/be1", Port: 8080, Listeners: []string{"be1:8080"}}}}
		out := joinClients(v, all)
		b, _ := json.Marshal(out)
		s := out.Services[0]
		if s.ClientsTotal != 4900 || len(s.Clients) != agent.ListCap {
			t.Fatalf("be1 shows %d of %d clients, want %d of 4900", len(s.Clients), s.ClientsTotal, agent.ListCap)
		}
		if len(b) > agent.ListCap*500 {
			t.Errorf("page is %d bytes, want at most %d", len(b), agent.ListCap*500)
		}
		if c := s.Clients[0]; c.Node != "light/0100" || !slices.Equal(c.Via, []string{"be1:8080"}) ||
			!slices.Equal(c.Types, []string{"LDS", "EDS"}) || c.EDS != xds.Synced {
			t.Errorf("first client = %+v, want light/0100 via be1:8080 on LDS and EDS, EDS SYNCED", c)
		}
	})
}

func TestJoinClientsMatchesThePagesPortsOnly(t *testing.T) {
	v := agent.View{Total: 3, Services: []agent.ServiceView{
		{Cluster: be1, Listeners: []string{"be1:8080", "be1.default:8080"}},
		{Cluster: be2, Listeners: []string{}},
	}}
	clients := []xds.ClientStatus{
		client(1, "a", map[string][]string{xds.ListenerType: {"be1.default:8080", "be1:8080"}, xds.RouteType: {be1}}),
		client(2, "b", map[string][]string{xds.ClusterType: {be2 + "|endpoint|10.0.0.1:80", be3}, xds.EndpointType: {be2}}),
		client(3, "c", map[string][]string{xds.ClusterType: {"be22.default.svc.cluster.local:8080"}}),
	}
	d := joinClients(v, clients)
	want := map[string][]ServiceClient{
		be1: {{Node: "a", Stream: 1, Via: []string{"be1.default:8080", "be1:8080"}, Types: []string{"LDS", "RDS"}}},
		be2: {{Node: "b", Stream: 2, Via: []string{}, Types: []string{"CDS", "EDS"}, EDS: xds.Synced}},
	}
	for _, s := range d.Services {
		if got, _ := json.Marshal(s.Clients); string(got) != mustJSON(want[s.Cluster]) || s.ClientsTotal != len(want[s.Cluster]) {
			t.Errorf("%s clients = %s (total %d), want %s", s.Cluster, got, s.ClientsTotal, mustJSON(want[s.Cluster]))
		}
	}
	if d.Total != 3 {
		t.Errorf("total = %d, want the view's 3", d.Total)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestSubscribedByMatchesThroughListenersAndDerivedClusters(t *testing.T) {
	match := subscribedBy([]xds.ClientStatus{
		client(1, "a", map[string][]string{xds.ListenerType: {"be1:8080"}}),
		client(2, "b", map[string][]string{xds.ClusterType: {be2 + "|none"}}),
	})
	for _, tc := range []struct {
		name      string
		cluster   string
		listeners []string
		want      bool
	}{
		{"a port reached only through a dialled listener matches", be1, []string{"be1.default:8080", "be1:8080"}, true},
		{"a port whose derived cluster is named matches", be2, nil, true},
		{"a port nobody names does not match", be3, []string{"be3.other:9090"}, false},
		{"a listener alias the client did not dial does not match", be1, []string{"be1.default:8080"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := match(tc.cluster, tc.listeners); got != tc.want {
				t.Errorf("match(%s, %v) = %t, want %t", tc.cluster, tc.listeners, got, tc.want)
			}
		})
	}
}

func TestServicesTextSaysWhereLateClientsAreInAMove(t *testing.T) {
	var b strings.Builder
	writeServicesText(&b, ServicesDebug{Total: 2, Services: []ServiceDebug{
		{ServiceView: agent.ServiceView{Cluster: be1, Exists: true, MTLS: "disabled"}},
		{ServiceView: agent.ServiceView{Cluster: be2, Exists: true, MTLS: "strict", AllowFrom: []string{"web/frontend", "ops/*"},
			LateClients: &agent.LateClientsView{Generation: 1796674153, TLS: true, Moving: "filling", Next: "2026-12-07T20:09:35.1Z"}}},
	}})
	got := b.String()
	want := "  mtls strict  allow-from web/frontend, ops/*  grpc-js/C-core clients: generation 1796674153 (TLS), filling at 2026-12-07T20:09:35.1Z\n"
	if !strings.Contains(got, want) || strings.Count(got, "  mtls ") != 1 {
		t.Errorf("text page:\n%s\nwant one mtls line, for be2:\n%s", got, want)
	}
}
