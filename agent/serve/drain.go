package serve

import (
	"log/slog"
	"net"
	"time"
)

// goAwayGrace is how long RPCs may go on after GOAWAY before they are cut,
// at most. ADS streams never end by themselves, so this is normally the
// whole wait: cut, a client re-opens its stream at once on a new
// connection, which GOAWAY has already sent elsewhere.
const goAwayGrace = time.Second

// drain shuts the ADS server down in three steps, all within timeout:
//
//  1. lis is closed at once, so the kernel hands new connections to the
//     other agent listening on the same port (SO_REUSEPORT), if any;
//  2. open streams are served, and updated, for delay more: time for an
//     agent starting beside this one to become ready;
//  3. GOAWAY tells clients to reconnect; streams still open goAwayGrace
//     later (every ADS stream) are cut. With no delay there is nothing to
//     hand over to (no agent beside this one), so they are cut at once.
//
// The cut comes by 90% of timeout at the latest, leaving the rest for the
// process to exit, and a delay too long for that is shortened so that
// GOAWAY still comes before the cut.
func drain(g stopper, lis net.Listener, delay, timeout time.Duration, log *slog.Logger) {
	start := time.Now()
	goAwayAt, cutAt := drainPlan(delay, timeout)
	if err := lis.Close(); err != nil {
		log.Warn("closing the ADS listener", "err", err)
	}
	log.Info("draining: not accepting ADS connections; open streams are served until GOAWAY", "goaway_in", goAwayAt)
	time.Sleep(goAwayAt)

	stopped := make(chan struct{})
	go func() {
		g.GracefulStop() // sends GOAWAY, then waits for every RPC to end
		close(stopped)
	}()
	cut := time.NewTimer(cutAt - time.Since(start))
	defer cut.Stop()
	select {
	case <-stopped:
	case <-cut.C:
		g.Stop()
		<-stopped
	}
	log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
}

// stopper is the ADS server as drain stops it.
type stopper interface {
	GracefulStop() // GOAWAY, then wait for every stream to end
	Stop()         // close every connection
}

// drainPlan says when, from the start of a drain, GOAWAY is sent and open
// streams are cut: see drain.
func drainPlan(delay, timeout time.Duration) (goAwayAt, cutAt time.Duration) {
	end := timeout * 9 / 10
	goAwayAt = max(0, min(delay, end-min(goAwayGrace, end/2)))
	cutAt = min(goAwayAt+min(goAwayGrace, delay), end)
	return goAwayAt, cutAt
}
