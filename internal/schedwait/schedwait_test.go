package schedwait

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTotalsNeverGoBackwards(t *testing.T) {
	ms := time.Millisecond
	type reading map[int]counts
	for _, tc := range []struct {
		name     string
		readings []reading
		wait     time.Duration
		runs     uint64
	}{
		{"the first reading counts whole",
			[]reading{{1: {5 * ms, 10}, 2: {1 * ms, 3}}}, 6 * ms, 13},
		{"growth counts as the difference",
			[]reading{{1: {5 * ms, 10}}, {1: {7 * ms, 15}}}, 7 * ms, 15},
		{"a thread that exits keeps what it contributed",
			[]reading{{1: {5 * ms, 10}, 2: {4 * ms, 8}}, {1: {6 * ms, 11}}}, 10 * ms, 19},
		{"a new thread counts from zero",
			[]reading{{1: {5 * ms, 10}}, {1: {5 * ms, 10}, 3: {2 * ms, 4}}}, 7 * ms, 14},
		{"a reused thread id, its counters lower, counts from zero",
			[]reading{{1: {5 * ms, 10}}, {1: {1 * ms, 2}}}, 6 * ms, 12},
		{"an exited thread's id back later counts from zero",
			[]reading{{1: {5 * ms, 10}}, {}, {1: {2 * ms, 3}}}, 7 * ms, 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tot totals
			for _, r := range tc.readings {
				tot.add(r)
			}
			if tot.wait != tc.wait || tot.runs != tc.runs {
				t.Errorf("wait %v, runs %d; want %v, %d", tot.wait, tot.runs, tc.wait, tc.runs)
			}
		})
	}
}

// TestWaitGrowsWhenThreadsOutnumberCPUs: with twice as many busy threads as
// CPUs, this process's threads must wait for a CPU, and the collector must
// say so.
func TestWaitGrowsWhenThreadsOutnumberCPUs(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc/self/task: schedstat is Linux's")
	}
	c := NewCollector()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	read := func() (wait, runs float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "nodexds_cpu_wait_seconds_total":
				wait = mf.GetMetric()[0].GetCounter().GetValue()
			case "nodexds_cpu_timeslices_total":
				runs = mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return wait, runs
	}
	wait0, runs0 := read()
	if runs0 == 0 {
		t.Fatal("no timeslices counted for a running process")
	}

	n := 2 * runtime.NumCPU()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	var wg sync.WaitGroup
	stop := time.Now().Add(300 * time.Millisecond)
	for range n {
		wg.Go(func() {
			runtime.LockOSThread() // a thread each, not goroutines sharing one
			defer runtime.UnlockOSThread()
			for time.Now().Before(stop) {
			}
		})
	}
	wg.Wait()

	wait1, runs1 := read()
	if runs1 <= runs0 {
		t.Errorf("timeslices %v → %v: did not grow", runs0, runs1)
	}
	// n threads on n/2 CPUs for 0.3 s wait about 0.15 s each, n × 0.15 s in
	// all: ask for far less.
	if got := wait1 - wait0; got < 0.05 {
		t.Errorf("waited %.3fs for a CPU with %d busy threads on %d CPUs; want ≥ 0.05s", got, n, runtime.NumCPU())
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if got := testutil.CollectAndCount(c); got != 2 {
		t.Errorf("%d metrics; want 2", got)
	}
}

func TestNoSchedstatNoMetrics(t *testing.T) {
	c := newCollector(t.TempDir() + "/missing")
	if got := testutil.CollectAndCount(c); got != 0 {
		t.Errorf("%d metrics from a missing directory; want 0", got)
	}
	// Threads listed, none with a schedstat (a kernel without
	// CONFIG_SCHED_INFO): nothing, rather than zeros that never move.
	dir := t.TempDir()
	if err := os.MkdirAll(dir+"/101", 0o755); err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(newCollector(dir)); got != 0 {
		t.Errorf("%d metrics from threads without schedstat; want 0", got)
	}
}

// TestReadsWaitAndTimeslices: schedstat is "run time, wait time,
// timeslices"; the second and third are the ones reported.
func TestReadsWaitAndTimeslices(t *testing.T) {
	dir := t.TempDir()
	for tid, line := range map[string]string{"101": "900 200 3\n", "102": "50 7 1\n"} {
		if err := os.MkdirAll(dir+"/"+tid, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/"+tid+"/schedstat", []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readThreads(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]counts{101: {wait: 200, runs: 3}, 102: {wait: 7, runs: 1}}
	if len(got) != len(want) || got[101] != want[101] || got[102] != want[102] {
		t.Errorf("read %v; want %v", got, want)
	}
	if err := os.WriteFile(dir+"/102/schedstat", []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readThreads(dir); err == nil {
		t.Error("a malformed schedstat was read without an error")
	}
}
