package agent_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// TestRouteStatusesReadTheModelWhileTheLoopRuns: statuses come from the
// loop's model as of the last event (a missing backend, then found), and
// reading them while events stream in is race-free (run with -race).
func TestRouteStatusesReadTheModelWhileTheLoopRuns(t *testing.T) {
	a := agent.New(agent.Config{NodeName: "n1"}, xds.NewCache(), nil, nil, metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go a.Run(ctx)
	svc := func(name string) discovery.Event {
		return discovery.Event{Service: &discovery.Service{Key: discovery.ServiceKey{Namespace: "default", Name: name}, Ports: []discovery.Port{{Name: "grpc", Port: 8080}}}}
	}
	g, k, port := gwv1.Group(""), gwv1.Kind("Service"), gwv1.PortNumber(8080)
	route := &discovery.Route{
		Key: discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "default", Name: "r"}, UID: "u1", Generation: 4, Created: time.Now(),
		GRPC: &gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Group: &g, Kind: &k, Name: "echo", Port: &port}}},
			Rules:           []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo-v2", Port: &port}}}}}},
		},
	}
	a.Enqueue(svc("echo"))
	a.Enqueue(discovery.Event{Route: route})
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := a.RouteStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Key != route.Key || got[0].UID != "u1" || got[0].Generation != 4 || len(got[0].Parents) != 1 {
		t.Fatalf("RouteStatuses = %+v", got)
	}
	if p := got[0].Parents[0]; !p.Accepted.Status || p.ResolvedRefs.Status || p.ResolvedRefs.Reason != "BackendNotFound" {
		t.Errorf("with echo-v2 missing: %+v, want Accepted, BackendNotFound", p)
	}

	done := make(chan struct{})
	go func() { // events while statuses are read
		defer close(done)
		for i := range 200 {
			a.Enqueue(svc("other-" + string(rune('a'+i%26))))
		}
		a.Enqueue(svc("echo-v2"))
	}()
	for range 50 {
		if _, err := a.RouteStatuses(ctx); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = a.RouteStatuses(ctx)
	if p := got[0].Parents[0]; !p.ResolvedRefs.Status {
		t.Errorf("with echo-v2 there: %+v, want ResolvedRefs", p)
	}

	canceled, stop := context.WithCancel(ctx)
	stop()
	if _, err := a.RouteStatuses(canceled); err == nil {
		t.Error("RouteStatuses with a canceled context: no error")
	}
}
