package names

import (
	"net/netip"
	"strings"
	"testing"
)

func TestResource(t *testing.T) {
	const base = "be1.ns.svc.cluster.local:8080"
	ep := netip.MustParseAddrPort("10.0.0.1:8080")
	for _, tc := range []struct {
		name string
		want Resource
	}{
		{base, Resource{Base: base}},
		{base + "@node-b", Resource{Base: base, View: "node-b"}},
		{base + "|none", Resource{Base: base, Subset: NoEndpoint}},
		{base + "|endpoint|10.0.0.1:8080", Resource{Base: base, Subset: OneEndpoint, Endpoint: ep}},
		{base + "@node-b|endpoint|[fd00::1]:80", Resource{Base: base, View: "node-b", Subset: OneEndpoint, Endpoint: netip.MustParseAddrPort("[fd00::1]:80")}},
		{base + "#no-ring-hash", Resource{Base: base, NoRingHash: true}},
		{base + "@node-b#no-ring-hash", Resource{Base: base, View: "node-b", NoRingHash: true}},
		{base + "#mtls", Resource{Base: base, MTLS: true}},
		{base + "|endpoint|10.0.0.1:8080#no-ring-hash#mtls", Resource{Base: base, Subset: OneEndpoint, Endpoint: ep, NoRingHash: true, MTLS: true}},
		{base + "!1", Resource{Base: base, Gen: 1}},
		{base + "@node-b|endpoint|10.0.0.1:8080!12#mtls#late", Resource{Base: base, View: "node-b", Subset: OneEndpoint, Endpoint: ep, Gen: 12, MTLS: true, LateTLS: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseResource(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ParseResource = %+v, want %+v", got, tc.want)
			}
			if s := got.String(); s != tc.name {
				t.Errorf("String = %q, want %q", s, tc.name)
			}
		})
	}
}

func TestResourceRefusesWhatTheAgentNeverHandsOut(t *testing.T) {
	for _, name := range []string{
		"",
		"@node-b",
		"be1:80|",
		"be1:80|all",
		"be1:80|endpoint|",
		"be1:80|endpoint|10.0.0.1",
		"be1:80|endpoint|10.0.0.1:080", // another spelling of an endpoint
		"be1:80|endpoint|[::ffff:10.0.0.1]:80x",
		"be1:80@a@b",
		"be1:80@a#b",
		"be1:80|none|none",
		"be1:80#mtls#no-ring-hash", // marks in the other order
		"be1:80!0",                 // generations start at 1
		"be1:80!01",                // another spelling of a generation
		"be1:80!x",
		"be1:80!1!2",
		"be1:80!4294967296", // beyond 32 bits
		"be1:80#mtls!1",     // a generation after a mark
		strings.Repeat("a", maxResourceLen+1),
	} {
		if r, err := ParseResource(name); err == nil {
			t.Errorf("ParseResource(%q) = %+v, want an error", name, r)
		}
	}
}

func TestPortDropsSubsetAndMark(t *testing.T) {
	r, err := ParseResource("be1.ns.svc.cluster.local:80@node-b|endpoint|10.0.0.1:80!3#no-ring-hash")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Port().String(), "be1.ns.svc.cluster.local:80@node-b"; got != want {
		t.Errorf("Port = %q, want %q", got, want)
	}
}

func TestParseListener(t *testing.T) {
	for name, want := range map[string]Resource{
		"be1:8080":        {Base: "be1:8080"},
		"be1:8080@node-b": {Base: "be1:8080", View: "node-b"},
		"":                {},
	} {
		if got := ParseListener(name); got != want {
			t.Errorf("ParseListener(%q) = %+v, want %+v", name, got, want)
		}
		if got := want.String(); got != name {
			t.Errorf("String of %+v = %q, want %q", want, got, name)
		}
	}
}

// FuzzResource: any name ParseResource accepts is written back the same, and
// any Resource with valid parts is read back from its String; nothing panics.
func FuzzResource(f *testing.F) {
	f.Add("be1.ns.svc.cluster.local:8080@node-b|endpoint|10.0.0.1:80#no-ring-hash", "b", "v", uint8(2), []byte{10, 0, 0, 1}, uint16(80), true)
	f.Add("x|none", "b", "", uint8(1), []byte{}, uint16(0), false)
	f.Add("be1.ns.svc.cluster.local:8080@node-b~consumer", "b", "v", uint8(0), []byte{}, uint16(0), false)
	f.Add("be1.ns.svc.cluster.local:8080|endpoint|10.0.0.1:80!3#mtls#late", "b", "v", uint8(26), []byte{10, 0, 0, 1}, uint16(80), false)
	f.Fuzz(func(t *testing.T, name, base, view string, subset uint8, ip []byte, port uint16, compat bool) {
		if r, err := ParseResource(name); err == nil {
			if s := r.String(); s != name {
				t.Fatalf("ParseResource(%q) = %+v, written back as %q", name, r, s)
			}
		}
		_ = ParseListener(name)

		r := Resource{Base: base, View: view, Subset: Subset(subset % 3), NoRingHash: compat, MTLS: subset&8 != 0, LateTLS: subset&16 != 0, Gen: uint32(port) * uint32(subset>>5)}
		if subset&4 != 0 {
			r.Client = view + "-ns" // a namespace, from the fuzzer's bytes
		}
		if r.Subset == OneEndpoint {
			addr, ok := netip.AddrFromSlice(ip)
			if !ok {
				return
			}
			r.Endpoint = netip.AddrPortFrom(addr, port)
		}
		if base == "" || strings.ContainsAny(base, "@|#~!") || strings.ContainsAny(view, "@|#~!") || len(r.String()) > maxResourceLen {
			return // parts the agent never writes
		}
		got, err := ParseResource(r.String())
		if err != nil {
			t.Fatalf("ParseResource(%q) of %+v: %v", r.String(), r, err)
		}
		if got != r {
			t.Fatalf("ParseResource(%q) = %+v, want %+v", r.String(), got, r)
		}
	})
}
