// Package schedwait reports how long the process's threads were runnable
// but waiting for a CPU, from Linux's per-thread schedstat.
//
// A change's latency through the agent is mostly this wait when the node's
// CPUs are contended, not the agent's own work (docs/BENCHMARKS.md: on a
// busy 2-core machine the agent's threads waited longer than they ran).
// Exported next to process_cpu_seconds_total, it tells an operator which of
// the two to act on: a larger CPU request, or the agent.
package schedwait

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counts is one thread's schedstat: time runnable but not running, and the
// number of times it was put on a CPU.
type counts struct {
	wait time.Duration
	runs uint64
}

// totals folds per-thread counters into process totals that never go
// backwards: a thread that exits keeps what it contributed up to the last
// reading (what it did after that is lost), and a thread id reused by a new
// thread is counted from zero when its counters read lower than the old
// thread's (a reuse that reads higher is taken for the same thread).
type totals struct {
	last map[int]counts
	wait time.Duration
	runs uint64
}

func (t *totals) add(now map[int]counts) {
	for tid, c := range now {
		prev, ok := t.last[tid]
		if !ok || c.wait < prev.wait || c.runs < prev.runs {
			prev = counts{}
		}
		t.wait += c.wait - prev.wait
		t.runs += c.runs - prev.runs
	}
	t.last = now
}

// readThreads reads dir/*/schedstat (dir is /proc/self/task): "run time
// (ns), wait time (ns), timeslices" per thread.
func readThreads(dir string) (map[int]counts, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[int]counts, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited after the listing
		}
		var ran, wait int64
		var runs uint64
		if _, err := fmt.Sscan(string(b), &ran, &wait, &runs); err != nil {
			return nil, fmt.Errorf("%s/%s/schedstat: %w", dir, e.Name(), err)
		}
		out[tid] = counts{wait: time.Duration(wait), runs: runs}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no thread has a schedstat", dir)
	}
	return out, nil
}

// Collector exports nodexds_cpu_wait_seconds_total and
// nodexds_cpu_timeslices_total. Where schedstat is not there (not Linux),
// it exports nothing.
type Collector struct {
	dir        string
	wait, runs *prometheus.Desc

	mu     sync.Mutex
	totals totals
}

// NewCollector returns a Collector of this process's threads.
func NewCollector() *Collector { return newCollector("/proc/self/task") }

func newCollector(dir string) *Collector {
	return &Collector{
		dir: dir,
		wait: prometheus.NewDesc("nodexds_cpu_wait_seconds_total",
			"Time the agent's threads were runnable but waiting for a CPU (Linux schedstat). Divided by nodexds_cpu_timeslices_total, the mean wait each time a thread got a CPU: above about 1 ms (alert NodexdsCPUStarved), the node's CPU contention, not the agent's work, is delaying pushes.", nil, nil),
		runs: prometheus.NewDesc("nodexds_cpu_timeslices_total",
			"Times the agent's threads were put on a CPU, after a wake or a preemption (Linux schedstat).", nil, nil),
	}
}

func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.wait
	ch <- c.runs
}

func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	// Read under the lock: an older reading applied after a newer one, by
	// two scrapes at once, would count every thread's time again.
	c.mu.Lock()
	now, err := readThreads(c.dir)
	if err != nil {
		c.mu.Unlock()
		return
	}
	c.totals.add(now)
	wait, runs := c.totals.wait, c.totals.runs
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.wait, prometheus.CounterValue, wait.Seconds())
	ch <- prometheus.MustNewConstMetric(c.runs, prometheus.CounterValue, float64(runs))
}
