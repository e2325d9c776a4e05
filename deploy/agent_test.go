// Package deploy holds no code: its tests check what deploy/ ships against
// a real agent — the dashboard and alerts against the metrics it exports,
// and the Dockerfile's image built and run with podman.
package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// testVersion is stamped into the test binary, so nodexds_build_info can be
// checked against it.
const testVersion = "v0.0.0-deploytest"

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// agentBinary builds the static agent binary `make build` and the Dockerfile
// produce (CGO_ENABLED=0, -trimpath), once per test binary.
func agentBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nodexds-deploy-test-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "nodexds")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", binPath, "../cmd/nodexds")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/nodexds: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// freePort returns a loopback port nothing listens on right now (the agent
// binds it a moment later; other programs on this machine use fixed ones).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeCluster writes a file-source cluster: node-a, and Service
// default/be1 (port 8080) with one ready endpoint, backend, on node-a.
// extraAnnotations are added to the Service.
func writeCluster(t testing.TB, path, backend string, extraAnnotations map[string]string) {
	t.Helper()
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		t.Fatal(err)
	}
	var ann strings.Builder
	for k, v := range extraAnnotations {
		fmt.Fprintf(&ann, "    %s: %q\n", k, v)
	}
	doc := `apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/zone: zone-a
    topology.kubernetes.io/region: region-1
---
apiVersion: v1
kind: Service
metadata:
  name: be1
  namespace: default
` + annotationsBlock(ann.String()) + `spec:
  ports:
  - name: grpc
    port: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: be1-0
  namespace: default
  labels:
    kubernetes.io/service-name: be1
addressType: IPv4
ports:
- name: grpc
  port: ` + port + `
endpoints:
- addresses: ["` + host + `"]
  nodeName: node-a
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: be1-0
`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

func annotationsBlock(lines string) string {
	if lines == "" {
		return ""
	}
	return "  annotations:\n" + lines
}

// waitReady polls url (an agent's /readyz) until it answers 200.
func waitReady(t testing.TB, url string, exited <-chan struct{}, logs func() string) {
	t.Helper()
	if !readyOrExited(t, url, exited, logs) {
		t.Fatalf("the agent exited before %s answered 200:\n%s", url, logs())
	}
}

// readyOrExited polls url (an agent's /readyz) until it answers 200 (true)
// or the agent exits (false); it fails the test after 60 s.
func readyOrExited(t testing.TB, url string, exited <-chan struct{}, logs func() string) bool {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-exited:
			return false
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 200 after 60s (last error %v):\n%s", url, err, logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// portTaken says an agent exited because a port freePort picked was taken
// before it bound it: the kernel hands freed ports out again, and tests of
// other packages running beside these open thousands. Such a start is
// retried on other ports.
func portTaken(logs string) bool { return strings.Contains(logs, "address already in use") }

// httpGet returns the body of a 200 answer.
func httpGet(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}

// adsStream is a raw ADS stream, the way a client's first request looks.
type adsStream struct {
	stream grpc.BidiStreamingClient[discoverypb.DiscoveryRequest, discoverypb.DiscoveryResponse]
}

func openADS(t testing.TB, addr string) *adsStream {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsStream{stream: s}
}

// request sends a request and waits (bounded) for the answer.
func (a *adsStream) request(t testing.TB, req *discoverypb.DiscoveryRequest) *discoverypb.DiscoveryResponse {
	t.Helper()
	if req.Node == nil {
		req.Node = &corepb.Node{Id: "deploytest/" + t.Name()}
	}
	if err := a.stream.Send(req); err != nil {
		t.Fatalf("ADS send: %v", err)
	}
	type result struct {
		resp *discoverypb.DiscoveryResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := a.stream.Recv()
		ch <- result{r, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("ADS recv: %v", r.err)
		}
		return r.resp
	case <-time.After(20 * time.Second):
		t.Fatalf("no ADS answer to %s %v within 20s", req.TypeUrl, req.ResourceNames)
		return nil
	}
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func itoa(n int) string { return strconv.Itoa(n) }
