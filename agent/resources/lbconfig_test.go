package resources

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"

	"github.com/nodexds/nodexds/discovery"
)

func TestLBConfigFor(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		check       func(LBConfig) string // "" when right
		wantErrs    []string
	}{
		{
			name: "no annotations: round robin, nothing else",
			check: func(c LBConfig) string {
				return diff(c.Policy, RoundRobin) + diff(c.Outlier == nil && c.Retry == nil, true)
			},
		},
		{
			name:        "hash-header selects ring hash with safe ring bounds",
			annotations: map[string]string{AnnotationHashHeader: "x-user"},
			check: func(c LBConfig) string {
				return diff(c.Policy, RingHash) + diff(c.HashHeader, "x-user") + diff(c.RingMin, uint64(1024)) + diff(c.RingMax, uint64(4096))
			},
		},
		{
			name:        "hash-header with another policy is refused, the header is kept",
			annotations: map[string]string{AnnotationHashHeader: "x-user", AnnotationLBPolicy: LeastRequest},
			check:       func(c LBConfig) string { return diff(c.Policy, RingHash) },
			wantErrs:    []string{"nodexds.io/lb-policy=\"least_request\": nodexds.io/hash-header is set"},
		},
		{
			name:        "least_request",
			annotations: map[string]string{AnnotationLBPolicy: LeastRequest},
			check:       func(c LBConfig) string { return diff(c.Policy, LeastRequest) },
		},
		{
			name:        "unknown policy keeps round robin",
			annotations: map[string]string{AnnotationLBPolicy: "maglev"},
			check:       func(c LBConfig) string { return diff(c.Policy, RoundRobin) },
			wantErrs:    []string{`want round_robin, least_request or ring_hash`},
		},
		{
			name:        "grpc- and -bin headers cannot be matched",
			annotations: map[string]string{AnnotationHashHeader: "grpc-user", AnnotationEndpointHeader: "x-pod-bin"},
			check:       func(c LBConfig) string { return diff(c.HashHeader, "") + diff(c.EndpointHeader, "") },
			wantErrs:    []string{"grpc- headers are reserved", "binary (-bin) headers"},
		},
		{
			name:        "ring sizes: min above max is refused",
			annotations: map[string]string{AnnotationRingMinSize: "5000", AnnotationRingMaxSize: "2000"},
			check:       func(c LBConfig) string { return diff(c.RingMin, uint64(1024)) + diff(c.RingMax, uint64(4096)) },
			wantErrs:    []string{"larger than the maximum ring size 2000"},
		},
		{
			name:        "outlier detection by failure percentage",
			annotations: map[string]string{AnnotationOutlier: "failure-percentage=50,interval=2s,max-ejection-percent=30"},
			check: func(c LBConfig) string {
				o := c.Outlier
				if o == nil {
					return "no outlier config"
				}
				return diff(o.FailurePercentage, uint32(50)) + diff(o.Interval, 2*time.Second) + diff(o.MaxEjectionPercent, uint32(30)) + diff(o.SuccessRateStdevFactor, uint32(0))
			},
		},
		{
			name:        "outlier detection with nothing enabled is refused",
			annotations: map[string]string{AnnotationOutlier: "interval=2s"},
			check:       func(c LBConfig) string { return diff(c.Outlier == nil, true) },
			wantErrs:    []string{"enable success-rate-stdev-factor or failure-percentage"},
		},
		{
			name:        "outlier detection with a typo is refused",
			annotations: map[string]string{AnnotationOutlier: "failure-percentag=50"},
			wantErrs:    []string{`unknown key "failure-percentag"`},
		},
		{
			name:        "circuit breaking and timeout",
			annotations: map[string]string{AnnotationMaxRequests: "100", AnnotationTimeout: "1500ms"},
			check: func(c LBConfig) string {
				return diff(c.MaxRequests, uint32(100)) + diff(c.Timeout, 1500*time.Millisecond)
			},
		},
		{
			name:        "bad circuit breaking and timeout keep the defaults",
			annotations: map[string]string{AnnotationMaxRequests: "0", AnnotationTimeout: "-1s"},
			check:       func(c LBConfig) string { return diff(c.MaxRequests, uint32(0)) + diff(c.Timeout, time.Duration(0)) },
			wantErrs:    []string{"must be at least 1", "must be positive"},
		},
		{
			name:        "retries",
			annotations: map[string]string{AnnotationRetryOn: "unavailable, resource-exhausted", AnnotationRetryAttempts: "4", AnnotationRetryBackoff: "10ms,1s"},
			check: func(c LBConfig) string {
				r := c.Retry
				return diff(strings.Join(r.On, ","), "unavailable,resource-exhausted") + diff(r.Attempts, uint32(4)) + diff(r.BaseBackoff, 10*time.Millisecond) + diff(r.MaxBackoff, time.Second)
			},
		},
		{
			name:        "retrying on a status gRPC cannot retry on is refused",
			annotations: map[string]string{AnnotationRetryOn: "not-found", AnnotationRetryAttempts: "9"},
			check: func(c LBConfig) string {
				return diff(strings.Join(c.Retry.On, ","), "unavailable") + diff(c.Retry.Attempts, uint32(3))
			},
			wantErrs: []string{`"not-found": want some of`, "between 2 and 5"},
		},
		{
			name:        "endpoint picker failing closed",
			annotations: map[string]string{AnnotationEndpointHeader: "x-target-pod", AnnotationPickerFallback: "fail"},
			check: func(c LBConfig) string {
				return diff(c.EndpointHeader, "x-target-pod") + diff(c.PickerFailClosed, true)
			},
		},
		{
			name:        "endpoint picker fallback typo keeps normal balancing",
			annotations: map[string]string{AnnotationEndpointHeader: "x-target-pod", AnnotationPickerFallback: "fial"},
			check:       func(c LBConfig) string { return diff(c.PickerFailClosed, false) },
			wantErrs:    []string{`want "lb" or "fail"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, errs := LBConfigFor(&discovery.Service{Annotations: tc.annotations})
			if tc.check != nil {
				if d := tc.check(c); d != "" {
					t.Errorf("config %+v: %s", c, d)
				}
			}
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("errors %v, want %d", errs, len(tc.wantErrs))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.wantErrs[i]) {
					t.Errorf("error %q, want it to contain %q", e, tc.wantErrs[i])
				}
			}
		})
	}
}

func diff[T comparable](got, want T) string {
	if got == want {
		return ""
	}
	return fmt.Sprintf("got %v, want %v; ", got, want)
}

func TestClusterShapes(t *testing.T) {
	rh := Cluster("c", LBConfig{Policy: RingHash, RingMin: 10, RingMax: 20})
	if rh.LbPolicy != clusterv3.Cluster_RING_HASH || rh.GetRingHashLbConfig().GetMaximumRingSize().GetValue() != 20 {
		t.Errorf("ring hash cluster: %v", rh)
	}
	lr := Cluster("c", LBConfig{Policy: LeastRequest})
	wrr := &wrrlocalityv3.WrrLocality{}
	if err := lr.GetLoadBalancingPolicy().GetPolicies()[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(wrr); err != nil {
		t.Fatal(err)
	}
	pols := wrr.GetEndpointPickingPolicy().GetPolicies()
	lrc := &leastrequestv3.LeastRequest{}
	if len(pols) != 2 || pols[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(lrc) != nil || lrc.GetChoiceCount().GetValue() != 2 ||
		pols[1].GetTypedExtensionConfig().GetName() != "envoy.load_balancing_policies.round_robin" {
		t.Errorf("least_request must be offered with a round_robin fallback for clients without it: %v", pols)
	}
	od := Cluster("c", LBConfig{Policy: RoundRobin, Outlier: &Outlier{FailurePercentage: 50, Interval: time.Second}}).GetOutlierDetection()
	if od.GetEnforcingSuccessRate().GetValue() != 0 || od.GetEnforcingFailurePercentage().GetValue() != 100 || od.GetFailurePercentageThreshold().GetValue() != 50 {
		t.Errorf("outlier detection must enable only what was asked: %v", od)
	}
	cb := Cluster("c", LBConfig{Policy: RoundRobin, MaxRequests: 7}).GetCircuitBreakers().GetThresholds()
	if len(cb) != 1 || cb[0].GetMaxRequests().GetValue() != 7 {
		t.Errorf("circuit breakers: %v", cb)
	}
}

func TestRouteConfigPicksComeFirstAndOnlyMembersArePickable(t *testing.T) {
	lb := LBConfig{Policy: RingHash, HashHeader: "x-user", EndpointHeader: "x-pod", Timeout: time.Second,
		Retry: &Retry{On: []string{"unavailable"}, Attempts: 3, BaseBackoff: time.Millisecond, MaxBackoff: time.Second}}
	rc := RouteConfig("c", "c", lb, []Pick{{Values: []string{"pod-a", "10.0.0.1:80"}, Cluster: "c|endpoint|10.0.0.1:80"}}, "c|none")
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	var got []string
	for _, r := range routes {
		h := "default"
		if hs := r.GetMatch().GetHeaders(); len(hs) == 1 {
			h = hs[0].GetName() + "=" + hs[0].GetExactMatch() //nolint:staticcheck // SA1019: exact_match on purpose, see exactHeader
			if hs[0].GetPresentMatch() {
				h = hs[0].GetName() + " present"
			}
		}
		a := r.GetRoute()
		got = append(got, fmt.Sprintf("%s→%s", h, a.GetCluster()))
		if a.GetHashPolicy()[0].GetHeader().GetHeaderName() != "x-user" || a.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration() != time.Second ||
			a.GetRetryPolicy().GetNumRetries().GetValue() != 2 {
			t.Errorf("route %s lacks the Service's hash, timeout or retry policy: %v", h, a)
		}
	}
	want := "x-pod=pod-a→c|endpoint|10.0.0.1:80 x-pod=10.0.0.1:80→c|endpoint|10.0.0.1:80 x-pod present→c|none default→c"
	if strings.Join(got, " ") != want {
		t.Errorf("routes:\n got  %s\n want %s", strings.Join(got, " "), want)
	}
}
