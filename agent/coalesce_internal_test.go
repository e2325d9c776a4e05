package agent

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/discovery"
)

// TestCoalescingIsPerService drives flush with explicit times: each Service
// has its own window, so one Service's burst never delays another's change.
// svc0–svc2 are subscribed, svc3 is not; the window is 100 ms.
func TestCoalescingIsPerService(t *testing.T) {
	type step struct {
		at      int      // ms
		change  []string // Services whose slice changes; "node" moves a node to another zone
		force   bool     // a Sync barrier
		built   int      // Services rebuilt by this step's flush
		waiting []string // Services held for their window after it
		due     int      // when the first held one is due, ms (0: none held)
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a first change is built at once", []step{
			{at: 0, change: []string{"svc0"}, built: 1},
		}},
		{"a second change within the window waits for its end", []step{
			{at: 0, change: []string{"svc0"}, built: 1},
			{at: 30, change: []string{"svc0"}, waiting: []string{"svc0"}, due: 100},
			{at: 60, change: []string{"svc0"}, waiting: []string{"svc0"}, due: 100},
			{at: 100, built: 1},
		}},
		{"another Service's change does not wait for that window", []step{
			{at: 0, change: []string{"svc0"}, built: 1},
			{at: 30, change: []string{"svc0"}, waiting: []string{"svc0"}, due: 100},
			{at: 31, change: []string{"svc1"}, built: 1, waiting: []string{"svc0"}, due: 100},
			{at: 40, change: []string{"svc1"}, waiting: []string{"svc0", "svc1"}, due: 100},
			{at: 100, built: 1, waiting: []string{"svc1"}, due: 131},
			{at: 131, built: 1},
		}},
		{"a change after the window is built at once", []step{
			{at: 0, change: []string{"svc0"}, built: 1},
			{at: 150, change: []string{"svc0"}, built: 1},
		}},
		{"a change nobody subscribes to builds nothing and spends no window", []step{
			{at: 0, change: []string{"svc3"}},
			{at: 10, change: []string{"svc3", "svc2"}, built: 1},
		}},
		{"a barrier builds what waits", []step{
			{at: 0, change: []string{"svc0"}, built: 1},
			{at: 30, change: []string{"svc0"}, waiting: []string{"svc0"}, due: 100},
			{at: 31, force: true, built: 1},
		}},
		{"a topology change rebuilds everything subscribed, once per window", []step{
			{at: 0, change: []string{"node"}, built: 3},
			{at: 20, change: []string{"node", "svc1"}, built: 1, due: 100},
			{at: 100, built: 3},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, cache, m := benchAgent(t)
			a.cfg.Coalesce = 100 * time.Millisecond
			t0 := time.Now()
			for _, e := range benchCluster(4, 3) {
				a.apply(e, t0)
			}
			a.flush(t0, true)
			subscribeAll(t, a, cache, 3)
			t0 = t0.Add(time.Second) // the setup's windows are over
			gen := 0
			for _, s := range tc.steps {
				now := t0.Add(time.Duration(s.at) * time.Millisecond)
				for _, c := range s.change {
					gen++
					if c == "node" {
						a.apply(discovery.Event{Node: &discovery.Node{Name: "n1", Zone: fmt.Sprintf("moved%d", gen), Region: "r1"}}, now)
						continue
					}
					var i int
					fmt.Sscanf(c, "svc%d", &i)
					key := discovery.ServiceKey{Namespace: fmt.Sprintf("ns%d", i%50), Name: c}
					a.apply(discovery.Event{Slice: benchSlice(key, i, 3, gen)}, now)
				}
				before := testutil.ToFloat64(m.Rebuilds)
				next, held := a.flush(now, s.force)
				built := int(testutil.ToFloat64(m.Rebuilds) - before)
				var waiting []string
				for k := range a.dirty {
					waiting = append(waiting, k.Name)
				}
				slices.Sort(waiting)
				due := 0
				if held {
					due = int(next.Sub(t0) / time.Millisecond)
				}
				if built != s.built || !slices.Equal(waiting, s.waiting) || due != s.due {
					t.Fatalf("at %d ms (changed %v): built %d, waiting %v due at %d ms; want built %d, waiting %v due at %d ms",
						s.at, s.change, built, waiting, due, s.built, s.waiting, s.due)
				}
			}
		})
	}
}
