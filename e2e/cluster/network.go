package cluster

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Layout of the simulated network (one /16 per test run, 10.X.0.0/16):
//
//	10.X.0.1          bridge in the root namespace (API server listens here)
//	10.X.0.(10+i)     node i's IP, on eth0 in the node's namespace
//	10.X.(1+i).0/24   node i's pod CIDR; each pod IP is added to the node's
//	                  eth0 as a /32 while the pod exists
//
// Every address is on one L2 segment (the bridge), so all of them resolve by
// ARP: no routes are needed anywhere. The service CIDR (serviceCIDR) is never
// routed; it only has to be disjoint from the /16.
const (
	serviceCIDR = "10.96.0.0/16"
	// maxNodes keeps node IPs (10.X.0.10..) and pod CIDRs (10.X.1..) inside
	// the /16.
	maxNodes = 200
	// aliasPrefix marks bridges created by this harness (ip link alias), so a
	// later run can remove what a killed run left behind.
	aliasPrefix = "nodexds-e2e"
	// lockPath serialises subnet choice among concurrent test processes.
	lockPath = "/run/nodexds-e2e.lock"
)

// network is one test run's bridge plus one namespace per node.
type network struct {
	runID    string // 4 hex digits, part of every interface/namespace name
	subnet   netip.Prefix
	bridge   string
	bridgeIP netip.Addr

	mu    sync.Mutex
	nodes map[string]*nodeNet
}

// nodeNet is a node's network namespace.
type nodeNet struct {
	index    int
	netns    string // ip netns name
	hostVeth string // root-namespace end of the veth pair, a bridge port
	ip       netip.Addr
	podCIDR  netip.Prefix
	nextPod  int // last host number handed out in podCIDR
}

// ipCmd runs `ip args...`, returning its output in the error on failure.
func ipCmd(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cleanupCtx is used by teardown steps, which run after the test's context
// has been cancelled.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// setupNetwork creates the bridge and one namespace per node. It skips the
// test when namespaces cannot be created (not root, no iproute2, no
// CAP_SYS_ADMIN). Everything it creates is removed in t.Cleanup.
func setupNetwork(t testing.TB, nodeNames []string) *network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e: skipped: needs root to create network namespaces, veths and a bridge (run go test as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("e2e: skipped: the `ip` command (iproute2) is not installed")
	}
	if len(nodeNames) > maxNodes {
		t.Fatalf("e2e: %d nodes requested, the address plan allows %d", len(nodeNames), maxNodes)
	}
	ctx := t.Context()

	// crypto/rand: run ids of concurrent test processes must not collide.
	idBytes := make([]byte, 2)
	if _, err := cryptorand.Read(idBytes); err != nil {
		t.Fatalf("e2e: run id: %v", err)
	}
	n := &network{runID: hex.EncodeToString(idBytes), nodes: map[string]*nodeNet{}}
	n.bridge = "nx" + n.runID + "br"

	// Namespaces first: creating one is the capability probe that decides
	// between skipping and running.
	for i, name := range nodeNames {
		nn := &nodeNet{
			index:    i,
			netns:    fmt.Sprintf("nx%s-%d", n.runID, i),
			hostVeth: fmt.Sprintf("nx%sv%d", n.runID, i),
		}
		if _, err := ipCmd(ctx, "netns", "add", nn.netns); err != nil {
			// The first failure decides: a permission problem means this
			// environment cannot run the tests (skip); a name clash with
			// another run is a real failure.
			if i == 0 && !strings.Contains(err.Error(), "File exists") {
				t.Skipf("e2e: skipped: cannot create network namespaces: %v", err)
			}
			t.Fatalf("e2e: %v", err)
		}
		t.Cleanup(func() { deleteNetns(t, nn.netns) })
		n.nodes[name] = nn
	}

	if err := n.createBridge(ctx, t); err != nil {
		t.Fatalf("e2e: %v", err)
	}

	for _, name := range nodeNames {
		nn := n.nodes[name]
		nn.ip = n.addr(0, 10+nn.index)
		nn.podCIDR = netip.PrefixFrom(n.addr(1+nn.index, 0), 24)
		bits := strconv.Itoa(n.subnet.Bits())
		// The peer is created directly inside the namespace and named eth0
		// there, as on a real node.
		steps := [][]string{
			{"link", "add", nn.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", nn.netns},
			{"link", "set", nn.hostVeth, "master", n.bridge, "up"},
			{"-n", nn.netns, "addr", "add", nn.ip.String() + "/" + bits, "dev", "eth0"},
			{"-n", nn.netns, "link", "set", "eth0", "up"},
			{"-n", nn.netns, "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if _, err := ipCmd(ctx, s...); err != nil {
				t.Fatalf("e2e: node %s: %v", name, err)
			}
		}
	}
	return n
}

// createBridge picks a free 10.X.0.0/16 and creates the bridge holding its
// first address. Choice and creation happen under a host-wide lock so that
// two concurrent runs cannot pick the same subnet.
func (n *network) createBridge(ctx context.Context, t testing.TB) error {
	unlock, err := lockFile(lockPath)
	if err != nil {
		return err
	}
	defer unlock()

	sweepStale(ctx, t)

	subnet, err := chooseSubnet(ctx)
	if err != nil {
		return err
	}
	n.subnet = subnet
	n.bridgeIP = n.addr(0, 1)

	if _, err := ipCmd(ctx, "link", "add", n.bridge, "type", "bridge"); err != nil {
		return err
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if _, err := ipCmd(ctx, "link", "del", n.bridge); err != nil {
			t.Errorf("e2e: teardown: %v", err)
		}
	})
	alias := fmt.Sprintf("%s run=%s pid=%d", aliasPrefix, n.runID, os.Getpid())
	for _, s := range [][]string{
		{"link", "set", n.bridge, "alias", alias},
		{"addr", "add", n.bridgeIP.String() + "/" + strconv.Itoa(subnet.Bits()), "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	} {
		if _, err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// addr returns 10.X.a.b in the run's subnet.
func (n *network) addr(a, b int) netip.Addr {
	base := n.subnet.Addr().As4()
	return netip.AddrFrom4([4]byte{base[0], base[1], byte(a), byte(b)})
}

// chooseSubnet returns a 10.X.0.0/16 that overlaps no address or route on
// the host (any table) and not the service CIDR.
func chooseSubnet(ctx context.Context) (netip.Prefix, error) {
	var used []netip.Prefix
	for _, args := range [][]string{
		{"-4", "-o", "addr", "show"},
		{"-4", "route", "show", "table", "all"},
	} {
		out, err := ipCmd(ctx, args...)
		if err != nil {
			return netip.Prefix{}, err
		}
		used = append(used, prefixesIn(out)...)
	}
	used = append(used, netip.MustParsePrefix(serviceCIDR))

	// A random start spreads concurrent or leaked runs over the space.
	for _, x := range rand.Perm(235) {
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(16 + x), 0, 0}), 16)
		free := true
		for _, u := range used {
			if u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, errors.New("no free 10.X.0.0/16 on this host")
}

// prefixesIn extracts every IPv4 prefix or address (as a /32) mentioned in
// `ip` output. "default" routes are ignored: they overlap everything.
func prefixesIn(out string) []netip.Prefix {
	var ps []netip.Prefix
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() {
			ps = append(ps, p.Masked())
		} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
			ps = append(ps, netip.PrefixFrom(a, 32))
		}
	}
	return ps
}

// allocPodIP hands out the next address in the node's pod CIDR and adds it
// to the node's eth0.
func (n *network) allocPodIP(ctx context.Context, node string) (netip.Addr, error) {
	n.mu.Lock()
	nn, ok := n.nodes[node]
	if !ok {
		n.mu.Unlock()
		return netip.Addr{}, fmt.Errorf("unknown node %q", node)
	}
	if nn.nextPod >= 254 {
		n.mu.Unlock()
		return netip.Addr{}, fmt.Errorf("node %s: pod CIDR %s exhausted", node, nn.podCIDR)
	}
	nn.nextPod++
	ip := n.addr(1+nn.index, nn.nextPod)
	n.mu.Unlock()

	if _, err := ipCmd(ctx, "-n", nn.netns, "addr", "add", ip.String()+"/32", "dev", "eth0"); err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// releasePodIP removes a pod address from the node's eth0.
func (n *network) releasePodIP(ctx context.Context, node string, ip netip.Addr) error {
	nn, err := n.node(node)
	if err != nil {
		return err
	}
	_, err = ipCmd(ctx, "-n", nn.netns, "addr", "del", ip.String()+"/32", "dev", "eth0")
	return err
}

func (n *network) node(name string) (*nodeNet, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nn, ok := n.nodes[name]
	if !ok {
		return nil, fmt.Errorf("unknown node %q", name)
	}
	return nn, nil
}

// deleteNetns kills whatever still runs in a namespace (processes keep a
// namespace, and its veth, alive after `ip netns del`) and deletes it.
func deleteNetns(t testing.TB, name string) {
	ctx, cancel := cleanupCtx()
	defer cancel()
	killNetnsPids(ctx, name)
	if _, err := ipCmd(ctx, "netns", "del", name); err != nil {
		t.Errorf("e2e: teardown: %v", err)
	}
}

func killNetnsPids(ctx context.Context, netns string) {
	out, err := ipCmd(ctx, "netns", "pids", netns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sweepStale removes bridges and namespaces left by runs whose test process
// no longer exists (killed before its cleanups ran). Runs whose process is
// alive are left alone, so concurrent runs do not disturb each other.
func sweepStale(ctx context.Context, t testing.TB) {
	out, err := ipCmd(ctx, "-o", "link", "show", "type", "bridge")
	if err != nil {
		return
	}
	nsOut, _ := ipCmd(ctx, "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		_, after, ok := strings.Cut(line, "alias "+aliasPrefix+" ")
		if !ok {
			continue
		}
		var runID string
		var pid int
		if _, err := fmt.Sscanf(after, "run=%s pid=%d", &runID, &pid); err != nil {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // owner still running
		}
		for _, nsLine := range strings.Split(nsOut, "\n") {
			fields := strings.Fields(nsLine)
			if len(fields) > 0 && strings.HasPrefix(fields[0], "nx"+runID+"-") {
				killNetnsPids(ctx, fields[0])
				_, _ = ipCmd(ctx, "netns", "del", fields[0])
			}
		}
		_, _ = ipCmd(ctx, "link", "del", "nx"+runID+"br")
		t.Logf("e2e: removed network of stale run %s (pid %d gone)", runID, pid)
	}
}

// lockFile takes an exclusive flock on path, creating it if needed.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing releases the flock
}
