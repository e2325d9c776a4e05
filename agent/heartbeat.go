package agent

import (
	"fmt"
	"sync/atomic"
	"time"
)

// heartbeatEvery is how often an idle event loop still beats.
const heartbeatEvery = time.Second

// DefaultStuckAfter is how long the event loop may go without a beat before
// /healthz fails: far above any real iteration (a full rebuild of thousands
// of Services takes well under a second), so only a loop that is blocked — a
// deadlock, a call that never returns — makes the kubelet restart the agent.
const DefaultStuckAfter = 10 * time.Second

// heartbeat is when the event loop last made progress. Run writes it;
// LoopHealth reads it from another goroutine.
type heartbeat struct{ last atomic.Int64 } // unix nanoseconds

func newHeartbeat() *heartbeat {
	h := &heartbeat{}
	h.now() // a loop that has not started yet is not stuck yet
	return h
}

func (h *heartbeat) now() { h.last.Store(time.Now().UnixNano()) }

func (h *heartbeat) at() time.Time { return time.Unix(0, h.last.Load()) }

// loopHealth says why the event loop counts as stuck at now, given its last
// beat; nil when it beat within limit.
func loopHealth(last, now time.Time, limit time.Duration) error {
	if age := now.Sub(last); age > limit {
		return fmt.Errorf("event loop stuck: no progress for %s (limit %s)", age.Round(time.Millisecond), limit)
	}
	return nil
}

// LoopHealth says why the event loop counts as stuck: no progress for longer
// than limit; nil while it makes progress. Any goroutine may call it.
func (a *Agent) LoopHealth(limit time.Duration) error {
	return loopHealth(a.beat.at(), time.Now(), limit)
}
