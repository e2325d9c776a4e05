package names

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseServer(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // "" for an error
	}{
		{ServerPrefix + "0.0.0.0:50051", "0.0.0.0:50051"},
		{ServerPrefix + "[::]:50051", "[::]:50051"},
		{ServerPrefix + "10.1.2.3:8080", "10.1.2.3:8080"},
		{ServerPrefix + "10.1.2.3:0", ""},             // no port to serve
		{ServerPrefix + "10.1.2.3", ""},               // no port at all
		{ServerPrefix + "010.1.2.3:80", ""},           // another spelling
		{ServerPrefix + "[fe80::1%eth0]:80", ""},      // zones are the host's business
		{ServerPrefix + "10.1.2.3:80&x=y", ""},        // more query
		{ServerPrefix + "a.example:80", ""},           // not an address
		{"grpc/server?other=10.1.2.3:80", ""},         // another template
		{ServerPrefix + strings.Repeat("9", 300), ""}, // garbage
	} {
		got, err := ParseServer(tc.name)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseServer(%q) = %v, want an error", tc.name, got)
		case tc.want != "" && (err != nil || got.String() != tc.want):
			t.Errorf("ParseServer(%q) = %v, %v; want %s", tc.name, got, err, tc.want)
		}
	}
}

func TestServerKeyRoundTrips(t *testing.T) {
	for _, s := range []Server{
		{Listening: netip.MustParseAddrPort("0.0.0.0:50051"), Pod: netip.MustParseAddr("10.1.2.3")},
		{Listening: netip.MustParseAddrPort("[::]:50051"), Pod: netip.MustParseAddr("fd00::3"), Namespace: "shop", Certs: true},
	} {
		k := s.Key()
		got, ok := ParseServerKey(k)
		if !ok || got != s {
			t.Errorf("ParseServerKey(%q) = %+v, %v; want %+v", k, got, ok, s)
		}
		if !IsServer(k) || got.Name() != ServerPrefix+s.Listening.String() {
			t.Errorf("%q: name %q", k, got.Name())
		}
	}
	for _, k := range []string{
		ServerPrefix + "0.0.0.0:1",                          // a server's own name: not a key
		ServerPrefix + "0.0.0.0:1|pod|10.0.0.1#certs#certs", // not written by Key
		ServerPrefix + "0.0.0.0:1|pod|x",
	} {
		if s, ok := ParseServerKey(k); ok {
			t.Errorf("ParseServerKey(%q) = %+v, want not a key", k, s)
		}
	}
}
