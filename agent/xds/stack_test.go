package xds

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/nodexds/nodexds/agent/metrics"
)

// TestClientStacksAreTheMetricsLabelValues: every stack a NACK can be counted
// under is one metrics.New exports at 0 from the start, so the dashboard's
// NACK panel never has a stack that appears only after its first NACK.
func TestClientStacksAreTheMetricsLabelValues(t *testing.T) {
	tests := []struct{ userAgent, want string }{
		{"gRPC Go", "grpc-go"},
		{"gRPC Node", "grpc-js"},
		{"gRPC C-core", "c-core"},
		{"gRPC Java", "grpc-java"},
		{"envoy", "other"},
		{"", "other"},
	}
	for _, tt := range tests {
		got := clientStack(&corev3.Node{UserAgentName: tt.userAgent})
		if got != tt.want {
			t.Errorf("user agent %q: stack %q, want %q", tt.userAgent, got, tt.want)
		}
		if !slices.Contains(metrics.ClientStacks, got) {
			t.Errorf("user agent %q: stack %q is not in metrics.ClientStacks %q", tt.userAgent, got, metrics.ClientStacks)
		}
	}
}
