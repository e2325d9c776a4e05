package agent

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// An idle event loop still beats, so /healthz stays green however long
// nothing happens; once the loop stops, it is reported stuck after the
// limit. On synctest's clock: the minute of idleness takes no time.
func TestIdleLoopBeatsWithinTheStuckLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _, _ := benchAgent(t)
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		for range 120 {
			time.Sleep(DefaultStuckAfter / 20)
			synctest.Wait()
			if err := loopHealth(a.beat.at(), time.Now(), DefaultStuckAfter); err != nil {
				t.Fatalf("idle loop: %v", err)
			}
		}

		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		time.Sleep(DefaultStuckAfter + time.Millisecond)
		if err := loopHealth(a.beat.at(), time.Now(), DefaultStuckAfter); err == nil {
			t.Errorf("a loop that stopped %v ago is reported healthy", DefaultStuckAfter)
		}
	})
}

func TestLoopHealth(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		last    time.Time
		healthy bool
	}{
		{"a loop that beat just now is healthy", now, true},
		{"a loop that beat at the limit is healthy", now.Add(-10 * time.Second), true},
		{"a loop silent for longer than the limit is stuck", now.Add(-10*time.Second - time.Millisecond), false},
		{"a loop silent for minutes is stuck", now.Add(-5 * time.Minute), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loopHealth(tc.last, now, 10*time.Second)
			if (err == nil) != tc.healthy {
				t.Fatalf("loopHealth = %v, want healthy %t", err, tc.healthy)
			}
			if err != nil && !strings.Contains(err.Error(), "event loop stuck") {
				t.Errorf("message %q does not say the loop is stuck", err)
			}
		})
	}
}
