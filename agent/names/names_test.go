package names

import (
	"strings"
	"testing"

	"github.com/nodexds/nodexds/discovery"
)

var parser = Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, want, wantErr string
	}{
		{name: "be1.ns.svc.cluster.local:8080", want: "ns/be1 8080"},
		{name: "be1.ns.svc:8080", want: "ns/be1 8080"},
		{name: "be1.ns:8080", want: "ns/be1 8080"},
		{name: "be1:8080", want: "default/be1 8080"},
		{name: "be1.ns.svc.cluster.local", want: "ns/be1 "},
		{name: "be1.ns.svc", want: "ns/be1 "},
		{name: "be1.ns", want: "ns/be1 "},
		{name: "be1", want: "default/be1 "},
		{name: "be1:grpc", want: "default/be1 grpc"},
		{name: "be1.svc:8080", want: "svc/be1 8080"}, // a namespace named svc
		{name: "be1.svc.svc:8080", want: "svc/be1 8080"},
		{name: "be1.ns.svc.cluster.local:grpc-web", want: "ns/be1 grpc-web"},
		{name: "be1.ns.svc.other.domain:80", wantErr: "want svc[.ns[.svc[.cluster.local]]][:port]"},
		{name: "a.b.c", wantErr: "want svc"},
		{name: "be1:0", wantErr: "port 0 out of range"},
		{name: "be1:65536", wantErr: "port 65536 out of range"},
		{name: "be1:Bad_Name", wantErr: `port "Bad_Name"`},
		{name: "be1:", wantErr: `port ""`},
		{name: "", wantErr: `""`},
		{name: "BE1", wantErr: `"BE1"`},
		{name: "xdstp://auth/envoy.config.listener.v3.Listener/x", wantErr: "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parser.Parse(tc.name)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tc.name, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.name, err)
			}
			if s := got.Service.String() + " " + got.Port; s != tc.want {
				t.Errorf("Parse(%q) = %q, want %q", tc.name, s, tc.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	one := &discovery.Service{Key: discovery.ServiceKey{Namespace: "ns", Name: "one"}, Ports: []discovery.Port{{Name: "grpc", Port: 8080}}}
	two := &discovery.Service{Key: discovery.ServiceKey{Namespace: "ns", Name: "two"}, Ports: []discovery.Port{{Name: "grpc", Port: 8080}, {Name: "admin", Port: 9000}}}
	for _, tc := range []struct {
		name    string
		svc     *discovery.Service
		port    string
		want    int32
		wantErr string
	}{
		{name: "single port needs no port", svc: one, want: 8080},
		{name: "port by number", svc: two, port: "9000", want: 9000},
		{name: "port by name", svc: two, port: "admin", want: 9000},
		{name: "two ports and none named is ambiguous", svc: two, wantErr: "has 2 ports: name one"},
		{name: "unknown port", svc: one, port: "9999", wantErr: `no port "9999"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Resolve(Target{Service: tc.svc.Key, Port: tc.port}, tc.svc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve = %v, %v; want error containing %q", p, err, tc.wantErr)
				}
				return
			}
			if err != nil || p.Port != tc.want {
				t.Fatalf("Resolve = %v, %v; want port %d", p, err, tc.want)
			}
		})
	}
}

func TestAliasesShareOneCanonicalName(t *testing.T) {
	svc := &discovery.Service{Key: discovery.ServiceKey{Namespace: "default", Name: "be1"}, Ports: []discovery.Port{{Name: "grpc", Port: 8080}}}
	var seen []string
	for _, alias := range []string{"be1", "be1:8080", "be1:grpc", "be1.default", "be1.default.svc:grpc", "be1.default.svc.cluster.local:8080"} {
		tgt, err := parser.Parse(alias)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Resolve(tgt, svc)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, parser.Canonical(tgt.Service, p.Port))
	}
	for _, c := range seen {
		if c != "be1.default.svc.cluster.local:8080" {
			t.Errorf("canonical names differ: %v", seen)
			break
		}
	}
}
