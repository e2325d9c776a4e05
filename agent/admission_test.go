package agent_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// laggingPods is a pod index that learns of its one pod's IP some time after
// the test starts, as an informer does of a Pod that just started.
type laggingPods struct {
	ip      netip.Addr
	pods    []discovery.PodRef
	at      time.Time // when the index learns of ip; zero: never
	lookups int
}

func (p *laggingPods) Lookup(ip netip.Addr) []discovery.PodRef {
	p.lookups++
	if ip != p.ip || p.at.IsZero() || time.Now().Before(p.at) {
		return nil
	}
	return p.pods
}

// A peer the pod index does not know yet is re-checked for the grace, and
// admitted as soon as it is known; one still unknown when the grace is over is
// refused. On synctest's clock, so the verdicts and their times are exact,
// however loaded the machine.
func TestAdmissionGrace(t *testing.T) {
	const grace = 2 * time.Second
	const every = 100 * time.Millisecond // how often an unknown peer is re-checked
	peer := netip.MustParseAddr("10.0.0.7")
	pods := []discovery.PodRef{{Namespace: "b", Name: "p1"}, {Namespace: "a", Name: "p2"}, {Namespace: "b", Name: "p3"}}
	for _, tc := range []struct {
		name    string
		known   time.Duration // when the index learns of the peer; <0: never
		grace   time.Duration
		timeout time.Duration // the stream's context ends after this long; 0: never
		verdict codes.Code
		after   time.Duration // when Admit returns
	}{
		{name: "a known peer is admitted at once", known: 0, grace: grace, verdict: codes.OK, after: 0},
		{name: "a peer known during the grace is admitted at the next check", known: 450 * time.Millisecond, grace: grace, verdict: codes.OK, after: 500 * time.Millisecond},
		{name: "a peer known just before the grace ends is admitted", known: grace - 150*time.Millisecond, grace: grace, verdict: codes.OK, after: grace - every},
		{name: "a peer known only after the grace is refused", known: grace + 500*time.Millisecond, grace: grace, verdict: codes.PermissionDenied, after: grace - every},
		{name: "a peer never known is refused when the grace ends", known: -1, grace: grace, verdict: codes.PermissionDenied, after: grace - every},
		{name: "without a grace an unknown peer is refused at once", known: 450 * time.Millisecond, grace: 0, verdict: codes.PermissionDenied, after: 0},
		{name: "a stream that ends during the grace ends the wait", known: -1, grace: grace, timeout: 250 * time.Millisecond, verdict: codes.DeadlineExceeded, after: 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				idx := &laggingPods{ip: peer, pods: pods}
				start := time.Now()
				if tc.known >= 0 {
					idx.at = start.Add(tc.known)
				}
				ctx := t.Context()
				if tc.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.timeout)
					defer cancel()
				}
				admit := agent.NodePods{Pods: idx, Node: "a1", Grace: tc.grace}.Admit
				ns, err := admit(ctx, peer, &corev3.Node{Id: "client"})
				took := time.Since(start)

				if code := grpcstatus.Code(err); code != tc.verdict {
					t.Fatalf("Admit = %v, %v; want code %v", ns, err, tc.verdict)
				}
				if took != tc.after {
					t.Errorf("Admit returned after %v, want %v", took, tc.after)
				}
				if n := int(tc.after/every) + 1; idx.lookups != n {
					t.Errorf("the index was asked %d times in %v, want %d (every %v)", idx.lookups, took, n, every)
				}
				switch {
				case err == nil && !slices.Equal(ns, []string{"a", "b"}):
					t.Errorf("namespaces %q, want [a b]: each once, sorted", ns)
				case tc.verdict == codes.PermissionDenied && !strings.Contains(err.Error(), "is not a pod on node a1"):
					t.Errorf("refusal %q does not say the peer is not a pod of this node", err)
				}
			})
		})
	}
}

// The refusal names the peer, or says it has no address.
func TestAdmissionRefusalNamesThePeer(t *testing.T) {
	idx := &laggingPods{}
	admit := agent.NodePods{Pods: idx, Node: "a1"}.Admit
	for peer, want := range map[netip.Addr]string{
		netip.MustParseAddr("10.0.0.9"): "peer 10.0.0.9 is not a pod on node a1",
		{}:                              "a peer without an IP address is not a pod on node a1",
	} {
		_, err := admit(t.Context(), peer, &corev3.Node{})
		if grpcstatus.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
			t.Errorf("Admit(%v) = %v, want PermissionDenied saying %q", peer, err, want)
		}
	}
}

// A client that names another node is that node's pod or nothing: Foreign
// decides, at once, without the grace.
func TestAdmissionOfAnotherNodesClient(t *testing.T) {
	peer := netip.MustParseAddr("10.0.1.7")
	onNode := func(node string) *corev3.Node {
		return &corev3.Node{Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			xds.MetadataNodeName: structpb.NewStringValue(node),
		}}}
	}
	foreign := func(_ context.Context, ip netip.Addr, node string) ([]discovery.PodRef, error) {
		switch {
		case node == "down":
			return nil, errors.New("api unreachable")
		case node == "b2" && ip == peer:
			return []discovery.PodRef{{Namespace: "x", Name: "p"}}, nil
		}
		return nil, nil
	}
	for _, tc := range []struct {
		name    string
		foreign func(context.Context, netip.Addr, string) ([]discovery.PodRef, error)
		node    string
		verdict codes.Code
		ns      []string
	}{
		{name: "a pod of the node it names is admitted", foreign: foreign, node: "b2", verdict: codes.OK, ns: []string{"x"}},
		{name: "a peer that is no pod of the node it names is refused", foreign: foreign, node: "b3", verdict: codes.PermissionDenied},
		{name: "a peer that cannot be verified is asked to retry", foreign: foreign, node: "down", verdict: codes.Unavailable},
		{name: "without Foreign every client of another node is refused", node: "b2", verdict: codes.PermissionDenied},
		{name: "a client naming this node is looked up here", foreign: foreign, node: "a1", verdict: codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				admit := agent.NodePods{Pods: &laggingPods{}, Foreign: tc.foreign, Node: "a1", Grace: agent.DefaultAdmissionGrace}.Admit
				ns, err := admit(t.Context(), peer, onNode(tc.node))
				if code := grpcstatus.Code(err); code != tc.verdict || !slices.Equal(ns, tc.ns) {
					t.Fatalf("Admit = %q, %v; want %q, code %v", ns, err, tc.ns, tc.verdict)
				}
				if took, wantGrace := time.Since(start), tc.node == "a1"; (took > 0) != wantGrace {
					t.Errorf("Admit took %v; the grace applies only to clients of this node", took)
				}
			})
		})
	}
}
