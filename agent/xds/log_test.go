package xds

import (
	"bytes"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestLocalityAttr(t *testing.T) {
	tests := []struct {
		name     string
		locality *corev3.Locality
		want     string
	}{
		{"a client that sends no locality gets no attribute", nil, `{"msg":"client connected"}`},
		{"an empty locality gets no attribute", &corev3.Locality{}, `{"msg":"client connected"}`},
		{"the parts a client sends are logged by name", &corev3.Locality{Region: "region-1", Zone: "zone-a"},
			`{"msg":"client connected","locality":{"region":"region-1","zone":"zone-a"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			noTime := func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}
			slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: noTime})).Info("client connected", localityAttr(tt.locality))
			if got := string(bytes.TrimSpace(buf.Bytes())); got != tt.want {
				t.Errorf("logged %s, want %s", got, tt.want)
			}
		})
	}
}
