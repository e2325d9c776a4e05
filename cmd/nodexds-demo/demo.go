package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/echo"
)

// demoPod is a backend "pod": a real echo server on its own loopback address.
type demoPod struct {
	name, node, ip string
	svc            string // its Service; "" is be1
	addr           string
	srv            *echo.Server
}

func (p *demoPod) start() error {
	addr := p.addr
	if addr == "" {
		addr = net.JoinHostPort(p.ip, "0")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", p.name, err)
	}
	p.addr = lis.Addr().String()
	p.srv = echo.Serve(lis, p.name)
	return nil
}

// demo runs an agent for node-a on a file source describing three nodes in
// two zones, real echo backends on loopback addresses, and a grpc-go xDS
// client on node-a; then it stops node-a's backends and brings them back.
func demo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("nodexds-demo", flag.ContinueOnError)
	rpcs := fs.Int("rpcs", 12, "RPCs per round")
	verbose := fs.Bool("v", false, "show the agent's logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logOut := io.Discard
	if *verbose {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))

	pods := []*demoPod{
		{name: "be1-a-0", node: "node-a", ip: "127.0.10.1"},
		{name: "be1-a-1", node: "node-a", ip: "127.0.10.2"},
		{name: "be1-b-0", node: "node-b", ip: "127.0.10.3"},
		{name: "be1-c-0", node: "node-c", ip: "127.0.10.4"},
		{name: "canary-a-0", node: "node-a", ip: "127.0.10.5", svc: "be1-canary"},
		{name: "canary-c-0", node: "node-c", ip: "127.0.10.6", svc: "be1-canary"},
	}
	for _, p := range pods {
		if err := p.start(); err != nil {
			return err
		}
		defer p.srv.Stop()
	}
	dir, err := os.MkdirTemp("", "nodexds-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(file, []byte(demoYAML(pods)), 0o644); err != nil {
		return err
	}

	xdsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serveAgent(ctx, file, xdsLis, log) }()
	lines, wait, err := startClient(ctx, xdsLis.Addr().String(), logOut)
	if err != nil {
		return err
	}
	defer wait()
	defer cancel()

	fmt.Fprintf(out, `nodexds demo
  cluster (file %s):
    node-a, node-b in zone-1; node-c in zone-2
    service be1: be1-a-0, be1-a-1 on node-a; be1-b-0 on node-b; be1-c-0 on node-c
    service be1-canary: canary-a-0 on node-a; canary-c-0 on node-c
  agent for node-a serving ADS on %s
  client on node-a dials xds:///be1:8080

`, file, xdsLis.Addr())
	d := &demoRun{out: out, rpcs: *rpcs, lines: lines, nodeOf: map[string]string{}, file: file, cluster: demoYAML(pods)}
	for _, p := range pods {
		d.nodeOf[p.name] = p.node
	}
	if err := d.scenario(pods[:2]); err != nil {
		return err
	}
	if err := d.canary(); err != nil {
		return err
	}
	cancel()
	return <-served
}

// serveAgent runs the agent for node-a on the cluster described in file,
// serving ADS on lis, until ctx ends.
func serveAgent(ctx context.Context, file string, lis net.Listener, log *slog.Logger) error {
	return serve.Run(ctx, serve.Options{
		Config: agent.Config{
			NodeName:     "node-a",
			Names:        names.Parser{DefaultNamespace: "default", ClusterDomain: "cluster.local"},
			DefaultTiers: topology.DefaultTiers,
			Coalesce:     20 * time.Millisecond,
		},
		Source: &discovery.FileSource{Path: file, Poll: 200 * time.Millisecond, Log: log},
		XDS:    lis,
		Log:    log,
	})
}

// startClient starts the client as its own process, wired exactly as in a
// pod: a bootstrap in GRPC_XDS_BOOTSTRAP_CONFIG, and xds:///be1:8080. It
// returns the client's lines, one per RPC, and a wait for its exit.
func startClient(ctx context.Context, server string, logOut io.Writer) (<-chan string, func() error, error) {
	bs, err := bootstrap.JSON(bootstrap.Options{Server: server, NodeID: "demo/client-on-node-a", Zone: "zone-1", Region: "region-1"})
	if err != nil {
		return nil, nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	client := exec.CommandContext(ctx, self, clientCommand, "xds:///be1:8080")
	client.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP_CONFIG="+string(bs))
	client.Stderr = logOut
	stdout, err := client.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := client.Start(); err != nil {
		return nil, nil, err
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines, client.Wait, nil
}

// demoRun reads the client's RPCs and tells what happens to them.
type demoRun struct {
	out     io.Writer
	rpcs    int // per round
	lines   <-chan string
	nodeOf  map[string]string // pod name → node
	file    string            // the cluster, as the agent reads it
	cluster string            // its Nodes, Services and EndpointSlices
}

// canary splits be1 with a GRPCRoute, 90/10, then gives the canary all of
// it: each backend stays node-first, so the canary answers from node-a.
func (d *demoRun) canary() error {
	fmt.Fprintln(d.out, "4. a GRPCRoute on be1 sends 10% to be1-canary (each backend keeps its own tiers)")
	if err := d.route(90, 10); err != nil {
		return err
	}
	if _, err := d.settle(func(name string) bool { return strings.HasPrefix(name, "canary-") }, 1); err != nil {
		return err
	}
	rpcs := d.rpcs
	d.rpcs *= 10
	if err := d.round(""); err != nil {
		return err
	}
	d.rpcs = rpcs

	fmt.Fprintln(d.out, "5. the canary takes all of it")
	if err := d.route(0, 100); err != nil {
		return err
	}
	if _, err := d.settle(func(name string) bool { return strings.HasPrefix(name, "canary-") }, 20); err != nil {
		return err
	}
	fmt.Fprintln(d.out, "  every RPC goes to the canary (20 in a row)")
	return d.round("")
}

// route writes the cluster with a GRPCRoute splitting be1 by weight.
func (d *demoRun) route(be1, canary int) error {
	doc := fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: be1-canary, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: be1, port: 8080}]
  rules:
  - backendRefs:
    - {name: be1, port: 8080, weight: %d}
    - {name: be1-canary, port: 8080, weight: %d}
`, be1, canary)
	tmp := d.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.cluster+doc), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, d.file) // the agent never reads half a file
}

// settle reads RPC results until n in a row satisfy ok, and says how long
// that took.
func (d *demoRun) settle(ok func(name string) bool, n int) (time.Duration, error) {
	start, run := time.Now(), 0
	for time.Since(start) < 30*time.Second {
		name, err := d.next()
		if err != nil {
			return 0, err
		}
		if run++; !ok(name) {
			run = 0
		}
		if run == n {
			return time.Since(start), nil
		}
	}
	return 0, errors.New("traffic did not move within 30s")
}

// scenario runs the rounds: all pods up, node-a's pods (local) stopped,
// then started again.
func (d *demoRun) scenario(local []*demoPod) error {
	// The client's first RPCs may fail while it is still connecting (a slow
	// machine); the rounds start once it has reached its own node.
	if _, _, err := d.until("node-a"); err != nil {
		return err
	}
	if err := d.round("1. all pods up: the client stays on its own node"); err != nil {
		return err
	}

	fmt.Fprintln(d.out, "2. node-a's pods stop (their processes die; nothing tells the agent)")
	for _, p := range local {
		p.srv.Stop()
	}
	took, failed, err := d.until("node-b")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  the client failed over to the zone tier by itself in %v (%d RPCs failed meanwhile)\n", took.Round(time.Millisecond), failed)
	if err := d.round(""); err != nil {
		return err
	}

	fmt.Fprintln(d.out, "3. node-a's pods come back on the same addresses")
	for _, p := range local {
		if err := p.start(); err != nil {
			return err
		}
	}
	took, failed, err = d.until("node-a")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  traffic returned to node-a in %v (gRPC's reconnect backoff; %d RPCs failed meanwhile)\n", took.Round(time.Millisecond), failed)
	return d.round("")
}

// next returns the backend that answered the client's next RPC.
func (d *demoRun) next() (string, error) {
	select {
	case l, ok := <-d.lines:
		if !ok {
			return "", errors.New("the client exited")
		}
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "ok" {
			return f[1], nil
		}
		if len(f) >= 2 {
			return "error: " + f[1], nil
		}
		return "", fmt.Errorf("client said %q", l)
	case <-time.After(10 * time.Second):
		return "", errors.New("the client went silent")
	}
}

// round prints title, the first answers of rpcs RPCs and who answered them.
func (d *demoRun) round(title string) error {
	if title != "" {
		fmt.Fprintln(d.out, title)
	}
	counts := map[string]int{}
	for i := range d.rpcs {
		name, err := d.next()
		if err != nil {
			return err
		}
		if i < 3 {
			fmt.Fprintf(d.out, "  Hello from %s\n", name)
		}
		counts[name]++
	}
	fmt.Fprintf(d.out, "  %d RPCs: %s\n\n", d.rpcs, summary(counts, d.nodeOf))
	return nil
}

// until reads RPC results until one is answered on node, and says how long
// the switch took and how many RPCs failed meanwhile.
func (d *demoRun) until(node string) (time.Duration, int, error) {
	start, failed := time.Now(), 0
	for time.Since(start) < 30*time.Second {
		name, err := d.next()
		if err != nil {
			return 0, 0, err
		}
		if d.nodeOf[name] == node {
			return time.Since(start), failed, nil
		}
		if d.nodeOf[name] == "" {
			failed++
		}
	}
	return 0, 0, fmt.Errorf("traffic did not reach %s within 30s", node)
}

// demoClient is the demo's client process: it probes target and prints one
// line per RPC. Its xDS bootstrap comes from the environment.
func demoClient(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: nodexds-demo " + clientCommand + " xds:///NAME")
	}
	cc, err := grpc.NewClient(args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	echo.Probe(ctx, cc, 50*time.Millisecond, time.Second, os.Stdout)
	return nil
}

func summary(counts map[string]int, nodeOf map[string]string) string {
	var names []string
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		where := ""
		if node := nodeOf[n]; node != "" {
			where = " (" + node + ")"
		}
		parts = append(parts, fmt.Sprintf("%s%s ×%d", n, where, counts[n]))
	}
	return strings.Join(parts, ", ")
}

func demoYAML(pods []*demoPod) string {
	var b strings.Builder
	b.WriteString(`apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: zone-1, topology.kubernetes.io/region: region-1}
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {topology.kubernetes.io/zone: zone-1, topology.kubernetes.io/region: region-1}
---
apiVersion: v1
kind: Node
metadata:
  name: node-c
  labels: {topology.kubernetes.io/zone: zone-2, topology.kubernetes.io/region: region-1}
---
apiVersion: v1
kind: Service
metadata:
  name: be1
  namespace: default
spec:
  ports:
  - name: grpc
    port: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: be1-canary
  namespace: default
spec:
  ports:
  - name: grpc
    port: 8080
`)
	// Each pod listens on its own port, so each gets its own slice: slices
	// list one set of ports for all their endpoints.
	for _, p := range pods {
		host, port, _ := net.SplitHostPort(p.addr)
		fmt.Fprintf(&b, `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s
  namespace: default
  labels: {kubernetes.io/service-name: %s}
addressType: IPv4
ports: [{name: grpc, port: %s}]
endpoints:
- addresses: [%q]
  nodeName: %s
  targetRef: {kind: Pod, name: %s}
`, p.name, cmp.Or(p.svc, "be1"), port, host, p.node, p.name)
	}
	return b.String()
}
