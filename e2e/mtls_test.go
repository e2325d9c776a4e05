package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodexds/nodexds/e2e/cluster"
	"github.com/nodexds/nodexds/internal/echo"
	"github.com/nodexds/nodexds/internal/spiffe"
)

// Workload identities for the zero-trust scenarios (zerotrust_test.go):
// certificates of the trust domain's test CA, written into each pod's
// directory as cert-manager's csi-driver-spiffe writes them (see
// internal/spiffe), and bootstraps that name them.

// trustDomain is the agents' (nodexds serve --trust-domain's default).
const trustDomain = "cluster.local"

// certRefresh is how often every pod's gRPC re-reads its certificate files
// (nodexds bootstrap --cert-refresh): the smallest the bootstrap allows, so
// that a rotation is seen within seconds.
const certRefresh = time.Second

// mtlsHandover is the agents' --mtls-handover in the zero-trust scenarios:
// the servers of a Service moving between plaintext and TLS change this
// long after their clients (the default, 10 s, would only make the
// scenarios longer; the two agents involved see a change within a second).
const mtlsHandover = 3 * time.Second

// mtlsAgentArgs are the agents' flags in the zero-trust scenarios: the ADS
// port on every address of the node (as in
// TestConsumerRouteMovesOnlyItsNamespacesClients), so that a pod reaches its
// agent from its own IP — the harness's pods share their node's network
// namespace, so they would otherwise come from the node's IP, and an agent
// knows which pod an xDS-enabled server is, and which namespace a client is
// in, only by that IP — and a short handover.
var mtlsAgentArgs = []string{"--xds-listen=:18000", "--mtls-handover=" + mtlsHandover.String()}

// identities is an Env's trust domain: its CA, and the identity each
// certificate directory holds.
type identities struct {
	ca   *spiffe.CA
	dirs map[string][2]string // directory → namespace, service account
}

func (e *Env) identities(t testing.TB) *identities {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ids == nil {
		ca, err := spiffe.NewCA(trustDomain)
		if err != nil {
			t.Fatalf("e2e: %v", err)
		}
		e.ids = &identities{ca: ca, dirs: map[string][2]string{}}
	}
	return e.ids
}

// podDir is the directory of pod ns/name's files (its certificate volume
// and bootstrap), kept with the logs.
func (e *Env) podDir(ns, name string) string {
	return filepath.Join(e.LogDir(), "pods", ns, name)
}

// IssueCerts creates ServiceAccount ns/sa (unless it exists) and writes a
// certificate of its identity, spiffe://cluster.local/ns/<ns>/sa/<sa>, into
// pod ns/pod's certificate directory, which it returns: what csi-driver-
// spiffe does for a pod of that service account.
func (e *Env) IssueCerts(t testing.TB, ns, sa, pod string) string {
	t.Helper()
	e.CreateServiceAccount(t, ns, sa)
	ids := e.identities(t)
	dir := filepath.Join(e.podDir(ns, pod), "spiffe")
	if err := ids.ca.Issue(dir, ns, sa, 0); err != nil {
		t.Fatalf("e2e: issue %s/%s into %s: %v", ns, sa, dir, err)
	}
	e.mu.Lock()
	ids.dirs[dir] = [2]string{ns, sa}
	e.mu.Unlock()
	return dir
}

// RotateCerts writes a new certificate (new key and serial, same identity)
// into a directory IssueCerts wrote, as csi-driver-spiffe renews it, and
// returns the new certificate's serial.
func (e *Env) RotateCerts(t testing.TB, dir string) *big.Int {
	t.Helper()
	ids := e.identities(t)
	e.mu.Lock()
	id, ok := ids.dirs[dir]
	e.mu.Unlock()
	if !ok {
		t.Fatalf("e2e: RotateCerts: %s was not written by IssueCerts", dir)
	}
	if err := ids.ca.Issue(dir, id[0], id[1], 0); err != nil {
		t.Fatalf("e2e: rotate %s: %v", dir, err)
	}
	return certSerial(t, dir)
}

// certSerial is the serial of the certificate in dir's tls.crt.
func certSerial(t testing.TB, dir string) *big.Int {
	t.Helper()
	certPEM, _, _, err := spiffe.Read(dir)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatalf("e2e: %s/tls.crt holds no PEM block", dir)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatalf("e2e: %s/tls.crt: %v", dir, err)
	}
	return c.SerialNumber
}

// nodeTopology returns a node's zone and region.
func nodeTopology(node string) (zone, region string) {
	for _, n := range clusterNodes {
		if n.Name == node {
			return n.Zone, n.Region
		}
	}
	return "", ""
}

// xdsServerArgv is the process of an XDS backend: its init step writes its
// bootstrap with `nodexds bootstrap` — run in the pod, so the node name and
// namespace come from its NODE_NAME and POD_NAMESPACE as in a real pod — and
// the server then starts with GRPC_XDS_BOOTSTRAP naming it.
//
// The bootstrap's server is the agent's ADS port at the pod's own IP (the
// agents listen on every address: mtlsAgentArgs), so the stream comes from
// the pod's IP, which is how the agent tells which pod asks for a Listener.
// With Backend.Agent set to another node, it is that node's agent at its
// node IP, asked as a fallback server would be.
func (e *Env) xdsServerArgv(t testing.TB, b Backend) []string {
	t.Helper()
	if !slices.Contains(e.agentArgs, "--xds-listen=:18000") {
		t.Fatalf("e2e: an XDS backend reaches its agent at its own pod IP: start the Env with EnvOptions{AgentArgs: mtlsAgentArgs}")
	}
	server := "{{IP}}:18000"
	if b.Agent != "" && b.Agent != b.Node {
		server = e.Agents[b.Agent].XDSAddr()
	}
	zone, region := nodeTopology(b.Node)
	file := filepath.Join(e.podDir(b.Namespace, b.Name()), "bootstrap.json")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	initStep := []string{e.Bins.Nodexds, "bootstrap", "-server", server, "-zone", zone, "-region", region, "-o", file}
	if b.Certs != "" {
		initStep = append(initStep, "-certs", b.Certs, "-cert-refresh", certRefresh.String())
	}
	listen := "{{IP}}:" + strconv.Itoa(backendPort)
	var serve []string
	switch b.Stack {
	case Go, "":
		serve = []string{e.Bins.Echo, "serve", "-xds", "-listen", listen, "-name", "{{NAME}}"}
	// The other stacks' echo servers (jsclient/server.js, pyclient/server.py,
	// also reachable as `probe.js serve` and `probe.py serve`) take the same
	// flags; this is all it takes to run them as XDS backends.
	case JS:
		serve = []string{e.Bins.Node, e.Bins.JSProbe, "serve", "--xds", "--listen", listen, "--name", "{{NAME}}"}
	case CCore:
		if e.Bins.CCoreMissing != "" {
			t.Fatalf("e2e: the C-core stack cannot run here: %s", e.Bins.CCoreMissing)
		}
		serve = []string{e.Bins.Python, e.Bins.PyProbe, "serve", "--xds", "--listen", listen, "--name", "{{NAME}}"}
	default:
		t.Fatalf("e2e: no xDS-enabled server of stack %s", b.Stack)
	}
	// StartPod replaces {{IP}} and {{NAME}} in every argument, the script
	// included.
	script := shellJoin(initStep) + " && GRPC_XDS_BOOTSTRAP=" + shellQuote(file) + " exec " + shellJoin(serve)
	return []string{"sh", "-c", script}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// ClientPod starts a pod with no process of its own, of service account
// ns/sa, on node, with a certificate of that identity unless certs is false,
// and returns the options of probes run as its processes: they dial the
// agent at the pod's IP (so the agent sees the pod, as for any pod of the
// node), with xDS credentials.
func (e *Env) ClientPod(t testing.TB, ns, sa, node string, certs bool) ProbeOptions {
	t.Helper()
	name := fmt.Sprintf("%s-%s", sa, strings.TrimPrefix(node, "node-"))
	e.CreateServiceAccount(t, ns, sa)
	o := ProbeOptions{Name: sa, Node: node, XDSCreds: true}
	if certs {
		o.Certs = e.IssueCerts(t, ns, sa, name)
	}
	p := e.StartPod(t, cluster.PodSpec{Namespace: ns, Name: name, Node: node, ServiceAccount: sa})
	o.Server = net.JoinHostPort(p.IP.String(), "18000")
	return o
}

// dialServerLeaf opens a TLS connection to addr (a server pod's port, which
// the test's network namespace reaches across the bridge) as a client
// presenting the certificate in clientCerts, verifies the server's chain
// against the trust domain's root and its SPIFFE ID against want, and
// returns the server's leaf certificate.
func dialServerLeaf(addr, clientCerts, want string) (*x509.Certificate, error) {
	certPEM, keyPEM, caPEM, err := spiffe.Read(clientCerts)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no root in ca.crt")
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{"h2"},
		// The SVID has no DNS name: the chain and the URI SAN are verified
		// below, as gRPC's xDS credentials do.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
				return fmt.Errorf("server identity %v, want %s", leaf.URIs, want)
			}
			return nil
		},
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// certSpy is an endpoint of a Service played by the test itself: a gRPC
// echo server with plain TLS credentials (not an xDS-enabled server: it
// needs no Listener, and requires and verifies a client certificate of the
// trust domain), listening on a pod's IP inside the pod's node, that records
// the serial of the certificate the client presents on each new connection.
// It ends every connection after about a second (MaxConnectionAge: GOAWAY,
// the RPCs in flight finish), so its clients keep opening new ones: how a
// test sees which certificate a client uses now.
type certSpy struct {
	mu    sync.Mutex
	seen  []spyConn
	srv   *echo.Server
	Pod   *cluster.Pod
	Name  string
	certs string
}

type spyConn struct {
	at     time.Time
	serial *big.Int
}

// StartCertSpy starts a spy pod named name in ns, labelled app=<service>,
// on node, running as service account ns/sa with a certificate of that
// identity; it is Ready once the test listens on its IP.
func (e *Env) StartCertSpy(t testing.TB, ns, service, name, sa, node string) *certSpy {
	t.Helper()
	defer t.Cleanup(e.stopProbes) // as StartBackend: its clients stop first
	s := &certSpy{Name: name, certs: e.IssueCerts(t, ns, sa, name)}
	s.Pod = e.StartPod(t, cluster.PodSpec{
		Namespace: ns, Name: name, Node: node, ServiceAccount: sa,
		Labels:   map[string]string{"app": service},
		Ports:    []corev1.ContainerPort{{Name: "grpc", ContainerPort: backendPort}},
		NotReady: true,
	})
	certPEM, keyPEM, caPEM, err := spiffe.Read(s.certs)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				s.mu.Lock()
				s.seen = append(s.seen, spyConn{at: time.Now(), serial: cs.PeerCertificates[0].SerialNumber})
				s.mu.Unlock()
			}
			return nil
		},
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.KeepaliveParams(keepalive.ServerParameters{
		MaxConnectionAge: time.Second, MaxConnectionAgeGrace: 5 * time.Second,
	}))
	var lis net.Listener
	addr := net.JoinHostPort(s.Pod.IP.String(), strconv.Itoa(backendPort))
	if err := inNetns(e.NodeNetns(node), func() (err error) {
		lis, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("e2e: spy %s: listen on %s in %s: %v", name, addr, node, err)
	}
	s.srv = echo.ServeOn(srv, lis, name)
	t.Cleanup(s.srv.Stop)
	e.SetPodReady(t, s.Pod, true)
	return s
}

// WaitClientSerial waits until a connection opened after since presented
// the certificate whose serial is want, and returns when that was; it fails
// the test if none did within timeout of since (of now, if since is zero).
func (s *certSpy) WaitClientSerial(t testing.TB, since time.Time, want *big.Int, timeout time.Duration) time.Time {
	t.Helper()
	deadline := since.Add(timeout)
	if since.IsZero() {
		deadline = time.Now().Add(timeout)
	}
	for ; ; time.Sleep(50 * time.Millisecond) {
		s.mu.Lock()
		var others []string
		for _, c := range s.seen {
			if !c.at.After(since) {
				continue
			}
			if c.serial.Cmp(want) == 0 {
				s.mu.Unlock()
				return c.at
			}
			others = append(others, c.serial.Text(16))
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new connection presented client certificate %x within %s; %d connections did, with serials %v",
				s.Name, want, timeout, len(others), others)
		}
	}
}
