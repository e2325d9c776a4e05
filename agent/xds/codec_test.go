package xds

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// codecCases are requests whose decoding by decodeRequest must be what the
// proto codec and compact make of them.
func codecCases(t testing.TB) map[string]*discoveryv3.DiscoveryRequest {
	meta := func(fields map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	long := strings.Repeat("é", 400) // 800 bytes, two per rune
	return map[string]*discoveryv3.DiscoveryRequest{
		"a first request from grpc-go": {
			Node: &corev3.Node{Id: "ns/pod", Cluster: "c", UserAgentName: "gRPC Go",
				UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "1.85.0"},
				Locality:             &corev3.Locality{Region: "r", Zone: "z", SubZone: "s"},
				ClientFeatures:       []string{"envoy.lb.does_not_support_overprovisioning"},
				Metadata:             meta(map[string]any{MetadataNodeName: "node-a", "other": "x"})},
			TypeUrl: ListenerType, ResourceNames: []string{"a.ns:80", "b.ns:80"},
		},
		"an ACK": {VersionInfo: "v1", ResponseNonce: "7", TypeUrl: EndpointType, ResourceNames: []string{"a"}},
		"a NACK with details": {VersionInfo: "v1", ResponseNonce: "8", TypeUrl: ClusterType,
			ErrorDetail: &status.Status{Code: 3, Message: strings.Repeat("bad ", 3000), Details: []*anypb.Any{{TypeUrl: "x", Value: []byte("y")}}}},
		"a megabyte of metadata beside the node name": {
			Node: &corev3.Node{Id: "x", Metadata: meta(map[string]any{"junk": strings.Repeat("j", 1<<20), MetadataNodeName: "n"})},
		},
		"a node name that is not a string":   {Node: &corev3.Node{Id: "x", Metadata: meta(map[string]any{MetadataNodeName: 3.0})}},
		"a node name of 300 bytes":           {Node: &corev3.Node{Metadata: meta(map[string]any{MetadataNodeName: strings.Repeat("n", 300)})}},
		"names over the bound, cut mid-rune": {TypeUrl: RouteType, ResourceNames: []string{"ok", long, strings.Repeat("x", 100_000), strings.Repeat("y", 512), strings.Repeat("z", 513)}},
		"long ids and a long user agent": {VersionInfo: strings.Repeat("v", 1000), ResponseNonce: long,
			Node: &corev3.Node{Id: long, Cluster: strings.Repeat("c", 257), UserAgentName: strings.Repeat("u", 999),
				UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: long}}},
		"a type URL of 100 KiB":      {TypeUrl: "type.googleapis.com/" + strings.Repeat("g", 100<<10)},
		"resource locators (unread)": {TypeUrl: ListenerType, ResourceLocators: []*discoveryv3.ResourceLocator{{Name: "l"}}},
		"an empty request":           {},
		"an empty node":              {Node: &corev3.Node{}},
	}
}

// decodeBoth decodes b with the proto codec and with decodeRequest, each
// followed by compact, as the server does.
func decodeBoth(b []byte) (want, got *discoveryv3.DiscoveryRequest, wantLong, gotLong int, protoErr, codecErr error) {
	w, g := &discoveryv3.DiscoveryRequest{}, &discoveryv3.DiscoveryRequest{}
	if protoErr = proto.Unmarshal(b, w); protoErr == nil {
		want, wantLong = compact(w)
	}
	if codecErr = decodeRequest(b, g); codecErr == nil {
		got, gotLong = compact(g)
	}
	return want, got, wantLong, gotLong, protoErr, codecErr
}

func TestRequestCodecDecodesWhatCompactKeeps(t *testing.T) {
	for name, req := range codecCases(t) {
		t.Run(name, func(t *testing.T) {
			b, err := proto.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			want, got, wantLong, gotLong, perr, cerr := decodeBoth(b)
			if perr != nil || cerr != nil {
				t.Fatalf("proto: %v, decodeRequest: %v", perr, cerr)
			}
			if !proto.Equal(got, want) || gotLong != wantLong {
				t.Errorf("decodeRequest and compact: %v (%d long names)\nproto and compact: %v (%d long names)", got, gotLong, want, wantLong)
			}
		})
	}
}

func TestRequestCodecRefusesInvalidUTF8InWhatItKeeps(t *testing.T) {
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{ResourceNames: []string{"a\xff"}},
		{ResponseNonce: "\xc3"},
		{Node: &corev3.Node{Id: "\xff"}},
	} {
		b, err := proto.MarshalOptions{}.Marshal(req)
		if err != nil {
			b = protoMarshalUnchecked(t, req)
		}
		if err := decodeRequest(b, &discoveryv3.DiscoveryRequest{}); err == nil {
			t.Errorf("%v decoded, want an error as the proto codec gives", req)
		}
	}
}

// protoMarshalUnchecked marshals a message holding invalid UTF-8, which
// proto.Marshal refuses to.
func protoMarshalUnchecked(t *testing.T, req *discoveryv3.DiscoveryRequest) []byte {
	b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(req)
	if err == nil {
		return b
	}
	// Encode the one string field by hand.
	var out []byte
	add := func(num byte, s string) {
		out = append(out, num<<3|2, byte(len(s)))
		out = append(out, s...)
	}
	switch {
	case len(req.ResourceNames) > 0:
		add(3, req.ResourceNames[0])
	case req.ResponseNonce != "":
		add(5, req.ResponseNonce)
	case req.Node != nil:
		out = append(out, 2<<3|2, byte(len(req.Node.Id)+2), 1<<3|2, byte(len(req.Node.Id)))
		out = append(out, req.Node.Id...)
	}
	return out
}

// FuzzRequestCodec: whatever the proto codec decodes, decodeRequest decodes
// to the same request once compacted. (It may accept more: invalid UTF-8 in
// metadata it skips.)
func FuzzRequestCodec(f *testing.F) {
	for _, req := range codecCases(f) {
		if b, err := proto.Marshal(req); err == nil && len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, got, wantLong, gotLong, perr, cerr := decodeBoth(b)
		if perr != nil {
			return
		}
		if cerr != nil {
			t.Fatalf("proto decodes %x, decodeRequest fails: %v", b, cerr)
		}
		if !proto.Equal(got, want) || gotLong != wantLong {
			t.Fatalf("%x:\ndecodeRequest and compact: %v (%d long)\nproto and compact: %v (%d long)", b, got, gotLong, want, wantLong)
		}
	})
}

// BenchmarkDecodeRequest decodes the requests a client sends most: an ACK
// repeating its names, and the first request with its Node.
func BenchmarkDecodeRequest(b *testing.B) {
	cases := codecCases(b)
	for _, name := range []string{"an ACK", "a first request from grpc-go"} {
		wire, err := proto.Marshal(cases[name])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := decodeRequest(wire, &discoveryv3.DiscoveryRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
