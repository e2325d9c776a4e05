// Package poll is the one wait-until helper of the tests: it waits for
// something observable to become true, rather than for a time to pass.
package poll

import (
	"testing"
	"time"
)

// Timeout is how long Until waits by default. A deadline in a test is a
// bound for "eventually", not a latency target: it is far above what any
// wait takes today, so that a machine several times slower (a shared CI
// runner, the race detector, a CPU hog beside the tests) gives the same
// verdict. Latency belongs in benchmarks and the scale run.
const Timeout = time.Minute

// every is the pause between two looks.
const every = 5 * time.Millisecond

// Until calls cond until it returns true, and fails t after Timeout saying
// what it waited for.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	UntilWithin(t, Timeout, what, cond)
}

// UntilWithin is Until with another deadline, for waits that take long by
// design (thousands of resources under the race detector).
func UntilWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(every)
	}
}

// Check calls check until it returns "", and fails t after Timeout with the
// last thing it said was missing.
func Check(t testing.TB, check func() string) {
	t.Helper()
	start := time.Now()
	for {
		why := check()
		if why == "" {
			return
		}
		if time.Since(start) > Timeout {
			t.Fatalf("not within %v: %s", Timeout, why)
		}
		time.Sleep(every)
	}
}
