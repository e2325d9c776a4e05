package xds

import (
	"testing"

	"github.com/nodexds/nodexds/agent/resources"
)

// cdsOf returns the only client's CDS state, failing unless there is exactly
// one client.
func cdsOf(t *testing.T, s *testServer) (ClientStatus, TypeStatus) {
	t.Helper()
	cl := s.srv.Clients()
	if len(cl) != 1 {
		t.Fatalf("%d clients, want 1", len(cl))
	}
	for _, ts := range cl[0].Types {
		if ts.TypeURL == ClusterType {
			return cl[0], ts
		}
	}
	t.Fatalf("client has no CDS state: %+v", cl[0])
	return ClientStatus{}, TypeStatus{}
}

// states maps each subscribed CDS name to its state.
func states(ts TypeStatus) map[string]ResourceState {
	out := map[string]ResourceState{}
	for _, r := range ts.Resources {
		out[r.Name] = r.State
	}
	return out
}

func waitStates(t *testing.T, s *testServer, want map[string]ResourceState) TypeStatus {
	t.Helper()
	var ts TypeStatus
	waitFor(t, func() bool {
		_, ts = cdsOf(t, s)
		got := states(ts)
		if len(got) != len(want) {
			return false
		}
		for n, st := range want {
			if got[n] != st {
				return false
			}
		}
		return true
	})
	return ts
}

func TestClientsShowWhatEachClientAcceptedAndRejected(t *testing.T) {
	s := startServer(t, "be1", "be2")
	s.world.hold("nosuch") // resolved only after be1 was answered: two responses, deterministically
	c := dial(t, s)
	c.request("be1", "nosuch")
	c.expect("be1")
	s.world.release(ClusterType, "nosuch")
	c.expect("be1") // the full state, once nosuch is known not to exist
	ts := waitStates(t, s, map[string]ResourceState{"be1": Stale, "nosuch": NotSent})
	cl, _ := cdsOf(t, s)
	if cl.Node != "test" || cl.Peer == "" || cl.ConnectedSince.IsZero() {
		t.Errorf("client identity = %q from %q since %v, want node test, a peer and a time", cl.Node, cl.Peer, cl.ConnectedSince)
	}
	for _, r := range ts.Resources {
		if r.Name == "nosuch" && !r.Absent {
			t.Errorf("nosuch is not marked absent: %+v", r)
		}
		if r.Name == "be1" && (r.Version != c.last.VersionInfo || r.Resource == nil) {
			t.Errorf("be1 = %+v, want version %q and the resource", r, c.last.VersionInfo)
		}
	}

	c.request("be1", "nosuch") // ACK
	ts = waitStates(t, s, map[string]ResourceState{"be1": Synced, "nosuch": NotSent})
	if ts.ACKs != 1 || ts.LastACK == nil || ts.LastACK.Nonce != c.last.Nonce {
		t.Errorf("ACKs = %d, last %+v; want 1 of nonce %s", ts.ACKs, ts.LastACK, c.last.Nonce)
	}

	c.request("be1", "be2")
	c.expect("be1", "be2")
	// grpc-go's form: the response's valid resources are used, the named one rejected.
	rejected := `error parsing "type.googleapis.com/envoy.config.cluster.v3.Cluster" response: resource "be2": bad cluster`
	c.nack(rejected)
	ts = waitStates(t, s, map[string]ResourceState{"be1": Synced, "be2": Error})
	if ts.NACKs != 1 || ts.LastNACK == nil || ts.LastNACK.Error != rejected || ts.LastNACK.Version != c.last.VersionInfo {
		t.Errorf("NACKs = %d, last %+v; want 1 with the message and version %s", ts.NACKs, ts.LastNACK, c.last.VersionInfo)
	}
	for _, r := range ts.Resources {
		if r.Name == "be2" && (r.Error != rejected || r.ErrorAt.IsZero()) {
			t.Errorf("%s: error %q at %v, want the NACK's", r.Name, r.Error, r.ErrorAt)
		}
	}

	// A fixed resource is sent, then ACKed: synced again.
	fixed := resources.Cluster("be2", resources.DefaultLB)
	fixed.LbPolicy = 1
	s.world.update("be2", fixed)
	c.expect("be1", "be2")
	waitStates(t, s, map[string]ResourceState{"be1": Stale, "be2": Stale})
	c.request("be1", "be2")
	ts = waitStates(t, s, map[string]ResourceState{"be1": Synced, "be2": Synced})
	if ts.Responses != 4 || ts.ACKs != 2 || ts.NACKs != 1 || ts.Requests != 5 {
		t.Errorf("counts: %d requests, %d responses, %d ACKs, %d NACKs; want 5, 4, 2, 1", ts.Requests, ts.Responses, ts.ACKs, ts.NACKs)
	}
}

func TestClientsListsOnlyOpenStreamsSortedByNode(t *testing.T) {
	s := startServer(t, "be1")
	b, a := dial(t, s), dial(t, s)
	b.node, a.node = "b", "a"
	b.request("be1")
	b.expect("be1")
	a.request("be1")
	a.expect("be1")
	cl := s.srv.Clients()
	if len(cl) != 2 || cl[0].Node != "a" || cl[1].Node != "b" {
		t.Fatalf("clients = %+v, want a then b", cl)
	}
	if err := b.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(s.srv.Clients()) == 1 })
}

func TestAddingAnAbsentClusterIsAnsweredWithTheFullState(t *testing.T) {
	s := startServer(t, "be1")
	c := dial(t, s)
	c.request("be1")
	c.expect("be1")
	c.request("be1") // ACK
	c.expectNothing()
	// Nothing changes in what exists, but the client must hear that nosuch
	// does not exist now, not when its watch timer fires.
	c.request("be1", "nosuch")
	c.expect("be1")
}

func TestNACKNamingNoResourceRejectsTheWholeResponse(t *testing.T) {
	s := startServer(t, "be1", "be10")
	c := dial(t, s)
	c.request("be1", "be10")
	c.expect("be1", "be10")
	c.nack("top level errors: malformed response")
	waitStates(t, s, map[string]ResourceState{"be1": Error, "be10": Error})
}

func TestNACKNamesAreMatchedAsWholeNames(t *testing.T) {
	for _, tc := range []struct {
		msg, name string
		want      bool
	}{
		{`resource "be1": bad`, "be1", true},
		{`resource "be10": bad`, "be1", false},
		{`resource index 0: be1.ns.svc.cluster.local:8080: validation error`, "be1.ns.svc.cluster.local:8080", true},
		{`resource index 0: be1.ns.svc.cluster.local:80801: validation error`, "be1.ns.svc.cluster.local:8080", false},
		{`xbe1: bad`, "be1", false},
		{`be1`, "be1", true},
	} {
		if got := mentions(tc.msg, tc.name); got != tc.want {
			t.Errorf("mentions(%q, %q) = %v, want %v", tc.msg, tc.name, got, tc.want)
		}
	}
}
