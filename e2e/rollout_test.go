package e2e

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// handoverFirstAnswer bounds the time a client started during a surge
// handover waits for its first answer (issue 13: under 2 s), from the moment
// its runtime is up and it opens its channel: its first RPC. Before that,
// the process's own start-up takes 0.1 s (Go) to over 1 s (Node.js loading
// grpc-js-xds) on a busy machine, with or without a handover; the figures
// give both.
const handoverFirstAnswer = 2 * time.Second

// TestSurgeRolloutLosesNoRPCs (surge rollout, deploy/overlays/surge): the
// agent of the clients' node runs with --reuse-port, as the overlay runs it.
// A replacement starts beside it on the same address and becomes ready, then
// the old one gets SIGTERM: what the DaemonSet controller does with maxSurge
// 1 and maxUnavailable 0. Clients of every stack send RPCs throughout and
// none fails; clients started during the handover (while both agents listen,
// and while the old one drains) get their first answer within 2 s; the old
// agent exits within --drain-timeout; then a change reaches every client
// from the replacement alone, which has also taken over the admin port.
func TestSurgeRolloutLosesNoRPCs(t *testing.T) {
	const ns = "surge"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 1, clientNode)
	target := []string{Target(ns, "be")}

	// Both agents use --reuse-port from the start (it is the old agent's
	// socket that must let the new one join): restart node-a1's with it
	// before any client runs.
	old := e.Agents[clientNode]
	argv := slices.Clone(old.argv)
	old.Kill(t)
	oldSock := filepath.Join(t.TempDir(), "old.sock")
	old.argv = append(slices.Clone(argv), "--reuse-port", "--probe-socket="+oldSock)
	old.Start(t)
	waitProbeReady(t, old, oldSock)

	start := time.Now()
	clients := e.StartClients(t, ProbeOptions{Targets: target})
	e.Step(t, "served", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names(clientNode)...)
		// The baseline: the client's own start-up, with nothing going on.
		r := firstRPC(t, clients[s])
		recordFigure("surge rollout: client started with one agent, steady → first answer, %s client: %s (its first RPC: %s)", s, r.At.Sub(start).Round(time.Millisecond), r.Latency)
	})
	marks := clients.Marks()

	newSock := filepath.Join(t.TempDir(), "new.sock")
	repl := &Agent{Node: clientNode, IP: old.IP, env: e,
		argv: append(slices.Clone(argv), "--reuse-port", "--probe-socket="+newSock)}
	overlap := Clients{}
	overlapStart := map[Stack]time.Time{}
	e.Step(t, "replacement ready beside the old agent", func() {
		repl.proc = e.StartInNode(t, clientNode, "agent-"+clientNode+"-replacement", nil, repl.argv...)
		t.Cleanup(func() { repl.assertNoForbidden(t) })
		waitProbeReady(t, repl, newSock)
		// Both listen now: the kernel spreads new connections over them.
		// One client at a time, so that no other runtime's start competes
		// for the CPU: the window lasts as long as the test wants.
		for _, s := range e.stacks {
			if _, skipped := e.skip[s]; skipped {
				continue
			}
			overlapStart[s] = time.Now()
			overlap[s] = e.StartProbe(t, ProbeOptions{Stack: s, Name: "overlap", Targets: target})
			firstRPC(t, overlap[s])
		}
	}, func(t *testing.T, s Stack) {
		checkFirstAnswer(t, overlap[s], overlapStart[s], "surge rollout: client started while both agents listen")
	})

	var drainClients Clients
	var term time.Time
	var exited time.Duration
	e.Step(t, "old agent terminated", func() {
		term = time.Now()
		if err := old.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		// Started while the old agent drains: its listener is closed, its
		// streams are still served.
		drainClients = e.StartClients(t, ProbeOptions{Name: "drain", Targets: target})
		select {
		case <-old.proc.Done():
			exited = time.Since(term)
		case <-time.After(30 * time.Second):
			t.Fatalf("e2e: the old agent still runs 30 s after SIGTERM:\n%s", old.proc.LogTail(20))
		}
		recordFigure("surge rollout: old agent SIGTERM → exit (--drain-timeout 10s, --drain-delay 2s): %s", exited.Round(time.Millisecond))
		if code := old.proc.ExitCode(); code != 0 || exited > 10*time.Second {
			t.Errorf("old agent exited with %d after %s, want 0 within --drain-timeout (10s):\n%s", code, exited, old.proc.LogTail(20))
		}
	}, func(t *testing.T, s Stack) {
		checkFirstAnswer(t, drainClients[s], term, "surge rollout: client started at the old agent's SIGTERM")
	})

	// Only the replacement is left: a pod added now reaches every client
	// through it, and the admin port is its own.
	e.Step(t, "scaled up after the handover", func() {
		f.start(t, 1, clientNode)
		waitAdminReady(t, repl)
	}, func(t *testing.T, s Stack) {
		for _, cs := range []Clients{clients, overlap, drainClients} {
			cs[s].WaitServedBy(t, f.names(clientNode)...)
		}
		clients[s].AssertNoFailures(t, marks[s], "across the surge handover")
		overlap[s].AssertNoFailures(t, 0, "since it started while both agents listened")
		drainClients[s].AssertNoFailures(t, 0, "since it started as the old agent drained")
	})
}

// TestHostPortRolloutGap measures what the default manifests (hostPort, so
// no second pod on the node) do on a rollout: the old agent gets SIGTERM
// and exits, nothing listens until the new pod's agent is ready (3 s here),
// then it serves. Clients running throughout keep their cached
// configuration and lose no RPC; a client started in the gap waits for its
// first answer on its own xDS reconnection backoff: the figures say how
// long, per stack.
func TestHostPortRolloutGap(t *testing.T) {
	const (
		ns  = "hostport"
		gap = 3 * time.Second
	)
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 1, clientNode)
	target := []string{Target(ns, "be")}
	clients := e.StartClients(t, ProbeOptions{Targets: target})
	agent := e.Agents[clientNode]
	e.Step(t, "served", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names(clientNode)...)
	})
	marks := clients.Marks()

	var late Clients
	var gone, back time.Time
	e.Step(t, "agent replaced", func() {
		term := time.Now()
		if err := agent.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		select {
		case <-agent.proc.Done():
		case <-time.After(30 * time.Second):
			t.Fatalf("e2e: the agent still runs 30 s after SIGTERM")
		}
		gone = time.Now()
		recordFigure("hostPort rollout: agent SIGTERM → exit (no --reuse-port: GOAWAY at once): %s", gone.Sub(term).Round(time.Millisecond))
		late = e.StartClients(t, ProbeOptions{Name: "gap", Targets: target})
		time.Sleep(gap - time.Since(gone))
		agent.Start(t)
		agent.waitReady(t)
		back = time.Now()
	}, func(t *testing.T, s Stack) {
		late[s].WaitServedByWithin(t, 2*time.Minute, f.names(clientNode)...)
		took := firstOKAfter(t, late[s], gone)
		recordFigure("hostPort rollout (nothing listens for %s, agent ready again %s after the old one exited): client started at the old agent's exit → first RPC, %s client: %s (%s after the agent was back)",
			gap, back.Sub(gone).Round(time.Millisecond), s, took.Round(time.Millisecond), (took - back.Sub(gone)).Round(time.Millisecond))
		clients[s].AssertNoFailures(t, marks[s], "across the agent's replacement")
	})
}

// checkFirstAnswer checks that the first RPC of p, a client started at start
// during a handover, is answered within handoverFirstAnswer, and records how
// long after start that was.
func checkFirstAnswer(t testing.TB, p *Probe, start time.Time, what string) {
	t.Helper()
	r := firstRPC(t, p)
	recordFigure("%s → first answer, %s client: %s (its first RPC: %s)", what, p.Stack, r.At.Sub(start).Round(time.Millisecond), r.Latency)
	switch {
	case !r.OK():
		t.Errorf("%s: its first RPC failed: %s", p.Label(), r)
	case r.Latency > handoverFirstAnswer:
		t.Errorf("%s: its first RPC took %s, want under %s", p.Label(), r.Latency, handoverFirstAnswer)
	}
}

// firstRPC waits for p's first RPC, answered or failed.
func firstRPC(t testing.TB, p *Probe) RPC {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(10 * time.Millisecond) {
		if rpcs := p.RPCs(0); len(rpcs) > 0 {
			return rpcs[0]
		}
		if msg := p.exited(); msg != "" {
			t.Fatalf("%s: waiting for its first RPC: %s", p.Label(), msg)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no RPC within %s of its start", p.Label(), waitTimeout)
		}
	}
}

// firstOKAfter waits for p's first successful RPC and returns how long
// after t0 it ended.
func firstOKAfter(t testing.TB, p *Probe, t0 time.Time) time.Duration {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		for _, r := range p.RPCs(0) {
			if r.OK() {
				return r.At.Sub(t0)
			}
		}
		if msg := p.exited(); msg != "" {
			t.Fatalf("%s: waiting for its first answer: %s", p.Label(), msg)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no RPC answered within 2 min; %s", p.Label(), Tally(p.RPCs(0)))
		}
	}
}

// waitProbeReady waits until the agent answers /readyz with 200 on its probe
// socket, as `nodexds probe` asks it for the kubelet: with --reuse-port the
// TCP ports may be another agent's.
func waitProbeReady(t testing.TB, a *Agent, sock string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	a.waitReadyVia(t, client, "http://agent/readyz", sock)
}

// waitAdminReady waits until the node's admin port answers /readyz: after
// the old agent's exit, only a's can.
func waitAdminReady(t testing.TB, a *Agent) {
	t.Helper()
	url := "http://" + net.JoinHostPort(a.IP, "18001") + "/readyz"
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("e2e: the admin port was not taken over by %s within 10 s of the old agent's exit (%v):\n%s", a.proc.Name, err, a.proc.LogTail(20))
		}
	}
}
