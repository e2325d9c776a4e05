package agent

import (
	"context"
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
