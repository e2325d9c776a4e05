package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/exp/trace"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

func (p pushPath) String() string {
	at := func(t time.Time) string { return t.Format("15:04:05.000000") }
	return fmt.Sprintf("{read %s loop woke %s ran %s stream woke %s ran %s done %s}",
		at(p.read), at(p.loopWoke), at(p.loopRan), at(p.streamWoke), at(p.streamRan), at(p.streamDone))
}

// readPushPaths reads an agent's execution trace (/debug/pprof/trace): every
// time the event loop woke an ADS stream, with the loop's own wake before it
// and the watch event behind that. With one ADS stream and pushes far
// apart, each path is one change's. Goroutines are told apart by what they
// call, not by name: the ADS stream's sender is what xds.(*stream).wake
// wakes or starts, and the loop is what wakes it. A push ends when the
// sender blocks again or exits.
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
	// Who woke each goroutine last, from which function, and when the waker
	// had last resumed running (what it did since led to the wake).
	type wake struct {
		by      trace.GoID
		in      string // the waker's function that woke it
		resumed time.Time
	}
	resumed := map[trace.GoID]time.Time{} // last start or return to running
	wokeAt := map[trace.GoID]time.Time{}  // last wake
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
	inflight := map[trace.GoID]*pushPath{} // streams woken for a push, until they block again
	var out []pushPath
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			if len(out) == 0 {
				return nil, errors.New("no push in the trace: no goroutine was woken or started by xds.(*stream).wake and blocked or exited")
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
		t := wall(ev.Time())
		switch {
		case to == trace.GoRunning:
			resumed[g] = t
			if p := inflight[g]; p != nil && p.streamRan.IsZero() {
				p.streamRan = t
			}
		case (from == trace.GoWaiting || from == trace.GoNotExist) && to == trace.GoRunnable:
			// A wake, or a creation: a stream's sender is started by
			// xds.(*stream).wake when it has none running.
			by := ev.Goroutine()
			woke[g] = wake{by: by, in: waker(ev.Stack()), resumed: resumed[by]}
			wokeAt[g] = t
			if inStack(ev.Stack(), "xds.(*stream).wake") && !wokeAt[by].IsZero() {
				inflight[g] = &pushPath{
					read:     chain(by, "agent.(*Agent).Enqueue", "watch.(*StreamWatcher).receive", "http2.(*pipe).Write"),
					loopWoke: wokeAt[by], loopRan: resumed[by], streamWoke: t,
				}
			}
		case to == trace.GoWaiting || to == trace.GoNotExist:
			if p := inflight[g]; p != nil && !p.streamRan.IsZero() {
				p.streamDone = t
				out = append(out, *p)
				delete(inflight, g)
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
	segs := make([][7]time.Duration, len(traced))
	for n, f := range traced {
		segs[n] = f.segments()
	}
	var b strings.Builder
	for s, name := range segmentNames {
		var ds []time.Duration
		for _, fs := range segs {
			if d := fs[s]; d != -1 {
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

// TestPushPathsFromAnAgentTrace: the trace reader the scale run relies on
// finds, in a real agent's execution trace, the push that carried each
// change its ADS client received, with its steps in order and on this
// test's clock. The agent reads its Service from a file (no API server
// needed), so the client-go part of each path is absent.
func TestPushPathsFromAnAgentTrace(t *testing.T) {
	bins := projectBins(t)
	const per, changes = 4, 5
	file := filepath.Join(t.TempDir(), "cluster.json")
	write := func(down int) { // endpoint down is not ready; -1: all are
		slice := scaleSlice(0, per)
		if down >= 0 {
			no := false
			slice.Endpoints[down].Conditions.Ready, slice.Endpoints[down].Conditions.Serving = &no, &no
		}
		svc := scaleService(0)
		svc.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
		slice.TypeMeta = metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"}
		b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{svc, slice}})
		if err != nil {
			t.Fatal(err)
		}
		// Renamed into place: the agent never reads half a file.
		if err := os.WriteFile(file+".tmp", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	write(-1)
	xdsAddr, debugAddr := freeLoopback(t), freeLoopback(t)
	cmd := exec.Command(bins.Nodexds, "serve", "--source=file:"+file, "--file-poll=20ms", "--node-name=node-a",
		"--xds-listen="+xdsAddr, "--admin-listen="+freeLoopback(t), "--debug-listen="+debugAddr,
		"--health-checks=false", "--pprof")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := &agentLines{}
	scanned := make(chan struct{})
	go func() { defer close(scanned); lines.scan(stderr, io.Discard) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-scanned
		if t.Failed() {
			t.Logf("agent log:\n%s", lines.tail(50))
		}
	})
	lines.waitFor(t, 20*time.Second, `"msg":"serving ADS"`)

	pushed := newHistory()
	ads := newScaleADS(t, xdsAddr, scaleConfig{Subscribed: 1, EndpointsPer: per, Measured: 1}, pushed)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	go ads.run(ctx)
	select {
	case <-ads.complete:
	case err := <-ads.failed:
		t.Fatalf("ADS client: %v", err)
	case <-ctx.Done():
		t.Fatal("the ADS client never got its load assignment")
	}

	traced := make(chan []byte, 1)
	go func() {
		defer close(traced)
		resp, err := http.Get("http://" + debugAddr + "/debug/pprof/trace?seconds=4")
		if err != nil {
			t.Errorf("trace: %v", err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("trace: %s %v", resp.Status, err)
			return
		}
		traced <- b
	}()
	time.Sleep(500 * time.Millisecond) // the trace has started
	all := scaleMask(1)<<per - 1
	var flips []flipTiming
	for k := range changes {
		down, want := k%per, all&^(1<<(k%per))
		if k%2 == 1 {
			down, want = -1, all
		}
		from := pushed.len(0)
		wrote := time.Now()
		write(down)
		at, err := pushed.wait(ctx, 0, from, want)
		if err != nil {
			t.Fatalf("change %d never reached the client: %v", k, err)
		}
		flips = append(flips, flipTiming{wrote: wrote, seen: wrote, pushed: at})
	}
	b, ok := <-traced
	if !ok {
		t.Fatal("no trace")
	}
	paths, err := readPushPaths(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for k, f := range flips {
		var p *pushPath
		for i := range paths {
			if !paths[i].streamDone.Before(f.wrote) && !paths[i].streamDone.After(f.pushed) {
				p = &paths[i]
			}
		}
		if p == nil {
			t.Fatalf("change %d (written %s, received %s): no push in the trace between; pushes: %v",
				k, f.wrote.Format(time.StampMicro), f.pushed.Format(time.StampMicro), paths)
		}
		steps := []time.Time{p.loopWoke, p.loopRan, p.streamWoke, p.streamRan, p.streamDone}
		if !slices.IsSortedFunc(steps, time.Time.Compare) || p.loopWoke.Before(f.wrote) || !p.read.IsZero() {
			t.Errorf("change %d (written %s, received %s): path out of order or outside it: %v",
				k, f.wrote.Format(time.StampMicro), f.pushed.Format(time.StampMicro), p)
		}
	}
}

// freeLoopback is a loopback address with a port nothing listens on now.
func freeLoopback(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
