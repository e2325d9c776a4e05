package e2e

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Stack is a proxyless gRPC client implementation.
type Stack string

const (
	Go Stack = "go" // grpc-go: nodexds-echo probe
	JS Stack = "js" // @grpc/grpc-js-xds: jsclient/probe.js
	// CCore is gRPC C-core (what Python, C++, Ruby, PHP and C# use), through
	// Debian's python3-grpcio: pyclient/probe.py. Scenarios opt in with
	// Env.WithStack.
	CCore Stack = "ccore"
	// Go155 is grpc-go v1.55.0 (grpcgo155/, its own module): an older
	// grpc-go, for compatibility. Scenarios opt in with Env.WithStack.
	Go155 Stack = "go1.55"
)

// Stacks are the client stacks every scenario runs.
var Stacks = []Stack{Go, JS}

const (
	// probeInterval is the default time between a probe's RPCs: the
	// resolution of every "when did the client notice" figure.
	probeInterval = 20 * time.Millisecond
	probeTimeout  = time.Second
	// waitTimeout bounds WaitServedBy and friends. A change normally reaches
	// clients in well under a second; the margin covers a JS client's start
	// (~1 s) and ADS reconnection backoff.
	waitTimeout = 30 * time.Second
)

// ProbeOptions configure StartProbe.
type ProbeOptions struct {
	Stack Stack
	// Node runs the client (default clientNode); it uses that node's agent.
	Node string
	// Targets are xds:/// names. Several are allowed for JS only: one
	// process, one xDS client, so one ADS stream that adds each later target
	// as a new subscription (see jsclient/probe.js).
	Targets []string
	// Name labels the client in tables and its log file (default the stack).
	Name string
	// Interval between RPCs (default probeInterval).
	Interval time.Duration
	// Headers ("name:value") are sent with every RPC.
	Headers []string
	// Fallback names a node whose agent is the client's second xDS server
	// (gRFC A71; `nodexds bootstrap --fallback-server`, with --node-name).
	Fallback string
	// Server overrides the agent address in the bootstrap (host:port).
	Server string
	// Certs is the client pod's certificate directory (Env.IssueCerts),
	// written into its bootstrap (--certs, --cert-refresh certRefresh).
	Certs string
	// XDSCreds gives the client's channel xDS credentials (gRFC A29): mTLS
	// when its cluster says so, plaintext otherwise. Without them a client
	// is plaintext whatever its cluster says.
	XDSCreds bool
}

// RPC is one line of a probe's output.
type RPC struct {
	// At is when the line was read: the RPC's end, within a pipe's latency.
	At      time.Time
	Target  string
	Pod     string // the backend that answered, "" for a failure
	Latency time.Duration
	Code    string // gRPC code name of a failure, "" for success
	Msg     string
}

func (r RPC) OK() bool { return r.Code == "" }

func (r RPC) String() string {
	if r.OK() {
		return fmt.Sprintf("%s ok %s %s", r.At.Format("15:04:05.000"), r.Pod, r.Latency)
	}
	return fmt.Sprintf("%s err %s %q", r.At.Format("15:04:05.000"), r.Code, r.Msg)
}

// Probe is a running client process that sends one RPC per interval and
// reports which pod answered each.
type Probe struct {
	Stack    Stack
	Name     string
	Node     string
	Targets  []string
	Interval time.Duration

	test     string
	summary  *summaryRow
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	stopOnce sync.Once
	logPath  string

	mu      sync.Mutex
	rpcs    []RPC
	phases  []phase
	waitErr error // set once the process has exited
}

type phase struct {
	name string
	from int // index of its first RPC
}

// Label names the client in messages: "js client be1 on node-a1".
func (p *Probe) Label() string {
	if p.Name == string(p.Stack) {
		return fmt.Sprintf("%s client on %s", p.Stack, p.Node)
	}
	return fmt.Sprintf("%s client %s on %s", p.Stack, p.Name, p.Node)
}

// StartProbe starts a client inside its node, bootstrapped (the way a pod
// would be) by `nodexds bootstrap` for that node's agent, and stops it in
// t.Cleanup, logging its RPCs-by-pod table.
func (e *Env) StartProbe(t testing.TB, o ProbeOptions) *Probe {
	t.Helper()
	if o.Node == "" {
		o.Node = clientNode
	}
	if o.Name == "" {
		o.Name = string(o.Stack)
	}
	if o.Interval == 0 {
		o.Interval = probeInterval
	}
	if len(o.Targets) == 0 || (len(o.Targets) > 1 && o.Stack != JS) {
		t.Fatalf("e2e: StartProbe: %d targets for stack %s (several only for js)", len(o.Targets), o.Stack)
	}
	e.mu.Lock()
	e.seq++
	id := fmt.Sprintf("probe-%s-%s-%d", o.Name, o.Node, e.seq)
	e.mu.Unlock()

	interval := o.Interval.String()
	var argv, env []string
	switch o.Stack {
	case Go, Go155:
		argv = []string{e.Bins.Echo, "probe", "-interval", interval, "-timeout", probeTimeout.String()}
		if o.Stack == Go155 {
			argv = []string{goProbe155(t), "-interval", interval, "-timeout", probeTimeout.String()}
		}
		for _, h := range o.Headers {
			argv = append(argv, "-header", h)
		}
		if o.XDSCreds {
			argv = append(argv, "-xds-creds")
		}
		argv = append(argv, o.Targets[0])
		// Warnings (xDS stream errors, NACKs) are worth having in the log.
		env = []string{"GRPC_GO_LOG_SEVERITY_LEVEL=warning", "GRPC_GO_LOG_VERBOSITY_LEVEL=0"}
	case JS:
		argv = []string{e.Bins.Node, e.Bins.JSProbe, "--interval", interval, "--timeout", probeTimeout.String()}
		for _, h := range o.Headers {
			argv = append(argv, "--header", h)
		}
		if o.XDSCreds {
			argv = append(argv, "--xds-creds")
		}
		argv = append(argv, o.Targets...)
		env = []string{"GRPC_VERBOSITY=NONE"}
	case CCore:
		if e.Bins.CCoreMissing != "" {
			t.Fatalf("e2e: the C-core stack cannot run here: %s", e.Bins.CCoreMissing)
		}
		argv = []string{e.Bins.Python, e.Bins.PyProbe, "--interval", interval, "--timeout", probeTimeout.String()}
		for _, h := range o.Headers {
			argv = append(argv, "--header", h)
		}
		if o.XDSCreds {
			argv = append(argv, "--xds-creds")
		}
		argv = append(argv, o.Targets[0])
		// C-core logs errors (NACKs, xDS stream errors) by default.
		env = []string{"PYTHONPATH=" + e.Bins.PyStubs, "GRPC_VERBOSITY=ERROR"}
	default:
		t.Fatalf("e2e: unknown stack %q", o.Stack)
	}
	var extra []string
	if o.Fallback != "" {
		extra = []string{"-fallback-server", e.Agents[o.Fallback].XDSAddr(), "-node-name", o.Node}
	}
	if o.Server != "" {
		extra = append(extra, "-server", o.Server)
	}
	if o.Certs != "" {
		extra = append(extra, "-certs", o.Certs, "-cert-refresh", certRefresh.String())
	}
	env = append(env, "GRPC_XDS_BOOTSTRAP_CONFIG="+e.Bootstrap(t, o.Node, "e2e/"+id, extra...))

	p := &Probe{
		Stack: o.Stack, Name: o.Name, Node: o.Node, Targets: o.Targets, Interval: o.Interval,
		test: t.Name(), done: make(chan struct{}),
		logPath: filepath.Join(e.LogDir(), id+".log"),
		phases:  []phase{{name: "start"}},
	}
	p.cmd = e.RunInNode(o.Node, argv...)
	// GRPC_XDS_BOOTSTRAP (a file) would win over the _CONFIG variable.
	p.cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GRPC_XDS_BOOTSTRAP=")
	}), env...)
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	defer logFile.Close() // the child has its own copy
	fmt.Fprintf(logFile, "### %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.cmd.Args, " "))
	p.cmd.Stderr = logFile
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("e2e: start %s: %v", p.Label(), err)
	}
	go p.read(stdout)

	p.summary = summaryRowFor(p)
	e.addProbe(p)
	t.Cleanup(func() {
		p.stop()
		e.removeProbe(p)
		t.Logf("%s", p.Table())
		recordProbe(p)
	})
	return p
}

// read parses the probe's output until it exits.
func (p *Probe) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		r := parseLine(sc.Text(), p.Targets)
		r.At = time.Now()
		p.mu.Lock()
		p.rpcs = append(p.rpcs, r)
		p.mu.Unlock()
	}
	err := p.cmd.Wait()
	p.mu.Lock()
	p.waitErr = err
	p.mu.Unlock()
	close(p.done)
}

// parseLine reads "ok <pod> <µs>[ <target>]" or `err <Code> "<msg>"[ <target>]`;
// the target suffix is there only when the probe has several. Anything else
// counts as a failure with Code "BadLine", so it cannot go unnoticed.
func parseLine(line string, targets []string) RPC {
	bad := RPC{Code: "BadLine", Msg: line}
	r := RPC{Target: targets[0]}
	kind, rest, _ := strings.Cut(line, " ")
	switch kind {
	case "ok":
		f := strings.Fields(rest)
		if len(f) < 2 || len(f) > 3 {
			return bad
		}
		us, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return bad
		}
		r.Pod, r.Latency = f[0], time.Duration(us)*time.Microsecond
		if len(f) == 3 {
			r.Target = f[2]
		}
	case "err":
		code, rest, _ := strings.Cut(rest, " ")
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return bad
		}
		r.Code = code
		r.Msg, _ = strconv.Unquote(q)
		if tgt := strings.TrimSpace(rest[len(q):]); tgt != "" {
			r.Target = tgt
		}
	default:
		return bad
	}
	return r
}

// stop ends the probe (SIGTERM: both probes exit at once, without reporting
// the RPC in flight) and waits for its output to be read. It is idempotent.
func (p *Probe) stop() {
	p.stopOnce.Do(func() {
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// exited returns a description of the probe's exit, "" while it runs.
func (p *Probe) exited() string {
	select {
	case <-p.done:
	default:
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%s exited (%v); its log %s ends:\n%s", p.Label(), p.waitErr, p.logPath, tail(p.logPath, 15))
}

// Mark returns a position in the RPC stream, for the queries below.
func (p *Probe) Mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.rpcs)
}

// RPCs returns the RPCs from mark on.
func (p *Probe) RPCs(from int) []RPC {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.rpcs[min(from, len(p.rpcs)):])
}

// Phase starts a new row in the RPCs-by-pod table.
func (p *Probe) Phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phases = append(p.phases, phase{name: name, from: len(p.rpcs)})
}

// window is the number of recent RPCs a served-by check looks at: enough
// for round robin to visit every wanted pod several times, and for the
// random choice between localities of one priority to pick each (a missed
// one only makes the wait longer).
func (p *Probe) window(pods int) int { return max(40, 5*pods) * len(p.Targets) }

// WaitServedBy waits until the probe's recent RPCs, all sent after this
// call, all succeed and were answered by exactly the given pods. It fails
// the test (with counts by pod) after waitTimeout, and returns how long it
// took.
func (p *Probe) WaitServedBy(t testing.TB, pods ...string) time.Duration {
	t.Helper()
	return p.WaitServedByWithin(t, waitTimeout, pods...)
}

// WaitServedByWithin is WaitServedBy with another timeout.
func (p *Probe) WaitServedByWithin(t testing.TB, timeout time.Duration, pods ...string) time.Duration {
	t.Helper()
	want := map[string]bool{}
	for _, pod := range pods {
		want[pod] = true
	}
	return p.waitFor(t, timeout, fmt.Sprintf("served by exactly {%s}", strings.Join(sorted(want), ", ")), p.window(len(want)),
		func(recent []RPC) bool {
			got := map[string]bool{}
			for _, r := range recent {
				if !r.OK() {
					return false
				}
				got[r.Pod] = true
			}
			return maps.Equal(got, want)
		})
}

// WaitFailing waits until the probe's recent RPCs, all sent after this call,
// all fail.
func (p *Probe) WaitFailing(t testing.TB) time.Duration {
	t.Helper()
	return p.waitFor(t, waitTimeout, "failing every RPC", p.window(1), func(recent []RPC) bool {
		return !slices.ContainsFunc(recent, RPC.OK)
	})
}

// WaitFailingWith waits until the probe's recent RPCs, all sent after this
// call, all fail with code (a Go code name, e.g. "Unavailable").
func (p *Probe) WaitFailingWith(t testing.TB, code string) time.Duration {
	t.Helper()
	return p.waitFor(t, waitTimeout, "failing every RPC with "+code, p.window(1), func(recent []RPC) bool {
		return !slices.ContainsFunc(recent, func(r RPC) bool { return r.Code != code })
	})
}

func (p *Probe) waitFor(t testing.TB, timeout time.Duration, what string, n int, ok func([]RPC) bool) time.Duration {
	t.Helper()
	from, start := p.Mark(), time.Now()
	for {
		rpcs := p.RPCs(from)
		if len(rpcs) >= n && ok(rpcs[len(rpcs)-n:]) {
			return time.Since(start)
		}
		if msg := p.exited(); msg != "" {
			t.Fatalf("%s: waiting to be %s: %s", p.Label(), what, msg)
		}
		if time.Since(start) > timeout {
			recent := rpcs[max(0, len(rpcs)-n):]
			t.Fatalf("%s (%s): not %s within %s\n  last %d RPCs: %s\n  all %d since the wait began: %s\n  last failure: %s",
				p.Label(), strings.Join(p.Targets, " "), what, timeout,
				len(recent), Tally(recent), len(rpcs), Tally(rpcs), lastFailure(rpcs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AssertNoFailures fails the test if an RPC from mark on failed.
func (p *Probe) AssertNoFailures(t testing.TB, from int, during string) {
	t.Helper()
	p.AssertNoFailuresBut(t, from, during, nil, 0)
}

// AssertNoFailuresBut is AssertNoFailures that lets up to max failures that
// excused says are a known client bug pass, logging them.
func (p *Probe) AssertNoFailuresBut(t testing.TB, from int, during string, excused func(RPC) bool, max int) {
	t.Helper()
	rpcs := p.checkable(t, from)
	var failed, let []RPC
	for _, r := range rpcs {
		switch {
		case r.OK():
		case excused != nil && excused(r) && len(let) < max:
			let = append(let, r)
		default:
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		if len(let) > 0 {
			t.Logf("%s: %d RPCs %s, %d failed of a known client bug (at most %d allowed): %s", p.Label(), len(rpcs), during, len(let), max, let[0])
			return
		}
		t.Logf("%s: %d RPCs %s, none failed", p.Label(), len(rpcs), during)
		return
	}
	var b strings.Builder
	for i, r := range failed {
		if i == 5 {
			fmt.Fprintf(&b, "\n    ... %d more", len(failed)-i)
			break
		}
		fmt.Fprintf(&b, "\n    %s", r)
	}
	t.Errorf("%s: %d of %d RPCs failed %s: %s%s", p.Label(), len(failed), len(rpcs), during, Tally(rpcs), b.String())
}

// AssertOnlyPods fails the test if an RPC from mark on was answered by a pod
// not in allowed.
func (p *Probe) AssertOnlyPods(t testing.TB, from int, during string, allowed ...string) {
	t.Helper()
	rpcs := p.checkable(t, from)
	for _, r := range rpcs {
		if r.OK() && !slices.Contains(allowed, r.Pod) {
			t.Errorf("%s: RPC answered by %s %s (allowed: %s); all %d RPCs: %s",
				p.Label(), r.Pod, during, strings.Join(allowed, ", "), len(rpcs), Tally(rpcs))
			return
		}
	}
}

// checkable returns the RPCs from mark on, failing the test if there are
// none or the probe has died: a check over them would prove nothing.
func (p *Probe) checkable(t testing.TB, from int) []RPC {
	t.Helper()
	if msg := p.exited(); msg != "" {
		t.Errorf("%s", msg)
	}
	rpcs := p.RPCs(from)
	if len(rpcs) == 0 {
		t.Errorf("%s: no RPCs to check", p.Label())
	}
	return rpcs
}

// FirstAnsweredBy returns the first RPC answered by pod among those that
// ended after t0, waiting up to waitTimeout for one.
func (p *Probe) FirstAnsweredBy(t testing.TB, pod string, t0 time.Time) RPC {
	t.Helper()
	from := 0
	start := time.Now()
	for {
		rpcs := p.RPCs(from)
		for _, r := range rpcs {
			if r.OK() && r.Pod == pod && r.At.After(t0) {
				return r
			}
		}
		from += len(rpcs)
		if msg := p.exited(); msg != "" {
			t.Fatalf("%s: waiting for an answer from %s: %s", p.Label(), pod, msg)
		}
		if time.Since(start) > waitTimeout {
			recent := p.RPCs(max(0, p.Mark()-p.window(1)))
			t.Fatalf("%s: no RPC answered by %s within %s; recent: %s", p.Label(), pod, waitTimeout, Tally(recent))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Table is the probe's RPCs by pod and by phase, with its failures by code
// and message underneath.
func (p *Probe) Table() string {
	p.mu.Lock()
	rpcs, phases := slices.Clone(p.rpcs), slices.Clone(p.phases)
	p.mu.Unlock()

	podSet := map[string]bool{}
	failures := map[string]int{}
	for _, r := range rpcs {
		if r.OK() {
			podSet[r.Pod] = true
		} else {
			failures[fmt.Sprintf("%s %q", r.Code, r.Msg)]++
		}
	}
	pods := sorted(podSet)
	nameW := len("phase")
	for _, ph := range phases {
		nameW = max(nameW, len(ph.name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "RPCs by pod — %s → %s, one RPC every %s:\n", p.Label(), strings.Join(p.Targets, " "), p.Interval)
	fmt.Fprintf(&b, "  %-*s", nameW, "phase")
	for _, pod := range pods {
		fmt.Fprintf(&b, "  %*s", max(len(pod), 5), pod)
	}
	fmt.Fprintf(&b, "  %6s\n", "failed")
	for i, ph := range phases {
		end := len(rpcs)
		if i+1 < len(phases) {
			end = phases[i+1].from
		}
		counts := map[string]int{}
		failed := 0
		for _, r := range rpcs[ph.from:end] {
			if r.OK() {
				counts[r.Pod]++
			} else {
				failed++
			}
		}
		fmt.Fprintf(&b, "  %-*s", nameW, ph.name)
		for _, pod := range pods {
			fmt.Fprintf(&b, "  %*s", max(len(pod), 5), dash(counts[pod]))
		}
		fmt.Fprintf(&b, "  %6s\n", dash(failed))
	}
	for _, f := range sortedByCount(failures) {
		fmt.Fprintf(&b, "  failed ×%d: %s\n", failures[f], f)
	}
	return strings.TrimRight(b.String(), "\n")
}

func dash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// Tally summarizes RPCs: "be-a1-1 ×20, be-a1-2 ×20, failed Unavailable "…" ×3".
func Tally(rpcs []RPC) string {
	pods := map[string]int{}
	fails := map[string]int{}
	for _, r := range rpcs {
		if r.OK() {
			pods[r.Pod]++
		} else {
			fails[fmt.Sprintf("%s %q", r.Code, r.Msg)]++
		}
	}
	var parts []string
	for _, pod := range sorted(pods) {
		parts = append(parts, fmt.Sprintf("%s ×%d", pod, pods[pod]))
	}
	for _, f := range sortedByCount(fails) {
		parts = append(parts, fmt.Sprintf("failed %s ×%d", f, fails[f]))
	}
	if len(parts) == 0 {
		return "(no RPCs)"
	}
	return strings.Join(parts, ", ")
}

func lastFailure(rpcs []RPC) string {
	for i := len(rpcs) - 1; i >= 0; i-- {
		if !rpcs[i].OK() {
			return rpcs[i].String()
		}
	}
	return "(none)"
}

func sorted[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func sortedByCount(m map[string]int) []string {
	keys := sorted(m)
	slices.SortStableFunc(keys, func(a, b string) int { return m[b] - m[a] })
	return keys
}

// tail returns up to n last lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Clients is one probe per stack with the same options, run side by side.
type Clients map[Stack]*Probe

// StartClients starts one probe per stack of the scenario (Stacks, and
// those added with Env.WithStack), leaving out the stacks it skips.
func (e *Env) StartClients(t testing.TB, o ProbeOptions) Clients {
	t.Helper()
	cs := Clients{}
	for _, s := range e.stacks {
		if _, skipped := e.skip[s]; skipped {
			continue
		}
		o.Stack = s
		cs[s] = e.StartProbe(t, o)
	}
	return cs
}

// Marks returns each client's current position (see Probe.Mark).
func (cs Clients) Marks() map[Stack]int {
	m := map[Stack]int{}
	for s, p := range cs {
		m[s] = p.Mark()
	}
	return m
}
