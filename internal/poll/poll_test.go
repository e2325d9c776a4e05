package poll

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, as testing's does.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder in a goroutine of its own, and returns what
// it failed with ("" if it returned).
func run(f func(testing.TB)) string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.failed
}

// On synctest's clock: a minute's wait takes no time.
func TestUntilReturnsOnceTheConditionHoldsAndFailsAfterTheTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		if msg := run(func(tb testing.TB) { Until(tb, "three calls", func() bool { calls++; return calls == 3 }) }); msg != "" {
			t.Errorf("Until failed with %q, want it to return at the third call", msg)
		}
		if calls != 3 || time.Since(start) >= Timeout {
			t.Errorf("%d calls in %v, want 3, well within %v", calls, time.Since(start), Timeout)
		}

		start = time.Now()
		msg := run(func(tb testing.TB) { Until(tb, "never", func() bool { return false }) })
		if !strings.Contains(msg, "never") || time.Since(start) < Timeout {
			t.Errorf("Until failed with %q after %v, want a failure naming what it waited for after %v", msg, time.Since(start), Timeout)
		}

		n := 0
		msg = run(func(tb testing.TB) {
			Check(tb, func() string { n++; return fmt.Sprintf("missing %d", n) })
		})
		if !strings.HasSuffix(msg, fmt.Sprintf("missing %d", n)) {
			t.Errorf("Check failed with %q, want the last thing missing (missing %d)", msg, n)
		}
	})
}
