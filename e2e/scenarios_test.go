package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// The scenarios, in the order they run. Each test starts its own cluster
// (StartEnv: ~4 s) so no scenario sees another's leftovers, runs a client
// of every stack side by side on clientNode (node-a1), and checks each in a
// subtest named after its stack. The C-core stack runs in the scenarios
// that call e.WithStack(t, CCore), grpc-go v1.55 in those that call
// e.WithStack(t, Go155). Pods are named <service>-<node>-<n>
// (be-a1-1 runs on node-a1), and that name is what every RPC's answer
// carries.

// TestClientReachesServiceThroughNodeAgent (ping-pong): agents running with
// nothing but deploy/'s RBAC serve a client on their node, bootstrapped by
// `nodexds bootstrap`, and its RPCs reach the Service's pod.
func TestClientReachesServiceThroughNodeAgent(t *testing.T) {
	const ns = "ping"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.WithStack(t, Go155)
	e.CreateService(t, ns, "pong")
	be := Backend{Namespace: ns, Service: "pong", Node: "node-b1", N: 1}
	e.StartBackend(t, be)
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "pong")}})

	e.Step(t, "served", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, be.Name())
	})
	marks := clients.Marks()
	e.Step(t, "steady", func() { time.Sleep(2 * time.Second) }, func(t *testing.T, s Stack) {
		clients[s].AssertNoFailures(t, marks[s], "in 2 s of steady traffic")
	})
}

// TestClientSpreadsOverAllLocalPods (spread): scaling a Service from 2 to 10
// pods on the client's node spreads the client over all 10, losing no RPC.
func TestClientSpreadsOverAllLocalPods(t *testing.T) {
	const ns = "spread"
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	var pods []string
	scaleTo := func(n int) {
		for i := len(pods) + 1; i <= n; i++ {
			b := Backend{Namespace: ns, Service: "be", Node: clientNode, N: i}
			e.StartBackend(t, b)
			pods = append(pods, b.Name())
		}
	}
	scaleTo(2)
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})

	e.Step(t, "2 pods", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, pods...)
	})
	marks := clients.Marks()
	e.Step(t, "10 pods", func() { scaleTo(10) }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, pods...)
		clients[s].AssertNoFailures(t, marks[s], "while scaling from 2 to 10 pods")
	})
}

// TestClientsGetOnlyTheServicesTheyAsk (many services): two Services in two
// namespaces; clients asking for one, the other, or both get exactly those,
// and a change to one Service reaches its clients only. The JS "both" client
// is one process with one ADS stream that subscribes to be2 after be1 is
// already served (a client adding a target to a live stream); grpc-go's
// probe takes one target, so its "both" is the two single-target clients on
// the same node and agent.
func TestClientsGetOnlyTheServicesTheyAsk(t *testing.T) {
	e := StartEnv(t, "team-1", "team-2")
	e.CreateService(t, "team-1", "be1")
	e.CreateService(t, "team-2", "be2")
	be1 := Backend{Namespace: "team-1", Service: "be1", Node: clientNode, N: 1}
	be2 := Backend{Namespace: "team-2", Service: "be2", Node: clientNode, N: 1}
	be2b := Backend{Namespace: "team-2", Service: "be2", Node: clientNode, N: 2}
	e.StartBackend(t, be1)
	e.StartBackend(t, be2)

	t1, t2 := Target("team-1", "be1"), Target("team-2", "be2")
	one := e.StartClients(t, ProbeOptions{Name: "be1", Targets: []string{t1}})
	other := e.StartClients(t, ProbeOptions{Name: "be2", Targets: []string{t2}})
	both := e.StartProbe(t, ProbeOptions{Stack: JS, Name: "both", Targets: []string{t1, t2}})

	e.Step(t, "each gets its own", nil, func(t *testing.T, s Stack) {
		one[s].WaitServedBy(t, be1.Name())
		other[s].WaitServedBy(t, be2.Name())
		if s == JS {
			both.WaitServedBy(t, be1.Name(), be2.Name())
		}
	})
	oneMarks, otherMarks, bothMark := one.Marks(), other.Marks(), both.Mark()
	e.Step(t, "be2 scales up", func() { e.StartBackend(t, be2b) }, func(t *testing.T, s Stack) {
		other[s].WaitServedBy(t, be2.Name(), be2b.Name())
		one[s].WaitServedBy(t, be1.Name()) // unchanged
		one[s].AssertNoFailures(t, oneMarks[s], "since served")
		other[s].AssertNoFailures(t, otherMarks[s], "since served")
		if s == JS {
			both.WaitServedBy(t, be1.Name(), be2.Name(), be2b.Name())
			both.AssertNoFailures(t, bothMark, "since served")
			// One stream, two subscriptions: no answer crossed over.
			for _, r := range both.RPCs(0) {
				if r.OK() && !strings.HasPrefix(r.Pod, targetService(r.Target)+"-") {
					t.Errorf("%s: RPC for %s answered by %s", both.Label(), r.Target, r.Pod)
					break
				}
			}
		}
	})
}

// TestTrafficFallsBackTierByTier (topology tiers): with the default policy
// (node, zone, region, anywhere) a client on node-a1 uses only node-a1's
// pods; as each tier's pods go away it moves to the next nearest tier, and
// back to node-a1 when pods return there — losing no RPC, because pods are
// only stopped once clients have moved (as with a preStop delay). A client
// on node-c1, served by its own node's agent, stays on node-c1 throughout.
func TestTrafficFallsBackTierByTier(t *testing.T) {
	const ns = "tiers"
	e := StartEnv(t, ns)
	e.WithStack(t, CCore)
	e.WithStack(t, Go155)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 2, "node-a1", "node-a2", "node-b1", "node-c1")
	target := []string{Target(ns, "be")}
	clients := e.StartClients(t, ProbeOptions{Targets: target})
	far := e.StartClients(t, ProbeOptions{Name: "far", Node: "node-c1", Targets: target})

	e.Step(t, "node", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names("node-a1")...)
		far[s].WaitServedBy(t, f.names("node-c1")...)
	})
	marks, farMarks := clients.Marks(), far.Marks()

	var leaving []*cluster.Pod // terminated, to finish once clients left them
	for _, st := range []struct{ step, gone, next string }{
		{"zone (node-a1 pods gone)", "node-a1", "node-a2"},
		{"region (zone-a pods gone)", "node-a2", "node-b1"},
		{"anywhere (region-1 pods gone)", "node-b1", "node-c1"},
	} {
		e.Step(t, st.step, func() {
			f.finish(t, leaving)
			leaving = f.terminate(t, st.gone)
		}, func(t *testing.T, s Stack) {
			clients[s].WaitServedBy(t, f.names(st.next)...)
		})
	}
	e.Step(t, "node again (new node-a1 pods)", func() {
		f.finish(t, leaving)
		f.start(t, 2, "node-a1")
	}, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names("node-a1")...)
	})
	e.Step(t, "no RPC lost", nil, func(t *testing.T, s Stack) {
		clients[s].AssertNoFailures(t, marks[s], "while moving between tiers")
		far[s].AssertNoFailures(t, farMarks[s], "on node-c1")
		far[s].AssertOnlyPods(t, 0, "on node-c1", f.everOn("node-c1")...)
	})
}

// TestServicePoliciesChooseTiers (each policy): what a Service asks for
// decides which tiers its clients use, and in which order — and a change of
// policy on a live Service takes effect at once, with nothing restarted.
// Every case has one pod on each node to begin with.
func TestServicePoliciesChooseTiers(t *testing.T) {
	const ns = "policies"
	e := StartEnv(t, ns)
	allNodes := []string{"node-a1", "node-a2", "node-b1", "node-c1"}
	local := corev1.ServiceInternalTrafficPolicyLocal
	clusterWide := corev1.ServiceInternalTrafficPolicyCluster
	distribution := func(d string) func(*corev1.Service) {
		return func(s *corev1.Service) { s.Spec.TrafficDistribution = &d }
	}
	annotate := func(v string) func(*corev1.Service) {
		return func(s *corev1.Service) { metav1.SetMetaDataAnnotation(&s.ObjectMeta, annotationTopology, v) }
	}

	// A step changes the Service and/or its pods, then expects the clients
	// to be served by exactly the running pods of the nodes in want plus
	// the pods of wantTerminating it just deleted; with neither, it expects
	// every RPC to fail.
	type step struct {
		name      string
		update    func(*corev1.Service) // applied to the live Service
		finish    bool                  // finish the earlier steps' deletions first
		terminate []string              // nodes whose pods are deleted, left Terminating
		kill      []string              // nodes whose pods are deleted and stopped at once
		add       []string              // nodes that get a new pod
		want      []string
		// wantTerminating: nodes of terminate whose pods must still serve.
		wantTerminating []string
		event           string // a Warning Event the agent must post on the Service
	}
	cases := []struct {
		name, svc string
		create    func(*corev1.Service)
		steps     []step
		// only: nodes whose pods may ever answer; strict: RPCs may fail.
		only   []string
		strict bool
	}{{
		name: "trafficDistribution PreferSameNode is node,zone,*", svc: "same-node",
		create: distribution(corev1.ServiceTrafficDistributionPreferSameNode),
		steps: []step{
			{name: "node", want: []string{"node-a1"}},
			{name: "zone", terminate: []string{"node-a1"}, want: []string{"node-a2"}},
			// No region tier: node-b1 (same region) and node-c1 are equal.
			{name: "anywhere", finish: true, terminate: []string{"node-a2"}, want: []string{"node-b1", "node-c1"}},
		},
	}, {
		name: "trafficDistribution PreferSameZone is zone,*", svc: "same-zone",
		create: distribution(corev1.ServiceTrafficDistributionPreferSameZone),
		steps: []step{
			{name: "zone", want: []string{"node-a1", "node-a2"}},
			{name: "anywhere", terminate: []string{"node-a1", "node-a2"}, want: []string{"node-b1", "node-c1"}},
		},
	}, {
		name: "internalTrafficPolicy Local is node only, strict", svc: "local",
		create: func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &local },
		only:   []string{"node-a1"}, strict: true,
		steps: []step{
			{name: "node", want: []string{"node-a1"}},
			// As kube-proxy does for Local: with no ready local endpoint,
			// a serving terminating local one keeps getting traffic, so a
			// pod's graceful termination drops nothing.
			{name: "local pod terminating, still serving", terminate: []string{"node-a1"}, wantTerminating: []string{"node-a1"}},
			{name: "local pod gone: RPCs fail, none leaves the node", finish: true},
			{name: "local pod back", add: []string{"node-a1"}, want: []string{"node-a1"}},
		},
	}, {
		name: "annotation beats trafficDistribution, strict without *", svc: "annotated",
		create: func(s *corev1.Service) {
			distribution(corev1.ServiceTrafficDistributionPreferSameNode)(s)
			annotate("region")(s)
		},
		only: []string{"node-a1", "node-a2", "node-b1"}, strict: true,
		steps: []step{
			{name: "region", want: []string{"node-a1", "node-a2", "node-b1"}},
			{name: "region-1 gone: RPCs fail, none leaves the region", kill: []string{"node-a1", "node-a2", "node-b1"}},
		},
	}, {
		name: "policy changed at runtime", svc: "changing",
		steps: []step{
			{name: "default: node first", want: []string{"node-a1"}},
			{name: "trafficDistribution PreferClose", update: distribution(corev1.ServiceTrafficDistributionPreferClose),
				want: []string{"node-a1", "node-a2"}},
			{name: "annotation region", update: annotate("region"), want: []string{"node-a1", "node-a2", "node-b1"}},
			{name: "annotation *", update: annotate("*"), want: allNodes},
			// Ignored with a Warning Event: the next rule (PreferClose) applies.
			{name: "invalid annotation", update: annotate("zone,bogus"), want: []string{"node-a1", "node-a2"},
				event: "InvalidAnnotation"},
			{name: "internalTrafficPolicy Local", update: func(s *corev1.Service) {
				delete(s.Annotations, annotationTopology)
				s.Spec.InternalTrafficPolicy = &local
			}, want: []string{"node-a1"}},
			{name: "internalTrafficPolicy Cluster", update: func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = &clusterWide
			}, want: []string{"node-a1", "node-a2"}},
		},
	}}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.CreateService(t, ns, c.svc, func(s *corev1.Service) {
				if c.create != nil {
					c.create(s)
				}
			})
			f := newFleet(e, ns, c.svc)
			f.start(t, 1, allNodes...)
			clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, c.svc)}})
			var marks map[Stack]int
			var finishing []*cluster.Pod // Terminating, to finish later
			for i, st := range c.steps {
				var wantPods []string
				e.Step(t, st.name, func() {
					if st.update != nil {
						e.UpdateService(t, ns, c.svc, st.update)
					}
					if st.finish {
						f.finish(t, finishing)
						finishing = nil
					}
					terminating := f.terminate(t, st.terminate...)
					finishing = append(finishing, terminating...)
					f.finish(t, f.terminate(t, st.kill...))
					f.start(t, 1, st.add...)
					wantPods = f.names(st.want...)
					for _, p := range terminating {
						if slices.Contains(st.wantTerminating, p.Node) {
							wantPods = append(wantPods, p.Name)
						}
					}
					if st.event != "" {
						e.waitServiceEvent(t, ns, c.svc, st.event)
					}
				}, func(t *testing.T, s Stack) {
					if len(wantPods) == 0 {
						clients[s].WaitFailing(t)
					} else {
						clients[s].WaitServedBy(t, wantPods...)
					}
				})
				if i == 0 {
					marks = clients.Marks()
				}
			}
			e.Step(t, "checks", nil, func(t *testing.T, s Stack) {
				if !c.strict {
					clients[s].AssertNoFailures(t, marks[s], "after the first step")
				}
				if c.only != nil {
					clients[s].AssertOnlyPods(t, 0, "during the whole case", f.everOn(c.only...)...)
				}
			})
		})
	}
}

// TestTerminatingPodGetsNoNewRPCs (terminating): a deleted pod — Terminating,
// its process still running — gets no new RPCs while a ready pod exists;
// when every pod is terminating, the serving ones are used rather than
// failing (as kube-proxy does); a ready pod anywhere then wins again, even
// over terminating pods on the client's own node.
func TestTerminatingPodGetsNoNewRPCs(t *testing.T) {
	const ns = "terminating"
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 2, clientNode)
	x1, x2 := f.pods[clientNode][0], f.pods[clientNode][1]
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})

	e.Step(t, "two ready pods", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, x1.Name, x2.Name)
	})
	marks := clients.Marks()
	var quiet map[Stack]int
	e.Step(t, "one terminating", func() { e.DeletePod(t, x1) }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, x2.Name)
	})
	e.Step(t, "terminating pod stays idle", func() {
		quiet = clients.Marks()
		time.Sleep(2 * time.Second)
	}, func(t *testing.T, s Stack) {
		if exited, _ := x1.Process.Exited(); exited {
			t.Fatalf("%s's process exited: the check below would prove nothing", x1.Name)
		}
		clients[s].AssertOnlyPods(t, quiet[s], "in 2 s after "+x1.Name+" was deleted", x2.Name)
	})
	e.Step(t, "all terminating: serving ones used", func() { e.DeletePod(t, x2) }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, x1.Name, x2.Name)
	})
	remote := Backend{Namespace: ns, Service: "be", Node: "node-c1", N: 1}
	e.Step(t, "a ready pod anywhere wins", func() { e.StartBackend(t, remote) }, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, remote.Name())
		clients[s].AssertNoFailures(t, marks[s], "through deletions")
	})
}

// TestAgentRestartLosesNoRPCs (agent restart): kill -9 the agent of the
// client's node under steady traffic. Clients keep their last configuration
// (grpc keeps cached xDS resources when the stream breaks), so no RPC fails;
// a change made while the agent is down reaches them once it is back.
func TestAgentRestartLosesNoRPCs(t *testing.T) {
	const ns = "restart"
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 1, clientNode)
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})
	agent := e.Agents[clientNode]

	e.Step(t, "served", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names(clientNode)...)
	})
	marks := clients.Marks()
	e.Step(t, "agent killed", func() {
		agent.Kill(t)
		time.Sleep(2 * time.Second)
	}, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names(clientNode)...)
	})
	before := f.names(clientNode)
	var downMarks map[Stack]int
	e.Step(t, "scaled up while the agent is down", func() {
		f.start(t, 1, clientNode)
		downMarks = clients.Marks()
		time.Sleep(2 * time.Second)
	}, func(t *testing.T, s Stack) {
		// Nobody told the clients yet.
		clients[s].AssertOnlyPods(t, downMarks[s], "while the agent is down", before...)
	})
	var back time.Time
	e.Step(t, "agent restarted", func() {
		agent.Start(t)
		agent.waitReady(t)
		back = time.Now()
	}, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names(clientNode)...)
		// The client reconnects on its own ADS backoff schedule, which kept
		// growing while the agent was down.
		lag := firstAnswerAfter(clients[s], f.names(clientNode)[1], back)
		t.Logf("%s: the pod added while the agent was down answered %s after the agent was ready again", clients[s].Label(), lag)
		recordFigure("agent restart (down ~4 s): agent ready again → first RPC to the pod added meanwhile, %s client: %s", s, lag)
		clients[s].AssertNoFailures(t, marks[s], "across the agent's death and restart")
	})
}

// TestAPIServerOutageLosesNoRPCs (apiserver outage): kube-apiserver stops
// for 30 s under load. Agents keep serving what they know, to existing
// clients and to a client that starts during the outage; no RPC fails.
// Once the API server is back, a change made afterwards reaches clients
// after the agent's informers re-list (client-go's backoff, which grows
// during the outage: the figure shows it). The change is to the Service
// itself, so its path is the agent's own watch: a pod change would first
// wait for the EndpointSlice controller's informers, whose backoff made it
// take over a minute here.
func TestAPIServerOutageLosesNoRPCs(t *testing.T) {
	const ns = "outage"
	const outage = 30 * time.Second
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	f := newFleet(e, ns, "be")
	f.start(t, 1, clientNode, "node-a2")
	target := []string{Target(ns, "be")}
	clients := e.StartClients(t, ProbeOptions{Targets: target})

	e.Step(t, "served", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, f.names(clientNode)...)
	})
	marks := clients.Marks()
	var late Clients
	var down time.Time
	e.Step(t, "apiserver down", func() {
		down = time.Now()
		e.StopAPIServer(t) // SIGTERM: it stops listening at once, exits within 10 s
		t.Logf("kube-apiserver process gone after %s", time.Since(down).Round(time.Millisecond))
		time.Sleep(outage/3 - time.Since(down))
		// A client starting now can only be served from the agent's memory.
		late = e.StartClients(t, ProbeOptions{Name: "late", Targets: target})
		time.Sleep(outage - time.Since(down))
	}, func(t *testing.T, s Stack) {
		late[s].WaitServedBy(t, f.names(clientNode)...)
		clients[s].AssertNoFailures(t, marks[s], "during the outage")
	})
	var changed time.Time
	e.Step(t, "apiserver back, then a change", func() {
		e.StartAPIServer(t)
		t.Logf("kube-apiserver back (ready) after %s", time.Since(down).Round(time.Millisecond))
		e.UpdateService(t, ns, "be", func(s *corev1.Service) {
			d := corev1.ServiceTrafficDistributionPreferSameZone
			s.Spec.TrafficDistribution = &d
		})
		changed = time.Now()
	}, func(t *testing.T, s Stack) {
		// client-go's re-list backoff reaches 30 s during the outage, and
		// its jitter can double that.
		clients[s].WaitServedByWithin(t, 2*time.Minute, f.names(clientNode, "node-a2")...)
		lag := firstAnswerAfter(clients[s], f.names("node-a2")[0], changed)
		t.Logf("%s: the Service change made after the outage reached it %s later", clients[s].Label(), lag)
		recordFigure("apiserver outage (%s): Service change written right after the API server returned → first RPC reflecting it, %s client: %s", outage, s, lag)
		clients[s].AssertNoFailures(t, marks[s], "across the outage")
		late[s].AssertNoFailures(t, 0, "since it started during the outage")
	})
}

// TestPropagationLatency measures, over many changes, the time from an API
// write that changes a Service's EndpointSlices to the first RPC a client
// sends to the pod it added: the whole chain of EndpointSlice controller,
// watch, agent, ADS push, client LB update and connection. The change is the
// pod status write (the kubelet's) that makes a new pod on node-a1 Ready
// while the client is served by node-a2: the new pod is in a nearer tier,
// so it must take all traffic. It prints percentiles per client stack, and
// splits them at the moment a watch of the test's own saw the EndpointSlice
// list the pod ready (before: EndpointSlice controller; after: nodexds and
// the client). It asserts only that every change arrives and no RPC fails.
func TestPropagationLatency(t *testing.T) {
	const (
		ns       = "latency"
		changes  = 25
		interval = 10 * time.Millisecond // the figures' resolution
	)
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	base := Backend{Namespace: ns, Service: "be", Node: "node-a2", N: 1}
	e.StartBackend(t, base)
	clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}, Interval: interval})
	e.Step(t, "served by node-a2", nil, func(t *testing.T, s Stack) {
		clients[s].WaitServedBy(t, base.Name())
	})
	marks := clients.Marks()
	sliceReady := e.watchReadyEndpoints(t, ns, "be")

	lat := map[Stack][]time.Duration{}
	var controller []time.Duration // write → EndpointSlice lists it ready
	after := map[Stack][]time.Duration{}
	e.Step(t, fmt.Sprintf("%d changes", changes), func() {
		for i := 1; i <= changes; i++ {
			// Started not Ready: its endpoint is listed, but unused.
			b := Backend{Namespace: ns, Service: "be", Node: clientNode, N: i, NotReady: true}
			pod := e.StartBackend(t, b)
			t0 := time.Now()
			e.SetPodReady(t, pod, true)
			ready := sliceReady(pod.IP.String())
			controller = append(controller, ready.Sub(t0))
			for _, s := range Stacks {
				r := clients[s].FirstAnsweredBy(t, pod.Name, t0)
				lat[s] = append(lat[s], r.At.Sub(t0))
				after[s] = append(after[s], r.At.Sub(ready))
			}
			// Back to node-a2 before the next change: delete the pod, let
			// clients leave it, then stop it.
			e.DeletePod(t, pod)
			for _, s := range Stacks {
				clients[s].WaitServedBy(t, base.Name())
			}
			e.FinishPodDeletion(t, pod)
		}
		t.Logf("EndpointSlice controller samples (ms, in order): %s", millis(controller))
		line := fmt.Sprintf("propagation latency: pod Ready write → EndpointSlice lists it ready (controller, seen by a watch): %s", percentiles(controller))
		t.Log(line)
		recordFigure("%s", line)
	}, func(t *testing.T, s Stack) {
		clients[s].AssertNoFailures(t, marks[s], "through the changes")
		t.Logf("samples (ms, in order): %s", millis(lat[s]))
		line := fmt.Sprintf("propagation latency, %s client, %d changes (resolution %s): pod Ready write → first RPC answered by it: %s; EndpointSlice ready → that RPC: %s",
			s, len(lat[s]), interval, percentiles(lat[s]), percentiles(after[s]))
		t.Log(line)
		recordFigure("%s", line)
	})
}
