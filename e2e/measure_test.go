package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// firstAnswerAfter returns how long after t0 pod first answered an RPC of
// p's, rounded for logs; "never" if it has not.
func firstAnswerAfter(p *Probe, pod string, t0 time.Time) string {
	for _, r := range p.RPCs(0) {
		if r.OK() && r.Pod == pod && r.At.After(t0) {
			return r.At.Sub(t0).Round(time.Millisecond).String()
		}
	}
	return "never"
}

// watchReadyEndpoints watches a Service's EndpointSlices and returns a
// function that waits until an address has been listed ready and returns
// when this watch first saw it so.
func (e *Env) watchReadyEndpoints(t testing.TB, ns, svc string) func(ip string) time.Time {
	t.Helper()
	w, err := e.Client().DiscoveryV1().EndpointSlices(ns).Watch(t.Context(), metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
	})
	if err != nil {
		t.Fatalf("e2e: watch endpointslices: %v", err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	seen := map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			es, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			mu.Lock()
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					for _, a := range ep.Addresses {
						if _, ok := seen[a]; !ok {
							seen[a] = now
						}
					}
				}
			}
			mu.Unlock()
		}
	}()
	return func(ip string) time.Time {
		deadline := time.Now().Add(waitTimeout)
		for {
			mu.Lock()
			at, ok := seen[ip]
			mu.Unlock()
			if ok {
				return at
			}
			if time.Now().After(deadline) {
				t.Fatalf("e2e: %s never listed ready in the EndpointSlices of %s/%s", ip, ns, svc)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func millis(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprint(d.Milliseconds())
	}
	return strings.Join(parts, " ")
}

// percentiles formats p50, p90, p99 and max (nearest rank).
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var parts []string
	for _, p := range []struct {
		name string
		v    time.Duration
	}{{"p50", rank(0.50)}, {"p90", rank(0.90)}, {"p99", rank(0.99)}, {"max", s[len(s)-1]}} {
		parts = append(parts, fmt.Sprintf("%s %s", p.name, p.v.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}
