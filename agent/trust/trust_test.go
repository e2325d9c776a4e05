package trust

import (
	"reflect"
	"strings"
	"testing"
)

func TestPolicyFor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		svc, ns  map[string]string
		want     Policy
		wantErrs []string // annotation keys, in order
	}{
		{
			name: "nothing said: disabled, anyone of the trust domain, any server of the namespace",
			want: Policy{Mode: Disabled, AllowFrom: []Peer{{}}, Namespace: "shop"},
		},
		{
			name: "the Service says strict and who may call",
			svc:  map[string]string{AnnotationMTLS: "strict", AnnotationAllowFrom: "web/frontend, ops/*"},
			want: Policy{Mode: Strict, AllowFrom: []Peer{{"ops", ""}, {"web", "frontend"}}, Namespace: "shop"},
		},
		{
			name: "the namespace's default applies to what the Service leaves out",
			svc:  map[string]string{AnnotationAllowFrom: "web/frontend"},
			ns:   map[string]string{AnnotationMTLS: "permissive", AnnotationAllowFrom: "*"},
			want: Policy{Mode: Permissive, AllowFrom: []Peer{{"web", "frontend"}}, Namespace: "shop"},
		},
		{
			name:     "a malformed Service annotation falls back to the namespace's, and is reported",
			svc:      map[string]string{AnnotationMTLS: "on"},
			ns:       map[string]string{AnnotationMTLS: "strict"},
			want:     Policy{Mode: Strict, AllowFrom: []Peer{{}}, Namespace: "shop"},
			wantErrs: []string{AnnotationMTLS},
		},
		{
			name:     "both malformed: the default, both reported",
			svc:      map[string]string{AnnotationMTLS: "on"},
			ns:       map[string]string{AnnotationMTLS: "STRICT"},
			want:     Policy{Mode: Disabled, AllowFrom: []Peer{{}}, Namespace: "shop"},
			wantErrs: []string{AnnotationMTLS, AnnotationMTLS},
		},
		{
			name: "a namespace wildcard covers its service accounts; * covers everything",
			svc:  map[string]string{AnnotationAllowFrom: "web/a, web/*, web/b, ops/x, ops/x"},
			want: Policy{Mode: Disabled, AllowFrom: []Peer{{"ops", "x"}, {"web", ""}}, Namespace: "shop"},
		},
		{
			name: "server identities are service accounts of the Service's namespace",
			svc:  map[string]string{AnnotationServerIdentities: "cart, cart-canary"},
			want: Policy{Mode: Disabled, AllowFrom: []Peer{{}}, ServerIdentities: []string{"cart", "cart-canary"}, Namespace: "shop"},
		},
		{
			name:     "an empty allow list is an error, not \"nobody\"",
			svc:      map[string]string{AnnotationAllowFrom: " , "},
			want:     Policy{Mode: Disabled, AllowFrom: []Peer{{}}, Namespace: "shop"},
			wantErrs: []string{AnnotationAllowFrom},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := PolicyFor("shop", tc.svc, tc.ns)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("policy = %+v, want %+v", got, tc.want)
			}
			var keys []string
			for _, e := range errs {
				keys = append(keys, e.Key)
			}
			if !reflect.DeepEqual(keys, tc.wantErrs) {
				t.Errorf("errors on %v (%v), want %v", keys, errs, tc.wantErrs)
			}
		})
	}
}

func TestParseAllowFromRefuses(t *testing.T) {
	for _, s := range []string{
		"frontend",                 // no namespace
		"*/frontend",               // no wildcard namespace with a named account
		"Web/frontend",             // not a namespace name
		"web/front end",            // not a service account name
		"web/frontend/extra",       // not a service account name either
		strings.Repeat("a/b,", 65), // too many
	} {
		if got, err := ParseAllowFrom(s); err == nil {
			t.Errorf("ParseAllowFrom(%q) = %v, want an error", s, got)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		peer Peer
		want Match
	}{
		{Peer{}, Match{"spiffe://td.example/", true}},
		{Peer{"web", ""}, Match{"spiffe://td.example/ns/web/sa/", true}},
		{Peer{"web", "frontend"}, Match{"spiffe://td.example/ns/web/sa/frontend", false}},
	} {
		if got := tc.peer.Matches("td.example"); got != tc.want {
			t.Errorf("%v.Matches = %+v, want %+v", tc.peer, got, tc.want)
		}
	}
	s := Server{Mode: Strict, Allow: [][]Peer{{{"ops", "x"}}, {{"web", ""}, {"web", "a"}}}}
	got := s.AllowMatches("td")
	want := [][]Match{{{"spiffe://td/ns/ops/sa/x", false}}, {{"spiffe://td/ns/web/sa/", true}, {"spiffe://td/ns/web/sa/a", false}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AllowMatches = %v, want %v", got, want)
	}
	if got, want := want[1][0].String()+" "+want[1][1].String(), "spiffe://td/ns/web/sa/* spiffe://td/ns/web/sa/a"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	p := Policy{Namespace: "shop"}
	if got, want := p.ServerMatches("cluster.local"), []Match{{"spiffe://cluster.local/ns/shop/sa/", true}}; !reflect.DeepEqual(got, want) {
		t.Errorf("default server matches = %v, want %v", got, want)
	}
	p.ServerIdentities = []string{"cart"}
	if got, want := p.ServerMatches("cluster.local"), []Match{{"spiffe://cluster.local/ns/shop/sa/cart", false}}; !reflect.DeepEqual(got, want) {
		t.Errorf("server matches = %v, want %v", got, want)
	}
}

func TestServerPolicy(t *testing.T) {
	web := []Peer{{"web", ""}}
	ops := []Peer{{"ops", "x"}}
	for _, tc := range []struct {
		name string
		in   []Policy
		want Server
	}{
		{"no Service, the namespace's default", []Policy{{Mode: Disabled, AllowFrom: anyone}}, Server{Mode: Disabled}},
		{"permissive authorizes nothing", []Policy{{Mode: Permissive, AllowFrom: web}}, Server{Mode: Permissive}},
		{"strict keeps the list", []Policy{{Mode: Strict, AllowFrom: web}}, Server{Mode: Strict, Allow: [][]Peer{web}}},
		{
			"two Services: the strictest mode, and every list must allow",
			[]Policy{{Mode: Permissive, AllowFrom: ops}, {Mode: Strict, AllowFrom: web}},
			Server{Mode: Strict, Allow: [][]Peer{ops, web}},
		},
		{
			"equal lists once",
			[]Policy{{Mode: Strict, AllowFrom: web}, {Mode: Strict, AllowFrom: []Peer{{"web", ""}}}},
			Server{Mode: Strict, Allow: [][]Peer{web}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ServerPolicy(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ServerPolicy = %+v, want %+v", got, tc.want)
			}
		})
	}
}
