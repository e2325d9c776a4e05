package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiServer is what StopAPIServer and StartAPIServer need to restart
// kube-apiserver exactly as Start launched it.
type apiServer struct {
	mu    sync.Mutex
	proc  *Process
	argv  []string // the full command line of the launch that became ready
	ready readyFunc
}

func (a *apiServer) current() *Process {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.proc
}

// StopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after 10 s), as in an
// outage of the control plane. etcd and the controller manager keep running;
// clients of the API server see connection refused until StartAPIServer.
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	p := c.apiserver.current()
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("e2e: stop kube-apiserver: %v", err)
	}
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the
// same flags: same address and port (URL does not change), certificates,
// tokens and etcd data. It returns once /readyz answers ok. The process is
// stopped with the cluster.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	if exited, _ := c.apiserver.current().Exited(); !exited {
		t.Fatal("e2e: StartAPIServer: kube-apiserver is running (call StopAPIServer first)")
	}
	argv, ready := c.apiserver.argv, c.apiserver.ready
	logPath := filepath.Join(c.logDir, binAPIServer+".log")
	const attempts = 5
	for attempt := 1; ; attempt++ {
		p, err := startProcess(binAPIServer, logPath, exec.Command(argv[0], argv[1:]...))
		if err != nil {
			t.Fatalf("e2e: %v", err)
		}
		c.apiserver.mu.Lock()
		c.apiserver.proc = p
		c.apiserver.mu.Unlock()
		err = waitFor(t.Context(), 90*time.Second, 200*time.Millisecond, p, ready)
		if err == nil {
			return
		}
		// The port must stay the same (every kubeconfig names it); if an
		// outgoing connection happens to hold it, wait and try again.
		if exited, _ := p.Exited(); exited && attempt < attempts &&
			strings.Contains(p.LogTail(50), "address already in use") {
			t.Logf("e2e: kube-apiserver's port is busy, retrying")
			time.Sleep(2 * time.Second)
			continue
		}
		t.Fatalf("e2e: kube-apiserver not ready after restart: %v\n%s", err, p.LogTail(40))
	}
}

// BinDir is the directory holding etcd, kube-apiserver,
// kube-controller-manager and kubectl.
func (c *Cluster) BinDir() string { return c.binDir }

// Kubectl returns an unstarted kubectl command (the version matching the API
// server, from BinDir) authenticated as the harness's system:masters user.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, binKubectl), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.adminKubeconfig)
	return cmd
}
