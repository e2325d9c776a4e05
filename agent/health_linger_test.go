package agent_test

import (
	"maps"
	"testing"
	"time"
)

// A client that arrives after a backend went NOT_SERVING, while no client of
// this node used it, is not sent there: the agent kept checking it after the
// last client left, so the first response already says so.
func TestNewClientIsNotSentToAnEndpointThatWentNotServingWhileNobodyUsedIt(t *testing.T) {
	w, _, local, _ := localAndZone(t)
	cfg := fastHealth
	cfg.Linger = time.Hour
	a := startAgent(t, w, withHealth(t, cfg))

	first := dial(t, a, "be1:8080")
	if got := hits(first, 30); !maps.Equal(got, map[string]int{"on-a1": 30}) {
		t.Fatalf("first client's RPCs reached %v, want all 30 on its own node's on-a1", got)
	}
	first.Close()
	waitFor(t, "nobody subscribes to be1's endpoints any more", func() bool {
		return metricValue(t, a, "nodexds_subscribed_resources", "EDS") == 0
	})

	local.srv.Health.SetServingStatus("", notServing)
	// The verdict is the new client's RPCs below; this only waits for the
	// agent to learn of the flip, and gives up quietly where it cannot.
	learned := false
	for deadline := time.Now().Add(10 * time.Second); !learned && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		learned = metricValue(t, a, "nodexds_health_transitions_total", "unhealthy") == 1
	}
	t.Logf("the agent learned of the flip while nobody used be1: %v", learned)

	next := dial(t, a, "be1:8080")
	if got := hits(next, 30); !maps.Equal(got, map[string]int{"on-a2": 30}) {
		t.Errorf("new client's first 30 RPCs reached %v, want all 30 on on-a2: on-a1 is NOT_SERVING", got)
	}
}
