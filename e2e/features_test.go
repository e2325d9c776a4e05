package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// signalPods sends sig to the processes of pods on nodes: nodexds-echo turns
// NOT_SERVING on SIGUSR1, SERVING on SIGUSR2, and toggles failing every RPC
// on SIGHUP, while its Pod stays Ready in Kubernetes.
func (f *fleet) signal(t testing.TB, sig syscall.Signal, nodes ...string) {
	t.Helper()
	for _, node := range nodes {
		for _, p := range f.pods[node] {
			if err := p.Process.Signal(sig); err != nil {
				t.Fatalf("e2e: signal %s: %v", p.Name, err)
			}
		}
	}
}

func annotate(kv ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

// TestHealthChecksMoveClientsOffNotServingPods (health, issue 4): node-local
// pods report NOT_SERVING on the gRPC health service while their Pods stay
// Ready in Kubernetes; the node's agent sees it on its Watch streams and its
// clients move to the zone tier, then return when the pods serve again —
// losing no RPC either way.
func TestHealthChecksMoveClientsOffNotServingPods(t *testing.T) {
	const ns = "health"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 2, "node-a1")
	f.start(t, 1, "node-a2")
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})
	e.Step(t, "node", nil, func(t *testing.T, s Stack) { clients[s].WaitServedBy(t, f.names("node-a1")...) })
	marks := clients.Marks()

	e.Step(t, "zone (node-a1 pods NOT_SERVING)", func() {
		f.signal(t, syscall.SIGUSR1, "node-a1")
	}, func(t *testing.T, s Stack) {
		took := clients[s].WaitServedBy(t, f.names("node-a2")...)
		t.Logf("%s clients served only by the zone tier %v after the flip (includes the wait for a full window of RPCs; probe interval %v)", s, took.Round(time.Millisecond), probeInterval)
	})
	e.Step(t, "node again (SERVING)", func() { f.signal(t, syscall.SIGUSR2, "node-a1") }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names("node-a1")...)
	})
	e.Step(t, "no RPC lost", nil, func(t *testing.T, s Stack) {
		clients[s].AssertNoFailures(t, marks[s], "while health moved traffic")
	})
}

// TestEndpointPickerRoutesOnlyToMembers (issue 5): a request naming a member
// pod in the picker header goes to exactly that pod, even in another region;
// one naming another Service's pod is balanced normally, or fails when the
// Service fails closed.
func TestEndpointPickerRoutesOnlyToMembers(t *testing.T) {
	const ns = "picker"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.WithStack(t, Go155)
	e.CreateService(t, ns, "be", annotate("nodexds.io/endpoint-header", "x-target-pod"))
	e.CreateService(t, ns, "other")
	f := newFleet(e, ns, "be")
	f.start(t, 2, "node-a1")
	f.start(t, 1, "node-c1")
	o := newFleet(e, ns, "other")
	o.start(t, 1, "node-a1")
	target := []string{Target(ns, "be")}
	far := f.names("node-c1")[0]
	picked := e.StartClients(t, ProbeOptions{Name: "picked", Targets: target, Headers: []string{"x-target-pod:" + far}})
	outsider := e.StartClients(t, ProbeOptions{Name: "outsider", Targets: target, Headers: []string{"x-target-pod:" + o.names("node-a1")[0]}})

	e.Step(t, "picked pod gets every tagged RPC", nil, func(t *testing.T, s Stack) {
		picked[s].WaitServedBy(t, far)
		mark := picked[s].Mark()
		time.Sleep(time.Second)
		picked[s].AssertOnlyPods(t, mark, "with the header naming "+far, far)
	})
	e.Step(t, "a non-member is balanced normally", nil, func(t *testing.T, s Stack) {
		outsider[s].WaitServedBy(t, f.names("node-a1")...)
	})
	e.Step(t, "fail closed", func() {
		e.UpdateService(t, ns, "be", annotate("nodexds.io/endpoint-header-fallback", "fail"))
	}, func(t *testing.T, s Stack) {
		outsider[s].WaitFailing(t)
		picked[s].WaitServedBy(t, far)
	})
}

// TestServiceWithoutEndpointsFailsUnavailable (issue 10): a Service with no
// endpoint — none yet, or its last pod gone — fails every RPC at once with
// UNAVAILABLE (not a deadline, not a crash), and a pod that appears is used.
func TestServiceWithoutEndpointsFailsUnavailable(t *testing.T) {
	const ns = "empty"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})
	noDeadline := func(t *testing.T, s Stack, from int) {
		t.Helper()
		for _, r := range clients[s].RPCs(from) {
			if r.Code == "DeadlineExceeded" {
				t.Errorf("%s: an RPC waited for its deadline instead of failing at once: %s", clients[s].Label(), r)
				return
			}
		}
	}
	marks := clients.Marks()
	e.Step(t, "no pods: UNAVAILABLE", nil, func(t *testing.T, s Stack) {
		clients[s].WaitFailingWith(t, "Unavailable")
		noDeadline(t, s, marks[s])
	})
	e.Step(t, "a pod appears", func() { f.start(t, 1, "node-b1") }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names("node-b1")...)
	})
	marks = clients.Marks()
	e.Step(t, "its last pod gone: UNAVAILABLE again", func() {
		f.finish(t, f.terminate(t, "node-b1"))
	}, func(t *testing.T, s Stack) {
		clients[s].WaitFailingWith(t, "Unavailable")
		noDeadline(t, s, marks[s])
	})
}

// TestHashHeaderKeepsAKeyOnOnePod (issue 5): with nodexds.io/hash-header, a
// key stays on one pod, also across a scale-up in another tier.
func TestHashHeaderKeepsAKeyOnOnePod(t *testing.T) {
	const ns = "affinity"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	// gRPC C-core 1.51 (python3-grpcio) crashes with SIGSEGV on any
	// ring_hash Cluster, a bug of that version: the agent serves it the
	// Service's cluster with round_robin instead. It keeps working, without
	// affinity.
	noRingHash := strings.HasPrefix(e.Bins.CCoreVersion, "1.51.")
	e.CreateService(t, ns, "be", annotate("nodexds.io/hash-header", "x-user"))
	f := newFleet(e, ns, "be")
	f.start(t, 3, "node-a1")
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}, Headers: []string{"x-user:alice"}})
	pinned := map[Stack]string{}
	e.Step(t, "one key, one pod", nil, func(t *testing.T, s Stack) {
		if s == CCore && noRingHash {
			clients[s].WaitServedBy(t, f.names("node-a1")...) // alive, balanced round robin
			return
		}
		clients[s].waitFor(t, waitTimeout, "one pod for alice", 40, func(recent []RPC) bool {
			pods := map[string]bool{}
			for _, r := range recent {
				if !r.OK() {
					return false
				}
				pods[r.Pod] = true
			}
			for p := range pods {
				pinned[s] = p
			}
			return len(pods) == 1
		})
	})
	marks := clients.Marks()
	e.Step(t, "scale-up in the zone tier moves no key", func() {
		f.start(t, 3, "node-a2")
		// Not a verdict (C-core 1.51 can miss an update, NOTES.md): the
		// check below is; this makes it see the clients after the change.
		if !e.waitClientsSynced(t, clientNode, ns+"/be", f.names("node-a2")) {
			t.Logf("e2e: not every client ACKed the scale-up within %s; checking anyway", waitTimeout)
		}
	}, func(t *testing.T, s Stack) {
		if s == CCore && noRingHash {
			clients[s].AssertNoFailures(t, marks[s], "round robin after the scale-up")
			return
		}
		clients[s].AssertOnlyPods(t, marks[s], "alice after the scale-up", pinned[s])
	})
}

// TestOutlierDetectionEjectsAFailingPod (issue 5): a pod that answers every
// RPC with an error is ejected by the clients' outlier detection.
func TestOutlierDetectionEjectsAFailingPod(t *testing.T) {
	const ns = "outlier"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.CreateService(t, ns, "be", annotate("nodexds.io/outlier-detection",
		"failure-percentage=50,failure-percentage-min-hosts=3,failure-percentage-request-volume=5,interval=1s,base-ejection-time=60s,max-ejection-percent=50"))
	f := newFleet(e, ns, "be")
	f.start(t, 3, "node-a1")
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})
	e.Step(t, "all three", nil, func(t *testing.T, s Stack) { clients[s].WaitServedBy(t, f.names("node-a1")...) })
	bad := f.pods["node-a1"][0]
	e.Step(t, "one pod fails every RPC", func() {
		if err := bad.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names("node-a1")[1:]...)
	})
}

// debugServices is the part of an agent's /debug/services this suite reads.
type debugServices struct {
	Node     string `json:"node"`
	Services []struct {
		Cluster    string `json:"cluster"`
		Service    string `json:"service"`
		Policy     string `json:"policy"`
		Priorities []struct {
			Tiers     string `json:"tiers"`
			Endpoints []struct {
				Pod    string `json:"pod"`
				Health string `json:"health"`
			} `json:"endpoints"`
		} `json:"priorities"`
		Clients []struct {
			Node string `json:"node"`
			EDS  string `json:"eds"` // SYNCED: the client ACKed the endpoints last sent
		} `json:"clients"`
	} `json:"services"`
}

// waitClientsSynced waits until node's agent shows pods among service's
// endpoints and every client of the Service has ACKed the endpoints it was
// sent last: the clients have the change, rather than a wait long enough for
// it on an idle machine. It reports whether that happened within
// waitTimeout.
func (e *Env) waitClientsSynced(t testing.TB, node, service string, pods []string) bool {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if synced(e.fetchDebug(t, node, service), pods) {
			return true
		}
	}
	return false
}

// synced says d shows every one of pods, and at least one client, all SYNCED.
func synced(d debugServices, pods []string) bool {
	shown := map[string]bool{}
	clients := 0
	for _, s := range d.Services {
		for _, p := range s.Priorities {
			for _, e := range p.Endpoints {
				shown[e.Pod] = true
			}
		}
		for _, c := range s.Clients {
			if c.EDS != "SYNCED" {
				return false
			}
			clients++
		}
	}
	for _, p := range pods {
		if !shown[p] {
			return false
		}
	}
	return clients > 0
}

// fetchDebug reads node's agent's /debug/services for one Service
// ("namespace/name"), from its debug port.
func (e *Env) fetchDebug(t testing.TB, node, service string) debugServices {
	t.Helper()
	resp, err := http.Get("http://" + e.Agents[node].DebugAddr() + "/debug/services?format=json&service=" + url.QueryEscape(service))
	if err != nil {
		t.Fatalf("e2e: /debug/services: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("e2e: /debug/services: %s", resp.Status)
	}
	var d debugServices
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatalf("e2e: /debug/services: %v", err)
	}
	return d
}

// TestDebugServicesShowsWhatClientsReach (issue 6): an agent's
// /debug/services answers "why does my client on this node go to that pod?":
// its first priority is exactly the pods the node's clients reach, and it
// lists those clients — before and after the node's pods go away.
func TestDebugServicesShowsWhatClientsReach(t *testing.T) {
	const ns = "debug"
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 2, "node-a1")
	f.start(t, 1, "node-a2")
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})

	check := func(t *testing.T, want []string) {
		t.Helper()
		d := e.fetchDebug(t, "node-a1", ns+"/be")
		for _, s := range d.Services {
			if s.Service != ns+"/be" {
				continue
			}
			if len(s.Priorities) == 0 {
				t.Fatalf("/debug/services shows no priorities for %s", s.Cluster)
			}
			var first []string
			for _, ep := range s.Priorities[0].Endpoints {
				first = append(first, ep.Pod)
			}
			slices.Sort(first)
			if !slices.Equal(first, want) {
				t.Errorf("/debug/services priority 0 (%s) = %v; clients reach %v", s.Priorities[0].Tiers, first, want)
			}
			if len(s.Clients) < len(Stacks) {
				t.Errorf("/debug/services lists %d clients of %s, want at least %d", len(s.Clients), s.Cluster, len(Stacks))
			}
			t.Logf("node-a1 serves %s with policy %s, priority 0 %v, to %d clients", s.Cluster, s.Policy, first, len(s.Clients))
			return
		}
		t.Fatalf("/debug/services on node-a1 does not show %s/be: %+v", ns, d)
	}
	e.Step(t, "node", nil, func(t *testing.T, s Stack) { clients[s].WaitServedBy(t, f.names("node-a1")...) })
	t.Run("debug view, node tier", func(t *testing.T) { check(t, sortedCopy(f.names("node-a1"))) })
	t.Run("not on the admin port", func(t *testing.T) {
		// The admin port is what the pod network reaches: it names no client.
		for _, path := range []string{"/debug/services", "/debug/clients"} {
			resp, err := http.Get("http://" + net.JoinHostPort(e.Agents["node-a1"].IP, "18001") + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("admin port %s: %s, want 404", path, resp.Status)
			}
		}
	})
	var leaving []*cluster.Pod
	e.Step(t, "zone", func() { leaving = f.terminate(t, "node-a1") }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names("node-a2")...)
	})
	t.Run("debug view, zone tier", func(t *testing.T) { check(t, sortedCopy(f.names("node-a2"))) })
	f.finish(t, leaving)
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
