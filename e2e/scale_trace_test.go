package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/exp/trace"
)

// pushPath is one push through the agent as its execution trace shows it:
// the event loop woken (by a discovery event), running, waking the ADS
// stream, which runs and sends. Times are the agent's wall clock, which is
// this host's: they compare with the watcher's and the ADS client's.
type pushPath struct {
	// read: the agent's HTTP/2 read loop resumed and read the watch event
	// that, decoded by client-go's StreamWatcher and passed on by the
	// reflector, woke the loop (zero when the trace shows another chain).
	read                  time.Time
	loopWoke, loopRan     time.Time // the loop's last wake and start before the push
	streamWoke, streamRan time.Time // the loop woke the stream; it ran
	streamDone            time.Time // it blocked again: the response handed to gRPC
}

// readPushPaths reads an agent's execution trace (/debug/pprof/trace): every
// time the event loop woke the ADS stream, with the loop's wake before it.
// With one ADS stream and pushes far apart, each path is one change's.
func readPushPaths(r io.Reader) ([]pushPath, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	var snap *trace.ClockSnapshot
	wall := func(t trace.Time) time.Time {
		if snap == nil {
			return time.Time{}
		}
		return snap.Wall.Add(time.Duration(t - snap.Trace))
	}
	loop, stream := trace.NoGoroutine, trace.NoGoroutine
	var loopWoke, loopRan, read time.Time
	// Who woke each goroutine last, from which function, and when the waker
	// had last resumed running (what it did since led to the wake).
	type wake struct {
		by      trace.GoID
		in      string // the waker's function that woke it
		resumed time.Time
	}
	resumed := map[trace.GoID]time.Time{}
	woke := map[trace.GoID]wake{}
	// chain follows wakes back from g through the functions named, and
	// returns when the first waker in the chain resumed before waking.
	chain := func(g trace.GoID, via ...string) time.Time {
		var at time.Time
		for _, fn := range via {
			w, ok := woke[g]
			if !ok || !strings.HasSuffix(w.in, fn) {
				return time.Time{}
			}
			g, at = w.by, w.resumed
		}
		return at
	}
	var cur *pushPath
	var out []pushPath
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			if loop == trace.NoGoroutine || stream == trace.NoGoroutine {
				return nil, errors.New("the trace shows no event loop (agent.(*Agent).Run) or no ADS stream (xds.(*stream).run) blocking")
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch ev.Kind() {
		case trace.EventSync:
			if s := ev.Sync(); s.ClockSnapshot != nil {
				snap = s.ClockSnapshot
			}
			continue
		case trace.EventStateTransition:
		default:
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		g := st.Resource.Goroutine()
		from, to := st.Goroutine()
		if to == trace.GoWaiting { // the blocking goroutine's own stack says what it is
			switch {
			case loop == trace.NoGoroutine && inStack(st.Stack, "agent.(*Agent).Run"):
				loop = g
			case stream == trace.NoGoroutine && inStack(st.Stack, "xds.(*stream).run"):
				stream = g
			}
		}
		t := wall(ev.Time())
		if to == trace.GoRunning {
			resumed[g] = t
		}
		if from == trace.GoWaiting && to == trace.GoRunnable {
			by := ev.Goroutine()
			woke[g] = wake{by: by, in: waker(ev.Stack()), resumed: resumed[by]}
		}
		switch g {
		case loop:
			if from == trace.GoWaiting && to == trace.GoRunnable {
				loopWoke = t
				read = chain(loop, "agent.(*Agent).Enqueue", "watch.(*StreamWatcher).receive", "http2.(*pipe).Write")
			}
			if to == trace.GoRunning {
				loopRan = t
			}
		case stream:
			switch {
			case from == trace.GoWaiting && to == trace.GoRunnable && inStack(ev.Stack(), "xds.(*stream).wake"):
				cur = &pushPath{read: read, loopWoke: loopWoke, loopRan: loopRan, streamWoke: t}
			case to == trace.GoRunning && cur != nil && cur.streamRan.IsZero():
				cur.streamRan = t
			case to == trace.GoWaiting && cur != nil && !cur.streamRan.IsZero():
				cur.streamDone = t
				out = append(out, *cur)
				cur = nil
			}
		}
	}
}

// waker is the first function in s outside the runtime and sync packages:
// the one that woke a goroutine (by a channel send, a Cond.Signal, ...).
func waker(s trace.Stack) string {
	for f := range s.Frames() {
		if !strings.HasPrefix(f.Func, "runtime.") && !strings.HasPrefix(f.Func, "sync.") {
			return f.Func
		}
	}
	return ""
}

func inStack(s trace.Stack, fn string) bool {
	for f := range s.Frames() {
		if strings.HasSuffix(f.Func, fn) {
			return true
		}
	}
	return false
}

// attachPaths gives each flip the push that carried it: the last one the
// stream finished before the client received it, if that was after the
// watcher saw the change (flips are ≥ 50 ms apart; churn is not subscribed).
func attachPaths(t testing.TB, file string, flips []flipTiming) {
	f, err := os.Open(file)
	if err != nil {
		t.Logf("scale: no execution trace: %v", err)
		return
	}
	defer f.Close()
	paths, err := readPushPaths(f)
	if err != nil {
		t.Errorf("scale: reading the agent's execution trace: %v", err)
		return
	}
	for n := range flips {
		fl := &flips[n]
		i, _ := slices.BinarySearchFunc(paths, fl.pushed, func(p pushPath, at time.Time) int { return p.streamDone.Compare(at) })
		if i > 0 && paths[i-1].streamDone.After(fl.seen.Add(-50*time.Millisecond)) {
			fl.path = &paths[i-1]
		}
	}
}

// segments splits a traced flip's share into where the time went; a
// segment the trace cannot show is -1.
func (f flipTiming) segments() [7]time.Duration {
	p := f.path
	read, clientGo := time.Duration(-1), time.Duration(-1)
	if !p.read.IsZero() {
		read, clientGo = p.read.Sub(f.seen), p.loopWoke.Sub(p.read)
	}
	return [7]time.Duration{
		read,                          // the API server's event reaching the agent, against the watcher (< 0: the agent was first)
		clientGo,                      // client-go: HTTP/2 read, decode, reflector, the source's store
		p.loopRan.Sub(p.loopWoke),     // the loop waiting for a core
		p.streamWoke.Sub(p.loopRan),   // the loop's work: apply, build, publish
		p.streamRan.Sub(p.streamWoke), // the stream waiting for a core
		p.streamDone.Sub(p.streamRan), // the stream's work: plan, marshal, hand to gRPC
		f.pushed.Sub(p.streamDone),    // gRPC's write and the client's read
	}
}

var segmentNames = [7]string{"to agent", "client-go", "loop wait", "loop work", "stream wait", "stream work", "write+read"}

// reportPaths says where the traced flips' time went: each segment's
// quantiles in one line of the test's log, and every traced flip segment by
// segment, slowest first, in dir/paths.txt (a benchmark's log keeps only
// its first lines).
func reportPaths(t testing.TB, dir string, flips []flipTiming) {
	var traced []flipTiming
	for _, f := range flips {
		if f.path != nil {
			traced = append(traced, f)
		}
	}
	if len(traced) == 0 {
		return
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/1e6) }
	var b strings.Builder
	for s, name := range segmentNames {
		var ds []time.Duration
		for _, f := range traced {
			if d := f.segments()[s]; d != -1 {
				ds = append(ds, d)
			}
		}
		slices.Sort(ds)
		fmt.Fprintf(&b, "; %s p50 %s p99 %s", name, ms(quantile(ds, 0.5)), ms(quantile(ds, 0.99)))
	}
	t.Logf("scale: %d flips in the execution trace, in ms%s (each flip: %s)", len(traced), b.String(), filepath.Join(dir, "paths.txt"))
	slices.SortFunc(traced, func(a, b flipTiming) int { return int(b.share() - a.share()) })
	b.Reset()
	fmt.Fprintf(&b, "service\tseen\tshare ms")
	for _, name := range segmentNames {
		fmt.Fprintf(&b, "\t%s", name)
	}
	for _, f := range traced {
		fmt.Fprintf(&b, "\n%s\t%s\t%s", scaleSvc(f.svc), f.seen.Format(time.StampMicro), ms(f.share()))
		for _, d := range f.segments() {
			fmt.Fprintf(&b, "\t%s", ms(d))
		}
	}
	b.WriteString("\n")
	if err := os.WriteFile(filepath.Join(dir, "paths.txt"), []byte(b.String()), 0o644); err != nil {
		t.Errorf("scale: %v", err)
	}
}
