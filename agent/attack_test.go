package agent_test

// The attacks of issue 11, each against a real agent (in-process; in a child
// process, this test binary as TestAttackAgent, for the attacks whose budget
// is resident memory; or the nodexds binary with -attack.binary) while a
// well-behaved grpc-go xDS client keeps calling a Service through it.
// Attackers run in a child process (this test binary, re-executed), so that
// the agent's memory is not mixed with theirs.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	grpcxds "google.golang.org/grpc/xds"
	xdsbootstrap "google.golang.org/grpc/xds/bootstrap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/echo"
)

var (
	attackFull   = flag.Bool("attack.full", false, "run the attacks at the full size of issue 11 (slow; not under -race)")
	attackBinary = flag.String("attack.binary", "", "attack this nodexds binary and report its RSS from /proc (memory budgets are asserted in-process only)")
	attackReport = flag.String("attack.report", "", "append one markdown table row per attack to this file")
)

const (
	attackEnv      = "NODEXDS_ATTACKER"     // the child's spec, as JSON
	attackAgentEnv = "NODEXDS_ATTACK_AGENT" // the agent child's spec, as JSON
	listenerType   = "type.googleapis.com/envoy.config.listener.v3.Listener"
	goodIP         = "127.0.0.200" // the well-behaved client's address: never an attacker's
	attackServices = 50
	adsPath        = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
)

// Budgets: the agent at rest holds a few MiB; 64 MiB of growth under attack
// keeps a 512 MiB container far from its limit even with several attacks at
// once, and what remains afterwards must be small (no state left behind).
const (
	maxPeakGrowth  = 64 << 20
	maxAfterGrowth = 16 << 20
	maxLogBytes    = 1 << 20
	// Resident memory, as the kubelet counts it, for the attacks whose
	// budget is in RSS (attackCase.rss): growth at peak from one address,
	// from several, and what may remain 10 s after the attacker left.
	maxRSSPeakGrowth      = 64 << 20
	maxRSSPeakGrowthPeers = 128 << 20
	maxRSSAfterGrowth     = 32 << 20
	// The well-behaved client's RPCs, p99, throughout an RSS-budgeted attack.
	maxGoodRPCP99 = 250 * time.Millisecond
	// A subscribed junk listener name costs about 1.9 KiB while held (the
	// server's, the cache's and the agent's indexes, and the stream's
	// state), and its transient garbage on top: bounded by the name limits,
	// the memory a name flood may cost is limits × this.
	perNameCost = 2 << 10
)

// attackSpec is what the child process is told to do.
type attackSpec struct {
	Kind  string        // a..i
	Addr  string        // the agent's ADS address
	N     int           // the attack's size: names, requests, streams or connections
	Peers []string      // local addresses to attack from, in turn
	Cap   time.Duration // stop sending after this long: figures are then lower bounds
}

// attackCase is one attack: the spec at full and quick size, and what the
// attacker must have been told (so that the test fails if the attack did not
// happen or the defence did not act).
type attackCase struct {
	name        string
	kind        string
	full, quick int
	small       int // under -race or -short; 0: a quarter of quick
	peers       []string
	admit       bool // the agent admits node pods only; the attacker is none
	// freshMayFail: the attack fills a total cap, so clients that connect
	// during it may be refused (existing ones must be unharmed).
	freshMayFail bool
	// namesHeld: the attack holds subscriptions (as many as the name limits
	// let it), and each costs up to perNameCost beyond maxPeakGrowth.
	namesHeld bool
	// rss: the agent runs in a child process, and the budgets are its
	// resident memory as the kubelet counts it (maxRSS*) and the good
	// client's RPC p99, rather than the in-process heap.
	rss   bool
	check func(t *testing.T, n int, st map[string]int)
}

func onePeer() []string { return []string{"127.0.0.1"} }

// peerIPs returns n loopback addresses 127.0.0.2, 127.0.0.3, …
func peerIPs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 0, byte((i + 2) >> 8), byte(i + 2)}).String()
	}
	return out
}

var attackCases = []attackCase{
	{
		name: "a/a million junk listener names from one address", kind: "a", full: 1_000_000, quick: 100_000, small: 50_000, peers: onePeer(), namesHeld: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["code:ResourceExhausted"] == 0 || st["names_held"] > xds.DefaultLimits.MaxNamesPerPeer {
				t.Errorf("attacker holds %d names (limit %d per peer), %d streams refused: %v", st["names_held"], xds.DefaultLimits.MaxNamesPerPeer, st["code:ResourceExhausted"], st)
			}
		},
	},
	{
		name: "a/a million junk listener names from 25 addresses", kind: "a", full: 1_000_000, quick: 100_000, peers: peerIPs(25), namesHeld: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["streams"] != n/10000 || st["names_held"] > xds.DefaultLimits.MaxNames {
				t.Errorf("attacker holds %d names (limit %d in all) on %d streams: %v", st["names_held"], xds.DefaultLimits.MaxNames, st["streams"], st)
			}
		},
	},
	{
		name: "b/one stream sends 50 requests of 100,000 fresh names, then 50 of 10,000", kind: "b", full: 50, quick: 8, peers: onePeer(),
		check: func(t *testing.T, n int, st map[string]int) {
			// The cap stops sending, never a wait for what was sent: on a
			// busy machine fewer are sent, and each still gets its answer.
			if big, churn := st["big_sent"], st["churn_sent"]; big < 1 || churn < 1 || st["big_refused"] != big || st["churn_answered"] != churn {
				t.Errorf("want every request of 100,000 names refused and every one of 10,000 answered (at least one of each sent): %v", st)
			}
		},
	},
	{
		name: "c/5,000 connections with one stream each from one address", kind: "c", full: 5000, quick: 500, peers: onePeer(),
		check: func(t *testing.T, n int, st map[string]int) {
			if open := st["conns_open"]; open > xds.DefaultLimits.MaxConnsPerPeer || st["conns_closed"] < n-open {
				t.Errorf("%d of %d connections open (limit %d per peer): %v", open, n, xds.DefaultLimits.MaxConnsPerPeer, st)
			}
		},
	},
	{
		name: "c/5,000 connections with one stream each from 60 addresses", kind: "c", full: 5000, quick: 500, peers: peerIPs(60),
		freshMayFail: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if open := st["conns_open"]; open > xds.DefaultLimits.MaxConns {
				t.Errorf("%d of %d connections open (limit %d): %v", open, n, xds.DefaultLimits.MaxConns, st)
			}
		},
	},
	{
		name: "d/100 streams never read their responses while sending 1 MiB requests, from one address", kind: "d", full: 100, quick: 100, small: 20, peers: onePeer(), rss: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["big_sent"] < n {
				t.Errorf("%d requests of 1 MiB sent on %d streams, want at least one each: %v", st["big_sent"], n, st)
			}
		},
	},
	{
		name: "d/100 streams never read their responses while sending 1 MiB requests, from 10 addresses", kind: "d", full: 100, quick: 100, small: 20, peers: peerIPs(10), rss: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["big_sent"] < n {
				t.Errorf("%d requests of 1 MiB sent on %d streams, want at least one each: %v", st["big_sent"], n, st)
			}
		},
	},
	{
		name: "e/100,000 NACKs with random nonces and 64 KiB error details", kind: "e", full: 100_000, quick: 2000, peers: onePeer(),
		check: func(t *testing.T, n int, st map[string]int) {
			if st["nacks_sent"] == 0 || st["open"] != st["streams"] {
				t.Errorf("forged NACKs must be ignored, not end streams: %v", st)
			}
		},
	},
	{
		name: "f/1,000 streams with 1 MiB node metadata from one address", kind: "f", full: 1000, quick: 100, peers: onePeer(), rss: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["answered"] == 0 {
				t.Errorf("no stream was answered: %v", st)
			}
		},
	},
	{
		name: "f/1,000 streams with 1 MiB node metadata from 10 addresses", kind: "f", full: 1000, quick: 100, peers: peerIPs(10), rss: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["answered"] != n {
				t.Errorf("%d of %d streams answered: %v", st["answered"], n, st)
			}
		},
	},
	{
		name: "g/10,000 requests with 100 KiB garbage type URLs", kind: "g", full: 10_000, quick: 500, peers: onePeer(),
		check: func(t *testing.T, n int, st map[string]int) {
			if st["code:InvalidArgument"] != n {
				t.Errorf("want all %d streams ended InvalidArgument: %v", n, st)
			}
		},
	},
	{
		name: "h/wildcard listener requests", kind: "h", full: 100, quick: 20, peers: onePeer(),
		check: func(t *testing.T, n int, st map[string]int) {
			if st["code:InvalidArgument"] != n || st["resources"] != 0 {
				t.Errorf("want all %d wildcard streams ended InvalidArgument with nothing sent: %v", n, st)
			}
		},
	},
	{
		name: "j/a million server listener names (forged addresses, garbage, a pod no Service knows) from one address", kind: "j", full: 1_000_000, quick: 100_000, small: 30_000, peers: onePeer(), namesHeld: true,
		check: func(t *testing.T, n int, st map[string]int) {
			// Answered with nothing: none of the names is this peer's to have.
			if st["answered"] == 0 || st["resources_sent"] != 0 || st["names_held"] > xds.DefaultLimits.MaxNamesPerPeer {
				t.Errorf("want streams answered with no Listener, names within the per-peer limit: %v", st)
			}
		},
	},
	{
		name: "i/streams from an address that is not a pod on this node", kind: "i", full: 1000, quick: 100, peers: onePeer(), admit: true,
		check: func(t *testing.T, n int, st map[string]int) {
			if st["code:PermissionDenied"] != n || st["resources"] != 0 {
				t.Errorf("want all %d streams refused PermissionDenied with nothing sent: %v", n, st)
			}
		},
	},
}

// TestAttacks runs each attack against a fresh agent and asserts that its
// memory and logs stay bounded, and that a well-behaved client on another
// address never fails.
func TestAttacks(t *testing.T) {
	if os.Getenv(attackEnv) != "" || os.Getenv(attackAgentEnv) != "" {
		t.Skip("a child of TestAttacks")
	}
	if runtime.GOOS != "linux" {
		t.Skip("attackers bind 127.0.0.0/8 addresses other than 127.0.0.1 (Linux only)")
	}
	for _, c := range attackCases {
		t.Run(c.name, func(t *testing.T) { runAttack(t, c) })
	}
}

// figures are one attack's measurements; memory is heap in use after a GC
// (in-process) or RSS (binary).
type figures struct {
	before, peak, after uint64
	logBytes            int64
	rpcP99, fetchP99    time.Duration
	rpcs, fetches       int
	failures            []string
	took                time.Duration
}

func runAttack(t *testing.T, c attackCase) {
	n := c.quick
	switch {
	case *attackFull:
		n = c.full
	case raceEnabled || testing.Short():
		n = cmp.Or(c.small, max(c.quick/4, 1))
	}
	capFor := 8 * time.Second
	hold := 500 * time.Millisecond
	if *attackFull {
		capFor, hold = 15*time.Second, 2*time.Second
	}

	w := newWorld(t)
	svc0 := w.addService("default", "svc0")
	w.startBackend(svc0, "good-backend", "a1")
	for i := 1; i < attackServices; i++ {
		w.addService("default", fmt.Sprintf("svc%d", i))
	}
	logs := &countingWriter{}
	var tgt target
	switch {
	case *attackBinary != "":
		if c.admit {
			t.Skip("admission of node pods needs a kube source; the in-process test covers it")
		}
		tgt = startBinary(t, w, logs)
	case c.rss:
		tgt = startChildAgent(t, w, logs)
	default:
		tgt = startInProcess(t, w, logs, c)
	}
	_, inProc := tgt.(*inProcess)
	child, _ := tgt.(*childAgent)

	good := startGoodClient(t, tgt.addr(), "svc0.default:8080")
	good.warm(t)

	var f figures
	f.before = tgt.settled()
	budget := uint64(maxPeakGrowth)
	if c.namesHeld {
		budget += uint64(min(n, len(c.peers)*xds.DefaultLimits.MaxNamesPerPeer, xds.DefaultLimits.MaxNames)) * perNameCost
	}
	if c.rss {
		budget = maxRSSPeakGrowth
		if len(c.peers) > 1 {
			budget = maxRSSPeakGrowthPeers
		}
	}
	if inProc {
		// As GOMEMLIMIT does in production (deploy/), a soft limit a little
		// under the budget: garbage is collected before it reaches the
		// budget, so the heap exceeds it only if the agent holds more.
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(int64(f.before + budget - budget/8)))
	}
	logs0 := logs.n.Load()
	goroutines0 := runtime.NumGoroutine()
	if child != nil {
		goroutines0 = child.goroutines(t)
	}
	hwm0 := tgt.peak()

	// Sample memory while the attack runs, for its peak.
	stopSampling := make(chan struct{})
	sampled := make(chan uint64)
	go func() {
		var peak uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, tgt.now())
			select {
			case <-stopSampling:
				if hwm := tgt.peak(); hwm > hwm0 { // a new high since the attack began
					peak = max(peak, hwm)
				}
				sampled <- peak
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	spec := attackSpec{Kind: c.kind, Addr: tgt.addr(), N: n, Peers: c.peers, Cap: capFor}
	st := runAttacker(t, spec, hold, func() { profile(t, tgt, c.name, "held") })
	ended := time.Now()
	f.took = ended.Sub(start)
	close(stopSampling)
	f.peak = <-sampled

	// The attacker is gone: its streams must end, and what they cost must
	// come back, within 10 s.
	tgt.drained(t)
	afterBudget := uint64(maxAfterGrowth)
	if c.rss {
		afterBudget = maxRSSAfterGrowth
	}
	if !c.rss {
		ended = time.Now() // the heap budgets count from the streams' end
	}
	f.after = tgt.settled()
	for f.after > f.before+afterBudget && time.Since(ended) < 10*time.Second {
		time.Sleep(200 * time.Millisecond)
		f.after = min(f.after, tgt.settled())
	}
	profile(t, tgt, c.name, "after")
	f.logBytes = logs.n.Load() - logs0
	good.stop(&f)
	switch {
	case inProc:
		waitGoroutines(t, goroutines0)
	case child != nil:
		child.waitGoroutines(t, goroutines0)
	}

	t.Logf("attacker: %v", st)
	if child != nil {
		t.Logf("agent after: %s", child.memstats(t))
	}
	row := fmt.Sprintf("| %s | %s / %s / %s | %s | %v / %v | %d of %d |", c.name, mib(f.before), mib(f.peak), mib(f.after),
		kib(f.logBytes), f.rpcP99.Round(100*time.Microsecond), f.fetchP99.Round(time.Millisecond), len(f.failures), f.rpcs+f.fetches)
	t.Logf("%s (attack took %v, n=%d)", row, f.took.Round(time.Millisecond), n)
	if *attackReport != "" {
		if fh, err := os.OpenFile(*attackReport, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(fh, "%s n=%d took %v; attacker %v\n", row, n, f.took.Round(time.Millisecond), st)
			fh.Close()
		}
	}

	if c.check != nil {
		c.check(t, n, st)
	}
	// The budgets hold the in-process heap, or the child agent's resident
	// memory. With -attack.binary the figures are for docs/security.md; under
	// the race detector, whose shadow memory grows with the heap, a child's
	// RSS is only reported.
	if inProc || (child != nil && !raceEnabled) {
		what := "heap"
		if child != nil {
			what = "RSS"
		}
		if f.peak > f.before+budget {
			t.Errorf("%s peaked at %s, %s above the %s before (budget %s)", what, mib(f.peak), mib(f.peak-f.before), mib(f.before), mib(budget))
		}
		if f.after > f.before+afterBudget {
			t.Errorf("%s 10 s after the attack is %s, %s above the %s before (budget %s)", what, mib(f.after), mib(f.after-f.before), mib(f.before), mib(afterBudget))
		}
	}
	if c.rss && f.rpcP99 > maxGoodRPCP99 {
		t.Errorf("the well-behaved client's RPCs took %v at p99 (%d RPCs), over %v", f.rpcP99, f.rpcs, maxGoodRPCP99)
	}
	if f.logBytes > maxLogBytes {
		t.Errorf("the attack made %s of logs (budget %s)", kib(f.logBytes), kib(maxLogBytes))
	}
	for _, fail := range f.failures {
		if c.freshMayFail && strings.HasPrefix(fail, "fetch") {
			continue
		}
		t.Errorf("well-behaved client: %s", fail)
	}
}

// profile writes a heap profile of the agent (this process, or the agent
// child's /debug/pprof/heap) when NODEXDS_ATTACK_PROFILE names a directory:
// to find what an attack makes the agent hold.
func profile(t *testing.T, tgt target, name, when string) {
	dir := os.Getenv("NODEXDS_ATTACK_PROFILE")
	if dir == "" || *attackBinary != "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_", ",", "").Replace(name)+"-"+when+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if c, ok := tgt.(*childAgent); ok {
		resp, err := http.Get("http://" + c.debug + "/debug/pprof/heap")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			t.Fatal(err)
		}
		return
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
func kib(b int64) string  { return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10)) }

// waitGoroutines waits until the goroutines the attack started are gone.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	var n int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n = runtime.NumGoroutine(); n <= before+20 {
			return
		}
	}
	t.Errorf("%d goroutines 20 s after the attack, %d before: leaked", n, before)
}

type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// target is the agent under attack and how its memory is read.
type target interface {
	addr() string
	now() uint64          // memory now, for sampling
	peak() uint64         // peak since start, if the OS keeps it (0 otherwise)
	settled() uint64      // memory at rest
	drained(t *testing.T) // waits until no attacker stream is left
}

// inProcess is serve.Run in this process; memory is its heap.
type inProcess struct {
	a *testAgent
}

func startInProcess(t *testing.T, w *world, logs io.Writer, c attackCase) *inProcess {
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return &inProcess{a: startAgent(t, w, attackOptions(log, c))}
}

func (p *inProcess) addr() string { return p.a.Addr }
func (p *inProcess) peak() uint64 { return 0 }
func (p *inProcess) now() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
func (p *inProcess) settled() uint64 {
	runtime.GC()
	runtime.GC() // the second collects what finalizers freed
	return p.now()
}

func (p *inProcess) drained(t *testing.T) {
	t.Helper()
	waitDrained(t, func() float64 { return testutil.ToFloat64(p.a.Metrics.ConnectedClients) })
}

// waitDrained waits until only the good client's stream is open, as connected
// (nodexds_connected_clients) tells.
func waitDrained(t *testing.T, connected func() float64) {
	t.Helper()
	var n float64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n = connected(); n <= 2 { // the good client, and maybe one fetch
			return
		}
	}
	t.Errorf("%v streams still open 20 s after the attacker left", n)
}

// binary is the nodexds binary; memory is its RSS.
type binary struct {
	address string
	admin   adminPort
	pid     int
}

func startBinary(t *testing.T, w *world, logs io.Writer) *binary {
	t.Helper()
	w.write()
	addr := freeAddr(t)
	admin := freeAddr(t) // its /metrics say when the attacker's streams have ended
	cmd := exec.Command(*attackBinary, "serve", "--source=file:"+w.path, "--node-name=a1", "--xds-listen="+addr, "--admin-listen="+admin, "--log-level=info")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for _, a := range []string{addr, admin} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if c, err := net.Dial("tcp", a); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not listen on %s", *attackBinary, a)
			}
		}
	}
	return &binary{address: addr, admin: adminPort(admin), pid: cmd.Process.Pid}
}

// freeAddr is a loopback address with a port nothing listens on, for a child
// process to listen on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

func (b *binary) addr() string { return b.address }
func (b *binary) now() uint64  { return procStatus(b.pid, "VmRSS") }
func (b *binary) peak() uint64 { return procStatus(b.pid, "VmHWM") }

// settled gives the binary time to return freed pages: it cannot be told to
// collect, and its figures are reported, not asserted.
func (b *binary) settled() uint64      { time.Sleep(2 * time.Second); return b.now() }
func (b *binary) drained(t *testing.T) { t.Helper(); b.admin.drained(t) }

// childAgent is an agent in a child process (this test binary, as
// TestAttackAgent): memory is its resident set, as the kubelet counts it.
type childAgent struct {
	address, debug string
	admin          adminPort
	pid            int
}

// agentSpec is what the agent child is told.
type agentSpec struct {
	Path string // the cluster file
}

func startChildAgent(t *testing.T, w *world, logs io.Writer) *childAgent {
	t.Helper()
	w.write()
	b, _ := json.Marshal(agentSpec{Path: w.path})
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttackAgent$")
	cmd.Env = append(os.Environ(), attackAgentEnv+"="+string(b))
	cmd.Stderr = logs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AGENT "); ok {
			go io.Copy(io.Discard, stdout)
			addrs := strings.Fields(v)
			return &childAgent{address: addrs[0], admin: adminPort(addrs[1]), debug: addrs[2], pid: cmd.Process.Pid}
		}
	}
	t.Fatal("the agent child ended without serving")
	return nil
}

func (c *childAgent) addr() string    { return c.address }
func (c *childAgent) now() uint64     { return procStatus(c.pid, "VmRSS") }
func (c *childAgent) peak() uint64    { return procStatus(c.pid, "VmHWM") }
func (c *childAgent) settled() uint64 { return c.now() }

func (c *childAgent) drained(t *testing.T) { t.Helper(); c.admin.drained(t) }

func (c *childAgent) goroutines(t *testing.T) int { return int(c.admin.metric(t, "go_goroutines")) }

// memstats says where the agent's memory is, from its Go collector.
func (c *childAgent) memstats(t *testing.T) string {
	var b strings.Builder
	for _, m := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes",
		"go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_memstats_next_gc_bytes"} {
		fmt.Fprintf(&b, "%s %s, ", strings.TrimPrefix(m, "go_memstats_"), mib(uint64(c.admin.metric(t, m))))
	}
	return b.String()
}

// waitGoroutines waits until the goroutines the attack started in the agent
// are gone.
func (c *childAgent) waitGoroutines(t *testing.T, before int) {
	t.Helper()
	var n int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n = c.goroutines(t); n <= before+20 {
			return
		}
	}
	t.Errorf("%d goroutines in the agent 20 s after the attack, %d before: leaked", n, before)
}

// adminPort is the address of an agent's admin port, in another process.
type adminPort string

func (a adminPort) drained(t *testing.T) {
	t.Helper()
	waitDrained(t, func() float64 { return a.metric(t, "nodexds_connected_clients") })
}

// metric reads one unlabelled gauge from the agent's /metrics.
func (a adminPort) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + string(a) + "/metrics")
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("agent metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("agent metric %s missing", name)
	return 0
}

// procStatus is a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(pid int, field string) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestAttackAgent is the agent child of TestAttacks: serve.Run as
// cmd/nodexds runs it (GOGC 50 once synced, logs at info on stderr, no
// memory limit), until its stdin closes. It does nothing in a normal run.
func TestAttackAgent(t *testing.T) {
	v := os.Getenv(attackAgentEnv)
	if v == "" {
		t.Skip("runs only as the agent child of TestAttacks")
	}
	var spec agentSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	xdsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debugLis, err := net.Listen("tcp", "127.0.0.1:0") // for profiles (see profile)
	if err != nil {
		t.Fatal(err)
	}
	o := serve.Options{
		Config: agent.Config{
			NodeName:     "a1",
			Names:        names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
			DefaultTiers: topology.DefaultTiers,
			Coalesce:     10 * time.Millisecond,
		},
		Source:          &discovery.FileSource{Path: spec.Path, Poll: 10 * time.Millisecond, Log: log},
		XDS:             xdsLis,
		Admin:           adminLis,
		Debug:           debugLis,
		Pprof:           true,
		Log:             log,
		SteadyGCPercent: 50,
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := serve.Run(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
	}()
	fmt.Printf("AGENT %s %s %s\n", xdsLis.Addr(), adminLis.Addr(), debugLis.Addr())
	io.Copy(io.Discard, os.Stdin) // until the parent is done
	cancel()
	os.Exit(0)
}

// goodClient is a well-behaved grpc-go xDS client on its own address: one
// channel calling a Service all along, and fresh channels, each a new ADS
// stream that must get its whole configuration, every 300 ms.
type goodClient struct {
	addr, target string
	ctx          context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	cc           *grpc.ClientConn

	mu       sync.Mutex
	rpc      []time.Duration
	fetch    []time.Duration
	failures []string
}

func startGoodClient(t *testing.T, addr, target string) *goodClient {
	t.Helper()
	g := &goodClient{addr: addr, target: target}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	cc, err := g.dial()
	if err != nil {
		t.Fatal(err)
	}
	g.cc = cc
	t.Cleanup(func() { g.cancel(); g.wg.Wait(); cc.Close() })
	return g
}

// dial opens an xDS channel whose ADS connection comes from goodIP.
func (g *goodClient) dial() (*grpc.ClientConn, error) {
	bs := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": %q, "config": {"local": %q}}], "server_features": ["ignore_resource_deletion"]}],
		"node": {"id": "good/client", "locality": {"zone": "a", "region": "r1"}}}`, g.addr, localAddrCreds{}.Name(), goodIP)
	r, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bs))
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("xds:///"+g.target, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// warm waits until the good client reaches its Service, then starts its
// loops.
func (g *goodClient) warm(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(g.ctx, time.Second)
		_, err := echo.Hello(ctx, g.cc)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the good client cannot reach its Service before the attack: %v", err)
		}
	}
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		for g.ctx.Err() == nil {
			start := time.Now()
			ctx, cancel := context.WithTimeout(g.ctx, 2*time.Second)
			_, err := echo.Hello(ctx, g.cc)
			cancel()
			g.record(&g.rpc, "rpc", time.Since(start), err)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() {
		defer g.wg.Done()
		for g.ctx.Err() == nil {
			start := time.Now()
			cc, err := g.dial()
			if err == nil {
				// A failure is a client that cannot be served at all; how
				// long a fresh channel takes is the p99 figure, reported.
				ctx, cancel := context.WithTimeout(g.ctx, 30*time.Second)
				_, err = echo.Hello(ctx, cc, grpc.WaitForReady(true))
				cancel()
				cc.Close()
			}
			g.record(&g.fetch, "fetch", time.Since(start), err)
			time.Sleep(300 * time.Millisecond)
		}
	}()
}

func (g *goodClient) record(into *[]time.Duration, what string, d time.Duration, err error) {
	if g.ctx.Err() != nil {
		return // stopping: the RPC was cut short by us
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	*into = append(*into, d)
	if err != nil {
		g.failures = append(g.failures, fmt.Sprintf("%s failed after %v: %v", what, d.Round(time.Millisecond), err))
	}
}

func (g *goodClient) stop(f *figures) {
	g.cancel()
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	f.rpcP99, f.fetchP99 = p99(g.rpc), p99(g.fetch)
	f.rpcs, f.fetches = len(g.rpc), len(g.fetch)
	f.failures = slices.Clone(g.failures)
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, len(s)*99/100)]
}

// localAddrCreds are insecure channel credentials for the xDS bootstrap that
// also bind the ADS connection to a local address (config {"local": IP}),
// so the good client is a peer of its own.
type localAddrCreds struct{}

func init() { xdsbootstrap.RegisterChannelCredentials(localAddrCreds{}) }

func (localAddrCreds) Name() string { return "nodexds-test-local-addr" }

func (localAddrCreds) Build(config json.RawMessage) (credentials.Bundle, func(), error) {
	var c struct{ Local string }
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, nil, err
	}
	return localAddrBundle{Bundle: insecure.NewBundle(), local: c.Local}, func() {}, nil
}

type localAddrBundle struct {
	credentials.Bundle
	local string
}

// DialOptions is read by grpc-go's xDS bootstrap (extraDialOptions).
func (b localAddrBundle) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithContextDialer(dialerFrom(b.local))}
}

func dialerFrom(local string) func(context.Context, string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// runAttacker runs the attack in a child process until it has done all it
// was told (or its Cap), holds it for hold, and returns what it counted.
func runAttacker(t *testing.T, spec attackSpec, hold time.Duration, held func()) map[string]int {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttacker$")
	cmd.Env = append(os.Environ(), attackEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ATTACK "); ok {
			var st map[string]int
			if err := json.Unmarshal([]byte(v), &st); err != nil {
				t.Fatal(err)
			}
			held()
			time.Sleep(hold) // the attack in place: memory is sampled meanwhile
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("attacker: %v", err)
			}
			return st
		}
	}
	t.Fatalf("the attacker ended without reporting")
	return nil
}

// TestAttacker is the attacker process; it does nothing in a normal run.
func TestAttacker(t *testing.T) {
	v := os.Getenv(attackEnv)
	if v == "" {
		t.Skip("runs only as the attacker child of TestAttacks")
	}
	var spec attackSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &attacker{spec: spec, ctx: ctx, deadline: time.Now().Add(spec.Cap), st: map[string]int{}, conns: map[string]*grpc.ClientConn{}}
	attacks[spec.Kind](a)
	a.mu.Lock()
	b, _ := json.Marshal(a.st)
	a.mu.Unlock()
	fmt.Printf("ATTACK %s\n", b)
	io.Copy(io.Discard, os.Stdin) // hold until the parent has measured
	cancel()
	os.Exit(0)
}

type attacker struct {
	spec     attackSpec
	ctx      context.Context
	deadline time.Time
	mu       sync.Mutex
	st       map[string]int
	conns    map[string]*grpc.ClientConn
}

func (a *attacker) add(k string, n int) {
	a.mu.Lock()
	a.st[k] += n
	a.mu.Unlock()
}

func (a *attacker) over() bool {
	if time.Now().After(a.deadline) {
		a.mu.Lock()
		a.st["capped"] = 1
		a.mu.Unlock()
		return true
	}
	return false
}

func (a *attacker) peer(i int) string { return a.spec.Peers[i%len(a.spec.Peers)] }

// conn returns a connection from peer, shared by the streams of key.
func (a *attacker) conn(peer, key string, opts ...grpc.DialOption) *grpc.ClientConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cc := a.conns[peer+key]; cc != nil {
		return cc
	}
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialerFrom(peer)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)),
	}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+a.spec.Addr, opts...)
	if err != nil {
		panic(err)
	}
	a.conns[peer+key] = cc
	return cc
}

// adsStream is one attacking stream; with read, a goroutine takes its
// responses.
type adsStream struct {
	s         discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	done      chan struct{}
	err       error
	responses atomic.Int64
	resources atomic.Int64
	nonce     atomic.Value
	answered  chan struct{} // receives one value per response
}

func (a *attacker) open(cc *grpc.ClientConn, read bool) *adsStream {
	type opened struct {
		s   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		err error
	}
	// A connection holds as many streams as the agent's SETTINGS allow: a
	// stream beyond waits for room, until the cap at most.
	ch := make(chan opened, 1)
	go func() {
		s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(a.ctx)
		ch <- opened{s, err}
	}()
	var o opened
	select {
	case o = <-ch:
	case <-time.After(time.Until(a.deadline)):
		o.err = grpcstatus.Error(codes.Unavailable, "no room for the stream on its connection before the cap")
	}
	s, err := o.s, o.err
	st := &adsStream{s: s, done: make(chan struct{}), answered: make(chan struct{}, 1<<16)}
	a.add("streams", 1)
	if err != nil {
		st.s, st.err = nil, err
		close(st.done)
		return st
	}
	if read {
		go func() {
			defer close(st.done)
			for {
				r, err := s.Recv()
				if err != nil {
					st.err = err
					return
				}
				st.nonce.Store(r.GetNonce())
				st.responses.Add(1)
				st.resources.Add(int64(len(r.GetResources())))
				st.answered <- struct{}{}
			}
		}()
	}
	return st
}

// send sends req, or returns the error that kept the stream from opening
// (the agent's connection may make a stream wait for room, and the attack
// end before it has any).
func (st *adsStream) send(req *discoveryv3.DiscoveryRequest) error {
	if st.s == nil {
		return st.err
	}
	return st.s.Send(req)
}

// outcome waits until a reading stream is answered or ends (or the cap),
// and counts which.
func (a *attacker) outcome(st *adsStream) (answered bool) {
	select {
	case <-st.answered:
		a.add("answered", 1)
		return true
	case <-st.done:
		a.add("code:"+grpcstatus.Code(st.err).String(), 1)
		a.add("resources", int(st.resources.Load()))
	case <-time.After(time.Until(a.deadline)):
		a.add("unanswered", 1)
	}
	return false
}

// parallel runs f(0..n-1) on k goroutines, until the cap.
func (a *attacker) parallel(n, k int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range k {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || a.over() {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

const serverPrefix = "grpc/server?xds.resource.listening_address="

func node(id string) *corev3.Node { return &corev3.Node{Id: id, UserAgentName: "attacker"} }

func realNames() []string {
	out := make([]string, attackServices)
	for i := range out {
		out[i] = fmt.Sprintf("svc%d.default:8080", i)
	}
	return out
}

// junk returns n distinct listener names that parse (as Services that do not
// exist), the costliest kind for the agent: it indexes them.
func junk(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "j" + strconv.Itoa(from+i) + ".x:1"
	}
	return out
}

// shortJunk is like junk in 9 bytes a name, so 100,000 fit in 1 MiB.
func shortJunk(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.FormatInt(int64(from+i), 36) + ":1"
	}
	return out
}

func garbage(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789./"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

var attacks = map[string]func(a *attacker){
	// (a) junk names, 10,000 a stream (the most one request may carry), as
	// many streams as it takes.
	"a": func(a *attacker) {
		const per = 10000
		streams := make([]*adsStream, a.spec.N/per)
		a.parallel(len(streams), 8, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			streams[i] = st
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-a"), TypeUrl: listenerType, ResourceNames: junk(i*per, per)})
			if a.outcome(st) {
				a.add("names_held", per)
			}
		})
	},
	// (j) server listener names (gRFC A36), 10,000 a stream: another pod's
	// address, garbage after the prefix, and the peer's own wildcard
	// address on ports no Service lists: below Linux's ephemeral range
	// (32768 and up), where the test's backends, which share the
	// attacker's address, listen.
	"j": func(a *attacker) {
		const per = 10000
		a.parallel(a.spec.N/per, 8, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			names := make([]string, per)
			for k := range names {
				switch n := i*per + k; n % 3 {
				case 0:
					names[k] = fmt.Sprintf("%s10.%d.%d.%d:50051", serverPrefix, n>>16&255, n>>8&255, n&255)
				case 1:
					names[k] = serverPrefix + garbage(40)
				default:
					names[k] = fmt.Sprintf("%s0.0.0.0:%d", serverPrefix, 1+n%32767)
				}
			}
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-j"), TypeUrl: listenerType, ResourceNames: names})
			if a.outcome(st) {
				a.add("names_held", per)
				a.add("resources_sent", int(st.resources.Load()))
			}
		})
	},
	// (b) 100,000 fresh names a request (each over the per-type limit;
	// reconnect when refused), then churn within the limit on one stream.
	"b": func(a *attacker) {
		// A sent request's answer is awaited however long it takes (up to a
		// minute); the cap only stops sending more, after the first.
		await := func(st *adsStream, answered, refused string) bool {
			select {
			case <-st.answered:
				a.add(answered, 1)
			case <-st.done:
				a.add(refused, 1)
				return false
			case <-time.After(time.Minute):
				a.add("unanswered", 1)
			}
			return true
		}
		var st *adsStream
		for r := range a.spec.N {
			if r > 0 && a.over() {
				break
			}
			if st == nil || isDone(st) {
				st = a.open(a.conn(a.peer(0), ""), true)
			}
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-b"), TypeUrl: listenerType, ResourceNames: shortJunk(r*100_000, 100_000)})
			a.add("big_sent", 1)
			await(st, "big_answered", "big_refused")
		}
		st = a.open(a.conn(a.peer(0), "churn"), true)
		for r := range a.spec.N {
			if r > 0 && a.over() {
				return
			}
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-b"), TypeUrl: listenerType, ResourceNames: junk(10_000_000+r*10_000, 10_000)})
			a.add("churn_sent", 1)
			if !await(st, "churn_answered", "churn_refused") {
				return
			}
		}
	},
	// (c) raw HTTP/2 connections, one ADS stream each, never closed.
	"c": func(a *attacker) {
		req, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{Node: node("attacker-c"), TypeUrl: listenerType, ResourceNames: realNames()[:1]})
		var settled sync.WaitGroup
		a.parallel(a.spec.N, 32, func(i int) {
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(a.peer(i))}}).DialContext(a.ctx, "tcp", a.spec.Addr)
			if err != nil {
				a.add("dial_failed", 1)
				return
			}
			if err := writeStream(c, a.spec.Addr, req); err != nil {
				a.add("write_failed", 1)
			}
			settled.Add(1)
			go func() {
				buf := make([]byte, 512)
				once := sync.OnceFunc(settled.Done)
				for {
					if _, err := c.Read(buf); err != nil {
						a.add("conns_closed", 1)
						once()
						return
					}
					once() // the server speaks: accepted
				}
			}()
		})
		settled.Wait()
		a.mu.Lock()
		a.st["conns_open"] = a.spec.N - a.st["conns_closed"] - a.st["dial_failed"]
		a.mu.Unlock()
	},
	// (d) streams that never call Recv (their windows fill, so the agent's
	// sends block), all at once, each sending requests of 1 MiB until the
	// cap: as many requests in flight together as there are streams.
	"d": func(a *attacker) {
		small := grpc.WithInitialWindowSize(1 << 16)
		smallConn := grpc.WithInitialConnWindowSize(1 << 16)
		real := realNames()
		fill := garbage(100_000)
		a.parallel(a.spec.N, a.spec.N, func(i int) {
			st := a.open(a.conn(a.peer(i), strconv.Itoa(i/10), small, smallConn), false)
			// Responses the client does not take, to block the agent's sends.
			for r := range 20 {
				if st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-d"), TypeUrl: listenerType, ResourceNames: append(slices.Clone(real), "f"+strconv.Itoa(r)+".x:1")}) != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			names := slices.Clone(real)
			for k := range 10 {
				names = append(names, fmt.Sprintf("%d-%d-%s", i, k, fill))
			}
			big := &discoveryv3.DiscoveryRequest{TypeUrl: listenerType, ResourceNames: names}
			for !a.over() {
				if st.send(big) != nil {
					a.add("send_failed", 1)
					return
				}
				a.add("big_sent", 1)
			}
		})
	},
	// (e) NACKs naming nonces never sent, each with a 64 KiB error detail,
	// on 10 streams that otherwise behave.
	"e": func(a *attacker) {
		const streams = 10
		detail := garbage(64 << 10)
		real := realNames()
		a.parallel(streams, streams, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-e"), TypeUrl: listenerType, ResourceNames: real})
			if !a.outcome(st) {
				return
			}
			for k := range a.spec.N / streams {
				if a.over() {
					break
				}
				nonce := strconv.FormatUint(rand.Uint64(), 16)
				if k%100 == 0 {
					nonce, _ = st.nonce.Load().(string) // now and then, the real one
				}
				err := st.send(&discoveryv3.DiscoveryRequest{
					TypeUrl: listenerType, ResourceNames: real, ResponseNonce: nonce, VersionInfo: strconv.Itoa(k),
					ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: strconv.Itoa(k) + detail},
				})
				if err != nil {
					break
				}
				a.add("nacks_sent", 1)
			}
			if !isDone(st) {
				a.add("open", 1)
			}
		})
	},
	// (f) node metadata of 1 MB (under the 1 MiB request limit).
	"f": func(a *attacker) {
		meta, _ := structpb.NewStruct(map[string]any{"junk": garbage(1_000_000)})
		a.parallel(a.spec.N, 16, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			n := node("attacker-f-" + strconv.Itoa(i))
			n.Metadata = meta
			st.send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: listenerType, ResourceNames: realNames()[i%attackServices : i%attackServices+1]})
			a.outcome(st)
		})
	},
	// (g) type URLs of 100 KiB of garbage, one request a stream.
	"g": func(a *attacker) {
		typ := "type.googleapis.com/" + garbage(100<<10)
		a.parallel(a.spec.N, 16, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-g"), TypeUrl: typ[:len(typ)-8] + fmt.Sprintf("%08d", i), ResourceNames: realNames()[:1]})
			a.outcome(st)
		})
	},
	// (h) wildcard listener requests: no names, or "*".
	"h": func(a *attacker) {
		a.parallel(a.spec.N, 4, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			req := &discoveryv3.DiscoveryRequest{Node: node("attacker-h"), TypeUrl: listenerType}
			if i%2 == 1 {
				req.ResourceNames = []string{"*"}
			}
			st.send(req)
			for a.outcome(st) { // count what it is sent until it ends
				a.add("resources", int(st.resources.Swap(0)))
			}
		})
	},
	// (i) a peer that is not a pod on the agent's node asks for everything.
	"i": func(a *attacker) {
		a.parallel(a.spec.N, 50, func(i int) {
			st := a.open(a.conn(a.peer(i), ""), true)
			st.send(&discoveryv3.DiscoveryRequest{Node: node("attacker-i"), TypeUrl: listenerType, ResourceNames: realNames()})
			for a.outcome(st) {
				a.add("resources", int(st.resources.Swap(0)))
			}
		})
	},
}

func isDone(st *adsStream) bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

// writeStream speaks just enough HTTP/2 to open one gRPC stream on c and send
// it one message: a connection costs the attacker a socket, nothing more.
func writeStream(c net.Conn, authority string, msg []byte) error {
	bw := bufio.NewWriter(c)
	bw.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(bw, nil)
	fr.WriteSettings()
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", adsPath}, {":authority", authority},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte(hb.String()), EndHeaders: true})
	frame := make([]byte, 5+len(msg))
	frame[1], frame[2], frame[3], frame[4] = byte(len(msg)>>24), byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg))
	copy(frame[5:], msg)
	fr.WriteData(1, false, frame)
	return bw.Flush()
}

// attackOptions configures the in-process agent for an attack: logs at info
// into the counting writer, and admission when the case needs it.
func attackOptions(log *slog.Logger, c attackCase) func(*serve.Options) {
	return func(o *serve.Options) {
		o.Log = log
		if fs, ok := o.Source.(*discovery.FileSource); ok {
			fs.Log = log
		}
		if c.admit {
			pods := podLookup{netip.MustParseAddr(goodIP): {{Namespace: "default", Name: "good"}}}
			o.Admit = agent.NodePods{Pods: pods, Node: "a1", Grace: 300 * time.Millisecond}.Admit
		}
	}
}

// podLookup is the Pods of the agent's node, by IP.
type podLookup map[netip.Addr][]discovery.PodRef

func (p podLookup) Lookup(ip netip.Addr) []discovery.PodRef { return p[ip] }
