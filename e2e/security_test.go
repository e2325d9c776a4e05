package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"

// refusedCount reads nodexds_admission_refused_total{code="permission_denied"}
// from an agent's /metrics.
func (a *Agent) refusedCount(t testing.TB) float64 {
	t.Helper()
	return a.metric(t, `nodexds_admission_refused_total{code="permission_denied"}`)
}

// connectedClients reads nodexds_connected_clients from an agent's /metrics.
func (a *Agent) connectedClients(t testing.TB) float64 {
	t.Helper()
	return a.metric(t, "nodexds_connected_clients")
}

// metric reads one sample (name with labels, as exposed) from an agent's
// /metrics; 0 when it is not there.
func (a *Agent) metric(t testing.TB, series string) float64 {
	t.Helper()
	for _, line := range metricLines(t, a.IP) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// metricLines are the lines of the /metrics page of the agent at ip.
func metricLines(t testing.TB, ip string) []string {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort(ip, "18001") + "/metrics")
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	return strings.Split(string(b), "\n")
}

// TestAdmissionServesOnlyThisNodesPods (admission): an agent serves the pods
// of its own node, and refuses with PERMISSION_DENIED, before sending
// anything, a pod of another node and an address that is no pod at all.
func TestAdmissionServesOnlyThisNodesPods(t *testing.T) {
	const ns = "admit"
	e := StartEnv(t, ns)
	e.CreateService(t, ns, "be")
	be := Backend{Namespace: ns, Service: "be", Node: clientNode, N: 1}
	e.StartBackend(t, be)
	agentA := e.Agents[clientNode]

	t.Run("a pod on the node is served", func(t *testing.T) {
		clients := e.StartClients(t, ProbeOptions{Targets: []string{Target(ns, "be")}})
		for _, s := range []Stack{Go, JS} {
			clients[s].WaitServedBy(t, be.Name())
		}
	})

	t.Run("an address that is no pod is refused", func(t *testing.T) {
		// The test runs in the root namespace: it reaches the agent from the
		// bridge's address, which no Pod has.
		cc, err := grpc.NewClient(agentA.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "intruder"}, TypeUrl: listenerType,
			ResourceNames: []string{strings.TrimPrefix(Target(ns, "be"), "xds:///")},
		}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if resp != nil {
			t.Fatalf("an outsider got a response holding %d resources", len(resp.GetResources()))
		}
		bridge := e.BridgeIP().String()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), bridge) {
			t.Fatalf("stream ended with %v, want PERMISSION_DENIED naming %s", err, bridge)
		}
	})

	t.Run("a pod on another node is refused", func(t *testing.T) {
		before := agentA.refusedCount(t)
		// A client on node-b1 (a hostNetwork pod there) bootstrapped for
		// node-a1's agent.
		cmd := e.RunInNode("node-b1", e.Bins.Echo, "probe", "-interval", "100ms", "-timeout", "500ms", Target(ns, "be"))
		cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP_CONFIG="+e.Bootstrap(t, clientNode, "e2e/other-node"))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		deadline := time.Now().Add(20 * time.Second)
		for agentA.refusedCount(t) <= before {
			if time.Now().After(deadline) {
				t.Fatalf("node-a1's agent did not refuse node-b1's client; client output:\n%s", out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		log, err := os.ReadFile(agentA.proc.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if ip := e.NodeIP("node-b1").String(); !strings.Contains(string(log), ip+` is not a pod on node `+clientNode) {
			t.Errorf("node-a1's agent log does not name the refused peer %s", ip)
		}
		if strings.Contains(out.String(), be.Name()) {
			t.Errorf("the client of another node reached %s through node-a1's agent:\n%s", be.Name(), out.String())
		}
	})
}
