package mesh

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/conformance"
)

const ns = "gateway-conformance-mesh"

// world is a cluster's Services, routes and grants, read from YAML.
type world struct {
	services map[discovery.ServiceKey]*discovery.Service
	routes   []*discovery.Route
	grants   []*discovery.Grant
}

// load reads the conformance suite's Services, then the documents given
// (fixture file names, or YAML text).
func load(t testing.TB, docs ...string) *world {
	t.Helper()
	w := &world{services: map[discovery.ServiceKey]*discovery.Service{}}
	var all []string
	for _, doc := range strings.Split(string(conformance.Manifests), "\n---\n") {
		if !strings.Contains(doc, "kind: Deployment") {
			all = append(all, doc)
		}
	}
	for _, d := range docs {
		if strings.HasSuffix(d, ".yaml") {
			b, err := conformance.Mesh.ReadFile("mesh/" + d)
			if err != nil {
				t.Fatal(err)
			}
			d = string(b)
		}
		all = append(all, d)
	}
	evs, err := discovery.ParseObjects([]byte(strings.Join(all, "\n---\n")))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		switch {
		case e.Service != nil:
			w.services[e.Service.Key] = e.Service
		case e.Route != nil:
			w.routes = append(w.routes, e.Route)
		case e.Grant != nil:
			w.grants = append(w.grants, e.Grant)
		}
	}
	return w
}

func (w *world) service(k discovery.ServiceKey) (*discovery.Service, bool) {
	s, ok := w.services[k]
	return s, ok
}

func (w *world) grantsOf(n string) []*discovery.Grant {
	var out []*discovery.Grant
	for _, g := range w.grants {
		if g.Namespace == n {
			out = append(out, g)
		}
	}
	return out
}

func (w *world) attached(k discovery.ServiceKey) []*discovery.Route {
	var out []*discovery.Route
	for _, r := range w.routes {
		for _, p := range r.ParentServices() {
			if p == k {
				out = append(out, r)
			}
		}
	}
	return out
}

// table routes port of Service name (in the conformance namespace) for a
// client of namespace client.
func (w *world) table(t *testing.T, name string, port int32, client string) *Table {
	t.Helper()
	k := discovery.ServiceKey{Namespace: ns, Name: name}
	svc, ok := w.services[k]
	if !ok {
		t.Fatalf("no Service %s", k)
	}
	p, ok := svc.PortNumber(port)
	if !ok {
		t.Fatalf("%s has no port %d", k, port)
	}
	return Translate(Input{Parent: k, Port: p, Client: client, Routes: w.attached(k), Service: w.service, Grants: w.grantsOf})
}

// send is what a gRPC client does with a table: the first rule whose match
// holds takes the request. It returns the rule's backends as "name:port*weight"
// (unresolved: "UNAVAILABLE*weight"), "no route" when none matches, and
// "today" for a nil table (the Service's own endpoints).
func send(tb *Table, path string, headers map[string]string) string {
	if tb == nil {
		return "today"
	}
	for _, r := range tb.Rules {
		if holds(r.Match, path, headers) {
			var out []string
			for _, b := range r.Backends {
				if b.Unresolved {
					out = append(out, fmt.Sprintf("UNAVAILABLE*%d", b.Weight))
					continue
				}
				out = append(out, fmt.Sprintf("%s:%d*%d", b.Service.Name, b.Port, b.Weight))
			}
			if len(out) == 0 {
				return "UNAVAILABLE"
			}
			return strings.Join(out, " ")
		}
	}
	return "no route"
}

func holds(m Match, path string, headers map[string]string) bool {
	switch m.Path.Kind {
	case ExactPath:
		if path != m.Path.Value {
			return false
		}
	case PrefixPath:
		if path != m.Path.Value && !strings.HasPrefix(path, m.Path.Value+"/") {
			return false
		}
	case RegexPath:
		if !regexp.MustCompile("^(?:" + m.Path.Value + ")$").MatchString(path) {
			return false
		}
	}
	for _, h := range m.Headers {
		v, ok := headers[h.Name]
		if !ok {
			return false
		}
		if h.Regex && !regexp.MustCompile("^(?:"+h.Value+")$").MatchString(v) || !h.Regex && v != h.Value {
			return false
		}
	}
	return true
}

type request struct {
	path    string
	headers map[string]string
	want    string
}

// TestConformanceFixtures runs the Gateway API's mesh fixtures, verbatim,
// with the requests their conformance tests send and the backends they
// expect.
func TestConformanceFixtures(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		service string
		port    int32
		sends   []request
	}{
		{"grpcroute-weight.yaml", "echo", 7070, []request{
			{"/grpc.testing.TestService/UnaryCall", nil, "echo-v1:7070*70 echo-v2:7070*30"},
		}},
		{"httproute-weight.yaml", "echo", 80, []request{
			{"/", nil, "echo-v1:8080*70 echo-v2:8080*30"},
		}},
		{"httproute-simple-same-namespace.yaml", "echo", 80, []request{
			{"/", nil, "echo-v1:8080*1"},
			{"/any/Method", nil, "echo-v1:8080*1"},
		}},
		{"httproute-matching.yaml", "echo", 80, []request{
			{"/", nil, "echo-v1:8080*1"},
			{"/example", nil, "echo-v1:8080*1"},
			{"/", map[string]string{"version": "one"}, "echo-v1:8080*1"},
			{"/v2", nil, "echo-v2:8080*1"},
			{"/v2/example", nil, "echo-v2:8080*1"},
			{"/", map[string]string{"version": "two"}, "echo-v2:8080*1"},
			{"/v2/", nil, "echo-v2:8080*1"},
			{"/v2example", nil, "echo-v1:8080*1"},
			{"/foo/v2/example", nil, "echo-v1:8080*1"},
		}},
		{"httproute-named-rule.yaml", "echo", 80, []request{
			{"/named", nil, "echo-v1:8080*1"},
			{"/unnamed", nil, "echo-v2:8080*1"},
			{"/other", nil, "no route"},
		}},
		{"mesh-split.yaml", "echo", 80, []request{
			{"/v1", nil, "echo-v1:80*1"},
			{"/v2", nil, "echo-v2:80*1"},
			{"/v3", nil, "no route"},
		}},
		{"mesh-split.yaml", "echo", 7070, []request{ // no port: every port
			{"/v1", nil, "echo-v1:80*1"},
		}},
		// Filters a proxyless client cannot carry out: never half applied.
		{"mesh-ports.yaml", "echo-v1", 80, []request{{"/", nil, "today"}}},
		{"mesh-frontend.yaml", "echo-v2", 80, []request{{"/", nil, "today"}}},
		{"httproute-request-header-modifier.yaml", "echo", 80, []request{{"/", nil, "today"}}},
		{"httproute-rewrite-path.yaml", "echo", 80, []request{{"/", nil, "today"}}},
		{"httproute-303-redirect.yaml", "echo", 80, []request{{"/", nil, "today"}}},
		{"httproute-query-param-matching.yaml", "echo", 80, []request{{"/", nil, "today"}}},
	} {
		t.Run(fmt.Sprintf("%s port %d", tc.fixture, tc.port), func(t *testing.T) {
			w := load(t, tc.fixture)
			tb := w.table(t, tc.service, tc.port, ns)
			for _, r := range tc.sends {
				if got := send(tb, r.path, r.headers); got != r.want {
					t.Errorf("%s %v went to %s, want %s", r.path, r.headers, got, r.want)
				}
			}
		})
	}
}

// TestConformanceFixtureStatus checks the status each fixture's routes get.
func TestConformanceFixtureStatus(t *testing.T) {
	for _, tc := range []struct {
		fixture, want string
	}{
		{"grpcroute-weight.yaml", "Accepted ResolvedRefs=False/BackendNotFound"}, // echo-v3 does not exist (weight 0)
		{"httproute-weight.yaml", "Accepted ResolvedRefs"},
		{"mesh-ports.yaml", "Accepted=False/UnsupportedValue ResolvedRefs; Accepted=False/UnsupportedValue ResolvedRefs"},
		{"mesh-consumer-route.yaml", "Accepted=False/UnsupportedValue ResolvedRefs=False/RefNotPermitted"},
		{"httproute-query-param-matching.yaml", "Accepted=False/UnsupportedValue ResolvedRefs"},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			w := load(t, tc.fixture)
			var got []string
			for _, r := range w.routes {
				for _, st := range Status(r, w.service, w.grantsOf, w.attached) {
					got = append(got, cond("Accepted", st.Accepted)+" "+cond("ResolvedRefs", st.ResolvedRefs))
				}
			}
			if s := strings.Join(got, "; "); s != tc.want {
				t.Errorf("status %q, want %q", s, tc.want)
			}
		})
	}
}

func cond(name string, c Condition) string {
	if c.Status && c.Reason == name {
		return name
	}
	return fmt.Sprintf("%s=%v/%s", name, map[bool]string{true: "True", false: "False"}[c.Status], c.Reason)
}

func TestCompareNamesOrdersAsJoinedStrings(t *testing.T) {
	keys := []discovery.RouteKey{{Namespace: "a", Name: "z"}, {Namespace: "a-b", Name: "a"}, {Namespace: "ab", Name: "a"}, {Namespace: "a", Name: "a"}, {Namespace: "b", Name: ""}}
	for _, x := range keys {
		for _, y := range keys {
			want := strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
			if got := compareNames(x, y); got != want {
				t.Errorf("compareNames(%v, %v) = %d, want %d", x, y, got, want)
			}
		}
	}
}

// TestOneRouteTypePerPortAndPortScopedParents: a GRPCRoute and an HTTPRoute
// on one port: the GRPCRoute routes it and the HTTPRoute says Conflicted
// (GEP-1426); a parentRef with a port leaves the Service's other ports alone.
func TestOneRouteTypePerPortAndPortScopedParents(t *testing.T) {
	w := load(t, "grpcroute-weight.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: also-7070, namespace: gateway-conformance-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 7070}]
  rules: [{backendRefs: [{name: echo-v2, port: 7070}]}]
`)
	if got := send(w.table(t, "echo", 7070, ns), "/a/b", nil); got != "echo-v1:7070*70 echo-v2:7070*30" {
		t.Errorf("7070 went to %s, want the GRPCRoute's split", got)
	}
	if got := send(w.table(t, "echo", 80, ns), "/a/b", nil); got != "today" {
		t.Errorf("80 went to %s: routes with port 7070 must leave it alone", got)
	}
	var http *discovery.Route
	for _, r := range w.routes {
		if r.HTTP != nil {
			http = r
		}
	}
	st := Status(http, w.service, w.grantsOf, w.attached)
	if len(st) != 1 || st[0].Accepted.Status || st[0].Accepted.Reason != ReasonConflicted {
		t.Errorf("the HTTPRoute's status: %+v, want Accepted=False/Conflicted", st)
	}
}
