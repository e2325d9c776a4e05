package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/nodexds/nodexds/agent/admin"
	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/identity"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/echo"
	"github.com/nodexds/nodexds/internal/poll"
	"github.com/nodexds/nodexds/internal/spiffe"
)

// Zero trust, in process: real grpc-go xDS-enabled servers (gRFC A36) and
// xDS clients with xDS credentials (A29), their certificates written by a
// test CA as csi-driver-spiffe writes them, and the agent's Listeners,
// clusters and RBAC (A41) in between.

// identities issues workload certificates into directories of the test.
type identities struct {
	t  testing.TB
	ca *spiffe.CA
}

func newIdentities(t testing.TB) *identities {
	ca, err := spiffe.NewCA(trust.DefaultTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	return &identities{t: t, ca: ca}
}

// certs issues ns/sa a certificate and returns its directory.
func (id *identities) certs(ns, sa string) string {
	dir := filepath.Join(id.t.TempDir(), ns+"-"+sa)
	if err := id.ca.Issue(dir, ns, sa, 0); err != nil {
		id.t.Fatal(err)
	}
	return dir
}

// startXDSBackend runs an xDS-enabled echo server "on" node a1, with the
// certificates of dir ("" for none in its bootstrap), and lists it, ready,
// in svc. It serves once the agent has given it a Listener.
func (w *world) startXDSBackend(a *testAgent, svc *service, name, certs string) *backend {
	w.t.Helper()
	return w.startXDSBackendOn(a, svc, name, certs, "127.0.0.1:0")
}

// startXDSBackendOn is startXDSBackend listening on listen.
func (w *world) startXDSBackendOn(a *testAgent, svc *service, name, certs, listen string, mut ...func(*bootstrap.Options)) *backend {
	w.t.Helper()
	o := bootstrap.Options{Server: a.Addr, NodeID: "test/server/" + name, Certs: certs, CertRefresh: time.Second}
	for _, m := range mut {
		m(&o)
	}
	bs, err := bootstrap.JSON(o)
	if err != nil {
		w.t.Fatal(err)
	}
	srv, err := xds.NewGRPCServer(
		serverCreds(),
		xds.BootstrapContentsForTesting(bs),
	)
	if err != nil {
		w.t.Fatal(err)
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		w.t.Fatal(err)
	}
	b := &backend{Name: name, Node: "a1", Ready: true, srv: echo.ServeOn(srv, lis, name), addr: lis.Addr().String()}
	w.t.Cleanup(b.srv.Stop)
	w.mu.Lock()
	svc.Backends = append(svc.Backends, b)
	w.mu.Unlock()
	w.write()
	return b
}

func serverCreds() grpc.ServerOption {
	c, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		panic(err)
	}
	return grpc.Creds(c)
}

// dialSecure opens an xDS channel with xDS credentials, as a pod whose
// certificates are in dir ("" for a bootstrap without any).
func dialSecure(t testing.TB, a *testAgent, target, certs string) *grpc.ClientConn {
	t.Helper()
	bs, err := bootstrap.JSON(bootstrap.Options{Server: a.Addr, NodeID: fmt.Sprintf("test/%s/%d", t.Name(), dials.Add(1)), Zone: "a", Region: "r1", Certs: certs, CertRefresh: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(r), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func withHandover(d time.Duration) func(*serve.Options) {
	return func(o *serve.Options) { o.Handover = d }
}

// cartServer runs shop/cart with annotations and one xDS-enabled server
// whose certificate is of service account sa of shop.
func cartServer(t *testing.T, sa string, annotations map[string]string) (*identities, *world, *service, *testAgent) {
	id := newIdentities(t)
	w := newWorld(t)
	cart := w.addService("shop", "cart", func(s *service) { s.Annotations = annotations })
	a := startAgent(t, w)
	w.startXDSBackend(a, cart, sa, id.certs("shop", sa))
	return id, w, cart, a
}

func TestStrictServiceAuthorizesCallersByIdentity(t *testing.T) {
	id, w, cart, a := cartServer(t, "cart", map[string]string{trust.AnnotationMTLS: "strict", trust.AnnotationAllowFrom: "web/frontend"})
	frontend := dialSecure(t, a, "cart.shop:8080", id.certs("web", "frontend"))
	eventually(t, frontend, "cart")
	other := dialSecure(t, a, "cart.shop:8080", id.certs("web", "other"))
	eventually(t, other, "ERR PermissionDenied")
	// A client whose bootstrap has no certificates is sent plaintext
	// settings, which the server's TLS chain does not accept.
	plain := dialSecure(t, a, "cart.shop:8080", "")
	eventually(t, plain, "ERR Unavailable")

	// Allowed now: the server's new Listener takes it, no restart.
	cart.Annotations[trust.AnnotationAllowFrom] = "web/*"
	w.write()
	eventually(t, other, "cart")
	eventually(t, frontend, "cart")
}

func TestClientRefusesAServerOutsideServerIdentities(t *testing.T) {
	// Its certificate is of another service account of the namespace.
	id, w, cart, a := cartServer(t, "impostor", map[string]string{trust.AnnotationMTLS: "strict", trust.AnnotationServerIdentities: "cart"})
	frontend := dialSecure(t, a, "cart.shop:8080", id.certs("web", "frontend"))
	eventually(t, frontend, "ERR Unavailable")

	// The annotation widened to it, the same server is accepted.
	cart.Annotations[trust.AnnotationServerIdentities] = "cart, impostor"
	w.write()
	eventually(t, frontend, "impostor")
}

// TestMTLSRolloutLosesNoRPC moves a Service disabled → permissive → strict
// → disabled while a client calls it without pause: no RPC may fail, and
// each step must really change the wire (a client without certificates
// tells: it reaches the server only while it is plaintext). The client's
// node and the server's have agents of their own, and one hears of each
// change later than the other (it polls its source 400 ms apart), as agents
// of two nodes do: the servers' handover is what keeps their connections
// from changing before their clients', whichever agent is first.
func TestMTLSRolloutLosesNoRPC(t *testing.T) {
	t.Run("the client's agent late", func(t *testing.T) { testRollout(t, 2*time.Second, false) })
	t.Run("the server's agent late", func(t *testing.T) { testRollout(t, 2*time.Second, true) })
}

func testRollout(t *testing.T, handover time.Duration, serverLate bool) (int64, int64) {
	id := newIdentities(t)
	w := newWorld(t)
	cart := w.addService("shop", "cart", func(s *service) { s.Annotations = map[string]string{} })
	late := func(o *serve.Options) { o.Source.(*discovery.FileSource).Poll = 400 * time.Millisecond }
	serverOpts := []func(*serve.Options){withHandover(handover)}
	clientOpts := []func(*serve.Options){withHandover(handover), func(o *serve.Options) { o.NodeName = "a2" }}
	if serverLate {
		serverOpts = append(serverOpts, late)
	} else {
		clientOpts = append(clientOpts, late)
	}
	server := startAgent(t, w, serverOpts...)
	a := startAgent(t, w, clientOpts...)
	w.startXDSBackend(server, cart, "cart", id.certs("shop", "cart"))
	frontend := dialSecure(t, a, "cart.shop:8080", id.certs("web", "frontend"))
	eventually(t, frontend, "cart")

	var sent, failed atomic.Int64
	var firstErr atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			sent.Add(1)
			if got := hit(frontend); got != "cart" {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, got)
			}
		}
	}()
	step := func(mode string, plaintextWorks bool) {
		t.Helper()
		cart.Annotations[trust.AnnotationMTLS] = mode
		w.write()
		plain := dialSecure(t, a, "cart.shop:8080", "")
		if plaintextWorks {
			eventually(t, plain, "cart")
		} else {
			eventually(t, plain, "ERR Unavailable")
		}
	}
	step("permissive", false) // once the servers have handed over
	step("strict", false)
	step("disabled", true)
	stop()
	<-done
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d RPCs failed during the rollout (first: %v)", f, sent.Load(), firstErr.Load())
	}
	if sent.Load() < 50 {
		t.Fatalf("only %d RPCs were sent: the rollout was not under load", sent.Load())
	}
	t.Logf("%d RPCs, %d failed", sent.Load(), failed.Load())
	return sent.Load(), failed.Load()
}

// TestAServerGetsOnlyItsOwnListener: a server's Listener is built for the
// stream's peer, so a server that asks for another address's Listener (here
// it listens on 127.0.0.2 but reaches the agent from 127.0.0.1, as a pod
// naming another pod's IP would) gets none, and serves nothing; a server
// that names its own address gets its own.
func TestAServerGetsOnlyItsOwnListener(t *testing.T) {
	w := newWorld(t)
	forged := w.addService("shop", "forged")
	foreign := w.addService("shop", "foreign")
	own := w.addService("shop", "own")
	a := startAgent(t, w)
	w.startXDSBackendOn(a, forged, "forged", "", "127.0.0.2:0")
	// A server that says it runs on node b1: this agent (a1's) may be its
	// xDS fallback, but only b1's agent knows its pod.
	w.startXDSBackendOn(a, foreign, "foreign", "", "127.0.0.1:0", func(o *bootstrap.Options) { o.NodeName = "b1" })
	w.startXDSBackendOn(a, own, "own", "", "127.0.0.1:0")
	eventually(t, dialSecure(t, a, "own.shop:8080", ""), "own")
	eventually(t, dialSecure(t, a, "forged.shop:8080", ""), "ERR Unavailable")
	eventually(t, dialSecure(t, a, "foreign.shop:8080", ""), "ERR Unavailable")
	for _, reason := range []string{"other_address", "other_node"} {
		if n := testutil.ToFloat64(a.Metrics.ServersUnplaced.WithLabelValues(reason)); n < 1 {
			t.Errorf("nodexds_server_listeners_unplaced_total{reason=%s} = %v, want its server counted", reason, n)
		}
	}
	if n := testutil.ToFloat64(a.Metrics.ServerListeners.WithLabelValues("plaintext")); n != 1 {
		t.Errorf("nodexds_server_listeners{transport=plaintext} = %v, want 1 (the own server's)", n)
	}
}

// TestDebugShowsPoliciesAndServers: /debug/services says a Service's mode
// and identities, /debug/clients marks the xDS-enabled server and what its
// Listener says.
func TestDebugShowsPoliciesAndServers(t *testing.T) {
	id := newIdentities(t)
	w := newWorld(t)
	cart := w.addService("shop", "cart", func(s *service) {
		s.Annotations = map[string]string{trust.AnnotationMTLS: "strict", trust.AnnotationAllowFrom: "web/frontend, ops/*"}
	})
	var debug string
	a := startAgent(t, w, withDebug(t, &debug))
	w.startXDSBackend(a, cart, "cart", id.certs("shop", "cart"))
	eventually(t, dialSecure(t, a, "cart.shop:8080", id.certs("web", "frontend")), "cart")

	var services admin.ServicesDebug
	getJSON(t, debug, "/debug/services?service=shop/cart", &services)
	if len(services.Services) != 1 {
		t.Fatalf("%d service ports, want 1", len(services.Services))
	}
	sv := services.Services[0]
	if sv.MTLS != "strict" || !slices.Equal(sv.AllowFrom, []string{"ops/*", "web/frontend"}) ||
		!slices.Equal(sv.ServerIdentities, []string{"spiffe://cluster.local/ns/shop/sa/*"}) {
		t.Errorf("mtls %q, allowFrom %v, serverIdentities %v", sv.MTLS, sv.AllowFrom, sv.ServerIdentities)
	}

	var clients admin.ClientsDebug
	getJSON(t, debug, "/debug/clients", &clients)
	servers := 0
	for _, c := range clients.Clients {
		if !c.XDSServer {
			continue
		}
		servers++
		want := admin.ServerListenerDebug{
			Transport: "tls", RequireClientCert: true,
			AllowFrom: [][]string{{"spiffe://cluster.local/ns/ops/sa/*", "spiffe://cluster.local/ns/web/sa/frontend"}},
		}
		if len(c.ServerListeners) != 1 {
			t.Fatalf("server %s holds %d listeners, want 1", c.Node, len(c.ServerListeners))
		}
		got := c.ServerListeners[0]
		want.Name = got.Name
		if !names.IsServer(got.Name) || !reflect.DeepEqual(got, want) {
			t.Errorf("server listener %+v, want %+v", got, want)
		}
	}
	if servers != 1 {
		t.Errorf("%d clients marked xdsServer, want 1", servers)
	}
}

// TestNamespaceAnnotationsAreTheServicesDefaults: a Namespace's annotations
// set the policy of its Services that say nothing, and a change to them
// reaches clients and servers; a Service's own annotation wins.
func TestNamespaceAnnotationsAreTheServicesDefaults(t *testing.T) {
	id := newIdentities(t)
	w := newWorld(t)
	w.namespaces = map[string]map[string]string{"shop": {trust.AnnotationMTLS: "strict", trust.AnnotationAllowFrom: "web/frontend"}}
	cart := w.addService("shop", "cart", func(s *service) { s.Annotations = map[string]string{} })
	a := startAgent(t, w, withHandover(500*time.Millisecond))
	w.startXDSBackend(a, cart, "cart", id.certs("shop", "cart"))
	other := dialSecure(t, a, "cart.shop:8080", id.certs("web", "other"))
	eventually(t, dialSecure(t, a, "cart.shop:8080", id.certs("web", "frontend")), "cart")
	eventually(t, other, "ERR PermissionDenied")

	w.mu.Lock()
	w.namespaces["shop"][trust.AnnotationAllowFrom] = "web/*"
	w.mu.Unlock()
	w.write()
	eventually(t, other, "cart")

	cart.Annotations[trust.AnnotationMTLS] = "disabled"
	w.write()
	eventually(t, dialSecure(t, a, "cart.shop:8080", ""), "cart")
}

// TestRotatedCertificatesAreUsedWithoutAFailedRPC: the server's files are
// re-issued while a client calls it; the server's file watcher picks them up
// (bootstrap --cert-refresh 1s), so a new connection is handed the new
// certificate, and no RPC fails on the way.
func TestRotatedCertificatesAreUsedWithoutAFailedRPC(t *testing.T) {
	id := newIdentities(t)
	w := newWorld(t)
	cart := w.addService("shop", "cart", func(s *service) { s.Annotations = map[string]string{trust.AnnotationMTLS: "strict"} })
	a := startAgent(t, w)
	serverCerts, clientCerts := id.certs("shop", "cart"), id.certs("web", "frontend")
	be := w.startXDSBackend(a, cart, "cart", serverCerts)
	frontend := dialSecure(t, a, "cart.shop:8080", clientCerts)
	eventually(t, frontend, "cart")

	var sent, failed atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			sent.Add(1)
			if hit(frontend) != "cart" {
				failed.Add(1)
			}
		}
	}()
	before := servedSerial(t, be.addr, clientCerts)
	if err := id.ca.Issue(serverCerts, "shop", "cart", 0); err != nil {
		t.Fatal(err)
	}
	if err := id.ca.Issue(clientCerts, "web", "frontend", 0); err != nil {
		t.Fatal(err)
	}
	cert, _, _, err := spiffe.Read(serverCerts)
	if err != nil {
		t.Fatal(err)
	}
	want := leafSerial(t, cert)
	if want == before {
		t.Fatal("the re-issued certificate has the old serial")
	}
	deadline := time.Now().Add(poll.Timeout)
	for got := servedSerial(t, be.addr, clientCerts); got != want; got = servedSerial(t, be.addr, clientCerts) {
		if time.Now().After(deadline) {
			t.Fatalf("a new connection still gets serial %s, want the new %s", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	<-done
	if failed.Load() > 0 {
		t.Errorf("%d of %d RPCs failed across the rotation", failed.Load(), sent.Load())
	}
}

// servedSerial opens a new TLS connection to a server, presenting the
// certificate of dir, and returns the serial of the server's leaf.
func servedSerial(t *testing.T, addr, dir string) string {
	t.Helper()
	certPEM, keyPEM, _, err := spiffe.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The identity is a URI SAN, not a host name: the serial is all this
	// reads, so the chain is not verified here (gRPC does that).
	conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // see above
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func leafSerial(t *testing.T, certPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// TestStrictServersAreHealthCheckedOverMTLS: an agent with a certificate of
// its own checks the health of a strict Service's servers over mTLS, and
// their Listeners let its identity call the health service, and nothing
// else: a NOT_SERVING server is avoided as with plaintext Services.
func TestStrictServersAreHealthCheckedOverMTLS(t *testing.T) {
	id := newIdentities(t)
	self, err := identity.Open(id.certs("nodexds-system", "nodexds"))
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	cart := w.addService("shop", "cart", func(s *service) {
		s.Annotations = map[string]string{trust.AnnotationMTLS: "strict", trust.AnnotationAllowFrom: "web/frontend"}
	})
	checks := fastHealth
	checks.TLS = self.ClientConfig
	a := startAgent(t, w, withHealth(t, checks), func(o *serve.Options) { o.HealthIdentity = self.ID() })
	one := w.startXDSBackend(a, cart, "cart", id.certs("shop", "cart"))
	w.startXDSBackend(a, cart, "cart-2", id.certs("shop", "cart"))
	frontend := dialSecure(t, a, "cart.shop:8080", id.certs("web", "frontend"))
	eventually(t, frontend, "cart", "cart-2")

	one.srv.Health.SetServingStatus("", notServing)
	eventually(t, frontend, "cart-2")
	one.srv.Health.SetServingStatus("", serving)
	eventually(t, frontend, "cart", "cart-2")

	// What the server's RBAC lets the agent's identity do, asked directly.
	agentTLS, err := self.ClientConfig(trust.SpellMatches([]trust.Match{{Value: spiffe.ID(trust.DefaultTrustDomain, "shop", "cart")}}))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(one.addr, grpc.WithTransportCredentials(credentials.NewTLS(agentTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), poll.Timeout)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("the agent's health check: %v, want it allowed", err)
	}
	if _, err := echo.Hello(ctx, cc); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the agent's identity calling the service: %v, want PermissionDenied", err)
	}
}

// TestAnUnplacedServerIsCountedOnce: a server whose pod no Service's
// endpoints list (the agent admits any peer, so it cannot know the pod
// otherwise) gets no Listener and is counted once, not again at every
// rebuild while it waits; listed again, it is served.
func TestAnUnplacedServerIsCountedOnce(t *testing.T) {
	w := newWorld(t)
	cart := w.addService("shop", "cart")
	a := startAgent(t, w)
	b := w.startXDSBackend(a, cart, "cart", "")
	cc := dialSecure(t, a, "cart.shop:8080", "")
	eventually(t, cc, "cart")
	unplaced := func() float64 { return testutil.ToFloat64(a.Metrics.ServersUnplaced.WithLabelValues("unknown_pod")) }
	// It may have been counted already, if it asked before the agent read
	// the file that lists it.
	before := unplaced()

	w.remove(cart, b)
	w.write()
	eventually(t, cc, "ERR Unavailable") // its Service has no endpoint
	waitFor(t, "the server counted unplaced", func() bool { return unplaced() > before })
	// Other Services' changes rebuild the server listeners; each rebuild
	// is seen done when the Service's client is served.
	for i := range 3 {
		other := w.addService("shop", fmt.Sprintf("other-%d", i))
		w.startBackend(other, fmt.Sprintf("other-%d", i), "a1")
		w.write()
		eventually(t, dial(t, a, fmt.Sprintf("other-%d.shop:8080", i)), fmt.Sprintf("other-%d", i))
	}
	if n := unplaced(); n != before+1 {
		t.Errorf("nodexds_server_listeners_unplaced_total{reason=unknown_pod} = %v after three rebuilds, want %v", n, before+1)
	}
}
