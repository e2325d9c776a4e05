package serve

import (
	"testing"
	"time"
)

// The drain's schedule, on no clock: TestDrainOnShutdown checks that a real
// agent follows it, with margins a busy machine cannot eat.
func TestDrainPlan(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name           string
		delay, timeout time.Duration
		goAway, cut    time.Duration
	}{
		{"streams are served for the delay, then cut a grace after GOAWAY", 2 * s, 30 * s, 2 * s, 3 * s},
		{"no delay: GOAWAY and the cut at once, nothing to hand over to", 0, 30 * s, 0, 0},
		{"a delay shorter than the grace is also the grace", 300 * time.Millisecond, 30 * s, 300 * time.Millisecond, 600 * time.Millisecond},
		{"a delay beyond the timeout is shortened so GOAWAY still precedes the cut", time.Minute, 10 * s, 8 * s, 9 * s},
		{"the cut comes by 90% of the timeout at the latest", 5 * s, 6 * s, 4400 * time.Millisecond, 5400 * time.Millisecond},
		{"a tiny timeout halves what is left for the grace", time.Minute, s, 450 * time.Millisecond, 900 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goAway, cut := drainPlan(tc.delay, tc.timeout)
			if goAway != tc.goAway || cut != tc.cut {
				t.Errorf("drainPlan(%v, %v) = GOAWAY at %v, cut at %v; want %v and %v", tc.delay, tc.timeout, goAway, cut, tc.goAway, tc.cut)
			}
			if cut > tc.timeout*9/10 || goAway > cut {
				t.Errorf("GOAWAY at %v, cut at %v: want GOAWAY ≤ cut ≤ 90%% of %v", goAway, cut, tc.timeout)
			}
		})
	}
}
