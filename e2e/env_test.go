package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// The simulated cluster every scenario runs on: two nodes in one zone, a
// second zone in the same region, and a second region, so that each of the
// agent's tiers (node, zone, region, anywhere) has its own node.
var clusterNodes = []cluster.Node{
	{Name: "node-a1", Zone: "zone-a", Region: "region-1"},
	{Name: "node-a2", Zone: "zone-a", Region: "region-1"},
	{Name: "node-b1", Zone: "zone-b", Region: "region-1"},
	{Name: "node-c1", Zone: "zone-c", Region: "region-2"},
}

// clientNode is where the scenarios' clients run.
const clientNode = "node-a1"

// Ports of every test Service: clients dial the Service port by name or
// number; backends listen on the target port.
const (
	servicePort = 8080
	backendPort = 50051
)

// Env is a cluster with a nodexds agent on every node, deployed as
// deploy/ deploys it.
type Env struct {
	*cluster.Cluster
	Bins   Bins
	Agents map[string]*Agent

	// stacks are the client stacks this scenario runs (Stacks, plus those
	// added with WithStack); skip holds why some of them skip.
	stacks []Stack
	skip   map[Stack]stackSkip

	agentArgs []string // EnvOptions.AgentArgs

	mu     sync.Mutex
	probes []*Probe // running, so Step can mark phases on them
	seq    int
	ids    *identities // the trust domain's CA (mtls_test.go), made on first use
}

// stackSkip is why a scenario's checks of one stack skip. A stack that
// cannot run on this machine fails instead when CI=true: CI installs every
// stack, so a skip there would hide a broken setup.
type stackSkip struct {
	reason   string
	failInCI bool
}

// StartEnv starts the cluster, applies deploy/ (namespace, RBAC, DaemonSet
// object) with kubectl, and runs an agent on every node with a token of the
// deploy/ ServiceAccount. namespaces are created for the test's workloads.
func StartEnv(t *testing.T, namespaces ...string) *Env {
	t.Helper()
	return StartEnvWith(t, EnvOptions{}, namespaces...)
}

// EnvOptions change how StartEnvWith runs the agents.
type EnvOptions struct {
	// AgentArgs are more flags for every agent (later flags win).
	AgentArgs []string
	// AgentCerts gives the agents a certificate of their service account
	// (--certs), as the DaemonSet's csi-driver-spiffe volume would: they
	// then check mTLS servers' health over mTLS.
	AgentCerts bool
}

// StartEnvWith is StartEnv with options.
func StartEnvWith(t *testing.T, o EnvOptions, namespaces ...string) *Env {
	t.Helper()
	start := time.Now()
	c := cluster.Start(t, cluster.Options{Nodes: clusterNodes, Namespaces: namespaces})
	e := &Env{Cluster: c, Bins: projectBins(t), Agents: map[string]*Agent{},
		stacks: slices.Clone(Stacks), skip: map[Stack]stackSkip{}, agentArgs: o.AgentArgs}

	// The kustomization as a user would apply it. Nothing runs the
	// DaemonSet (no scheduler, no kubelet); the agents below play its pods.
	e.kubectl(t, "apply", "-k", e.Bins.Repo+"/deploy")
	e.waitRBACEffective(t)
	kubeconfig := c.WriteKubeconfig(t, c.ServiceAccountToken(t, "nodexds", "nodexds"))
	if o.AgentCerts {
		e.agentArgs = append(e.agentArgs, "--certs="+e.IssueCerts(t, "nodexds", "nodexds", "agents"))
	}

	for _, n := range clusterNodes {
		e.Agents[n.Name] = e.startAgent(t, n.Name, kubeconfig)
	}
	for _, n := range clusterNodes {
		e.Agents[n.Name].waitReady(t)
	}
	// The clients run in the nodes' network namespaces, as processes of a
	// hostNetwork pod do; the agents admit them because such a pod exists
	// on their node, with the node's IP.
	for _, n := range clusterNodes {
		e.StartPod(t, cluster.PodSpec{Name: "host-clients-" + n.Name, Node: n.Name, HostNetwork: true})
	}
	t.Logf("e2e: cluster and %d agents ready in %s", len(clusterNodes), time.Since(start).Round(time.Millisecond))
	return e
}

// WithStack adds a client stack beyond Stacks (CCore, Go155) to the
// scenario: its clients start with StartClients, and Step checks it too. If
// C-core cannot run here, its checks skip with the reason (fail under
// CI=true); Go155's probe is built (once, cached) now.
func (e *Env) WithStack(t testing.TB, s Stack) {
	t.Helper()
	if !slices.Contains(e.stacks, s) {
		e.stacks = append(e.stacks, s)
	}
	if s == Go155 {
		goProbe155(t)
	}
	if s == CCore && e.Bins.CCoreMissing != "" {
		e.skip[s] = stackSkip{reason: "gRPC C-core stack unavailable: " + e.Bins.CCoreMissing, failInCI: true}
	}
}

// SkipStack makes the scenario start no client of stack s and skip its
// checks, saying why: for a client bug the scenario cannot run around.
func (e *Env) SkipStack(t testing.TB, s Stack, reason string) {
	t.Helper()
	e.WithStack(t, s)
	if _, ok := e.skip[s]; !ok {
		e.skip[s] = stackSkip{reason: reason}
	}
}

// skipped ends t (a stack's check) if the scenario skips that stack.
func (e *Env) skipped(t *testing.T, s Stack) {
	t.Helper()
	sk, ok := e.skip[s]
	switch {
	case !ok:
	case sk.failInCI && os.Getenv("CI") == "true":
		t.Fatalf("%s (CI=true: every client stack must run)", sk.reason)
	default:
		t.Skip(sk.reason)
	}
}

// agentUser is who the agents are: deploy/'s ServiceAccount.
const agentUser = "system:serviceaccount:nodexds:nodexds"

// waitRBACEffective waits until the API server's authorizer has caught up
// with the RBAC objects just applied, so that "forbidden" in an agent's log
// can only mean deploy/rbac.yaml lacks something, never this race.
func (e *Env) waitRBACEffective(t testing.TB) {
	t.Helper()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   agentUser,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:nodexds", "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "watch",
		},
	}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := e.Client().AuthorizationV1().SubjectAccessReviews().Create(t.Context(), review, metav1.CreateOptions{})
		if err == nil && res.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("e2e: %s still may not watch endpointslices 30s after kubectl apply -k deploy/ (err %v)", agentUser, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartAPIServer restarts the API server (see cluster.StartAPIServer). A
// starting API server serves before its RBAC caches are filled, and may
// refuse what RBAC allows until it is ready: agents' log lines from then
// until 2 s after it is ready are exempt from the "forbidden" check.
func (e *Env) StartAPIServer(t testing.TB) {
	t.Helper()
	from := e.agentLogSizes()
	e.Cluster.StartAPIServer(t)
	time.AfterFunc(2*time.Second, func() {
		to := e.agentLogSizes()
		for node, a := range e.Agents {
			a.mu.Lock()
			a.exempt = append(a.exempt, [2]int64{from[node], to[node]})
			a.mu.Unlock()
		}
	})
}

func (e *Env) agentLogSizes() map[string]int64 {
	sizes := map[string]int64{}
	for node, a := range e.Agents {
		if fi, err := os.Stat(a.proc.LogPath); err == nil {
			sizes[node] = fi.Size()
		}
	}
	return sizes
}

// kubectl runs kubectl as the cluster admin and returns its output.
func (e *Env) kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := e.Kubectl(t.Context(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("e2e: kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Agent is the nodexds agent of one node, run as the DaemonSet's pod would
// be: in the node's network namespace, on the node IP, with the
// ServiceAccount token of deploy/rbac.yaml.
type Agent struct {
	Node string
	IP   string
	env  *Env
	argv []string
	proc *cluster.Process

	mu     sync.Mutex
	exempt [][2]int64 // log byte ranges where "forbidden" is expected
}

func (e *Env) startAgent(t testing.TB, node, kubeconfig string) *Agent {
	t.Helper()
	ip := e.NodeIP(node).String()
	a := &Agent{Node: node, IP: ip, env: e, argv: []string{
		e.Bins.Nodexds, "serve",
		"--source=kube",
		"--kubeconfig=" + kubeconfig,
		"--node-name=" + node,
		"--xds-listen=" + net.JoinHostPort(ip, "18000"),
		"--admin-listen=" + net.JoinHostPort(ip, "18001"),
		// Loopback by default; the harness reads it from the host.
		"--debug-listen=" + net.JoinHostPort(ip, "18002"),
	}}
	a.argv = append(a.argv, e.agentArgs...)
	a.Start(t)
	// A "forbidden" anywhere in its log means deploy/rbac.yaml lacks
	// something the agent uses (list/watch fails, or an Event is refused).
	t.Cleanup(func() { a.assertNoForbidden(t) })
	return a
}

// XDSAddr is where this node's clients find the agent.
func (a *Agent) XDSAddr() string { return net.JoinHostPort(a.IP, "18000") }

// DebugAddr is the agent's debug port (/debug/services, CSDS).
func (a *Agent) DebugAddr() string { return net.JoinHostPort(a.IP, "18002") }

// Start starts the agent process (again, after Kill); call waitReady next.
func (a *Agent) Start(t testing.TB) {
	t.Helper()
	a.proc = a.env.StartInNode(t, a.Node, "agent-"+a.Node, nil, a.argv...)
}

// Kill kills the agent with SIGKILL: no goodbye to its clients.
func (a *Agent) Kill(t testing.TB) {
	t.Helper()
	if err := a.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	select {
	case <-a.proc.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("e2e: agent on %s survived SIGKILL", a.Node)
	}
}

// waitReady waits for /readyz: the agent has synced its informers (with the
// RBAC of deploy/) and serves ADS.
func (a *Agent) waitReady(t testing.TB) {
	t.Helper()
	url := "http://" + net.JoinHostPort(a.IP, "18001") + "/readyz"
	a.waitReadyVia(t, &http.Client{Timeout: 2 * time.Second}, url, url)
}

// waitReadyVia waits until GET url through client answers 200 (where says
// where that is, for the failure message), failing if the agent exits or is
// not ready within 30 s.
func (a *Agent) waitReadyVia(t testing.TB, client *http.Client, url, where string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				a.assertNoForbidden(t)
				return
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if exited, werr := a.proc.Exited(); exited {
			t.Fatalf("e2e: agent %s on %s exited (%v):\n%s", a.proc.Name, a.Node, werr, a.proc.LogTail(30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("e2e: agent %s on %s not ready after 30s (GET %s: %v):\n%s", a.proc.Name, a.Node, where, err, a.proc.LogTail(30))
		}
	}
}

var forbidden = regexp.MustCompile(`(?i)forbidden`)

func (a *Agent) assertNoForbidden(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(a.proc.LogPath)
	if err != nil {
		t.Errorf("e2e: %v", err)
		return
	}
	a.mu.Lock()
	exempt := slices.Clone(a.exempt)
	a.mu.Unlock()
	var lines []string
	exempted := 0
	for off := 0; off < len(b); {
		line, _, _ := strings.Cut(string(b[off:]), "\n")
		start := int64(off)
		off += len(line) + 1
		if !forbidden.MatchString(line) {
			continue
		}
		if slices.ContainsFunc(exempt, func(r [2]int64) bool { return start >= r[0] && start < r[1] }) {
			exempted++
			continue
		}
		lines = append(lines, line)
	}
	if exempted > 0 {
		t.Logf("agent on %s: %d \"forbidden\" log lines while the API server was starting (not counted)", a.Node, exempted)
	}
	if len(lines) > 0 {
		t.Errorf("agent on %s was refused by RBAC (deploy/rbac.yaml is not enough), %d log lines, first: %s",
			a.Node, len(lines), lines[0])
	}
}

// Bootstrap returns what `nodexds bootstrap` prints for a client on node,
// as a pod's init step would run it; extra are more flags.
func (e *Env) Bootstrap(t testing.TB, node, id string, extra ...string) string {
	t.Helper()
	var zone, region string
	for _, n := range clusterNodes {
		if n.Name == node {
			zone, region = n.Zone, n.Region
		}
	}
	cmd := exec.Command(e.Bins.Nodexds, append([]string{"bootstrap", "-server", e.Agents[node].XDSAddr(),
		"-node-id", id, "-zone", zone, "-region", region}, extra...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("e2e: nodexds bootstrap: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// Target is the name clients dial for a test Service.
func Target(ns, svc string) string {
	return "xds:///" + svc + "." + ns + ":" + strconv.Itoa(servicePort)
}

// CreateService creates a Service selecting app=<name>, with one TCP port
// named grpc (servicePort → backendPort). mutate, if given, edits it first.
func (e *Env) CreateService(t testing.TB, ns, name string, mutate ...func(*corev1.Service)) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{
				Name: "grpc", Port: servicePort, TargetPort: intstr.FromInt32(backendPort),
			}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	if _, err := e.Client().CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("e2e: create service %s/%s: %v", ns, name, err)
	}
}

// UpdateService applies mutate to the current Service and writes it.
func (e *Env) UpdateService(t testing.TB, ns, name string, mutate func(*corev1.Service)) {
	t.Helper()
	services := e.Client().CoreV1().Services(ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := services.Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(svc)
		_, err = services.Update(t.Context(), svc, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("e2e: update service %s/%s: %v", ns, name, err)
	}
}

// Backend describes an echo pod for StartBackend.
type Backend struct {
	Namespace, Service, Node string
	// N numbers pods of one Service on one node: the pod is named
	// <service>-<node without "node-">-<N>, e.g. be-a1-2, which is what
	// clients print for each RPC it answers.
	N int
	// NotReady starts it with Ready=False (see cluster.PodSpec).
	NotReady bool

	// XDS makes it an xDS-enabled server (gRFC A36) with xDS credentials
	// (A29): its init step writes its bootstrap with `nodexds bootstrap`,
	// and it serves only once its agent gave it a Listener. See
	// xdsServerArgv (mtls_test.go), which needs the agents to listen on
	// every address of their node (mtlsAgentArgs).
	XDS bool
	// Stack is the server program of an XDS backend (default Go,
	// nodexds-echo; JS and CCore run jsclient's and pyclient's programs
	// with `serve --xds`).
	Stack Stack
	// Certs is the pod's certificate directory (Env.IssueCerts), written
	// into its bootstrap; "" for none.
	Certs string
	// ServiceAccount is the pod's (default "default"); IssueCerts creates it.
	ServiceAccount string
	// Agent is the node whose agent an XDS backend asks for its Listener:
	// default its own; another node's is asked as a fallback server is,
	// with its bootstrap naming its own node (--node-name).
	Agent string
}

// Name is the pod's name.
func (b Backend) Name() string {
	return fmt.Sprintf("%s-%s-%d", b.Service, strings.TrimPrefix(b.Node, "node-"), b.N)
}

// StartBackend runs a nodexds-echo pod labelled app=<service>, answering
// "Hello from <pod name>".
func (e *Env) StartBackend(t testing.TB, b Backend) *cluster.Pod {
	t.Helper()
	// Cleanups run last-in first-out: a pod started after a client would be
	// stopped while the client still sends RPCs, and its failures would
	// pollute the tables. The test is over by then: stop the clients first.
	defer t.Cleanup(e.stopProbes)
	argv := []string{e.Bins.Echo, "serve", "-listen", "{{IP}}:" + strconv.Itoa(backendPort), "-name", "{{NAME}}"}
	if b.XDS {
		argv = e.xdsServerArgv(t, b)
	}
	return e.StartPod(t, cluster.PodSpec{
		Namespace: b.Namespace, Name: b.Name(), Node: b.Node,
		Labels:         map[string]string{"app": b.Service},
		Ports:          []corev1.ContainerPort{{Name: "grpc", ContainerPort: backendPort}},
		Argv:           argv,
		NotReady:       b.NotReady,
		ServiceAccount: b.ServiceAccount,
	})
}

// Step is one step of a scenario. It starts a phase named after the step on
// every running client (a row of their RPCs-by-pod tables), runs action in
// the scenario's own goroutine, so what action creates with the scenario's
// t lives until the scenario ends, and then runs check once per client
// stack, in subtests <step>/go, <step>/js (and <step>/ccore). Either may be nil.
func (e *Env) Step(t *testing.T, name string, action func(), check func(t *testing.T, s Stack)) {
	t.Helper()
	e.mu.Lock()
	for _, p := range e.probes {
		p.Phase(name)
	}
	e.mu.Unlock()
	if action != nil {
		action()
	}
	if check == nil {
		return
	}
	t.Run(name, func(t *testing.T) {
		for _, s := range e.stacks {
			t.Run(string(s), func(t *testing.T) {
				e.skipped(t, s)
				check(t, s)
			})
		}
	})
}

func (e *Env) addProbe(p *Probe) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.probes = append(e.probes, p)
}

// stopProbes stops every running client (each still reports in its own
// cleanup).
func (e *Env) stopProbes() {
	e.mu.Lock()
	probes := slices.Clone(e.probes)
	e.mu.Unlock()
	for _, p := range probes {
		p.stop()
	}
}

func (e *Env) removeProbe(p *Probe) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.probes = slices.DeleteFunc(e.probes, func(q *Probe) bool { return q == p })
}
