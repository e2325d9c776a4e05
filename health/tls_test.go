package health

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/nodexds/nodexds/agent/identity"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/internal/spiffe"
)

// pki is a test CA and the agent's identity from it.
type pki struct {
	ca    *spiffe.CA
	agent *identity.Source
	dir   string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := spiffe.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{ca: ca, dir: t.TempDir()}
	agentDir := p.issue(t, "nodexds-system", "nodexds")
	if p.agent, err = identity.Open(agentDir); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) issue(t *testing.T, ns, sa string) string {
	t.Helper()
	dir := filepath.Join(p.dir, ns, sa)
	if err := p.ca.Issue(dir, ns, sa, 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serverTLS is a strict server's TLS: its certificate for ns/sa, and a
// client certificate from the CA required.
func (p *pki) serverTLS(t *testing.T, ns, sa string) *tls.Config {
	t.Helper()
	cert, roots, err := spiffe.Load(p.issue(t, ns, sa))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert}
}

func (p *pki) config() Config {
	cfg := testConfig
	cfg.TLS = p.agent.ClientConfig
	return cfg
}

func cartIdentity(sa string) string {
	return trust.SpellMatches([]trust.Match{{Value: spiffe.ID("cluster.local", "shop", sa)}})
}

// checksFollowFlips tracks s as a server of shop/cart and waits for the
// prober to see its status flip.
func checksFollowFlips(t *testing.T, p *pki, s *healthServer) *testProber {
	t.Helper()
	pr := startProber(t, p.config())
	target := s.Target
	target.Identity = cartIdentity("cart")
	pr.Track("cart", []Target{target})
	waitStatus(t, pr, target, Healthy)
	s.SetServingStatus("", notServing)
	waitStatus(t, pr, target, Unhealthy)
	s.SetServingStatus("", serving)
	waitStatus(t, pr, target, Healthy)
	return pr
}

// A strict server (TLS only, a client certificate required) is checked over
// TLS with the agent's certificate: its status flips are seen.
func TestTLSChecksOfAStrictServer(t *testing.T) {
	p := newPKI(t)
	s := startHealthServer(t, withTLS(p.serverTLS(t, "shop", "cart")))
	pr := checksFollowFlips(t, p, s)

	// Without an identity, the same server is checked in plaintext, which
	// it refuses.
	plain := s.Target
	pr.Track("cart-plain", []Target{plain})
	waitStatus(t, pr, plain, Unhealthy)
}

// A server of an mTLS Service that has not handed over to TLS yet answers
// the handshake in plaintext HTTP/2: it is checked in plaintext.
func TestTLSTargetStillInPlaintextIsCheckedInPlaintext(t *testing.T) {
	checksFollowFlips(t, newPKI(t), startHealthServer(t))
}

// A server whose certificate is not of the identities the Service's
// clients accept fails its checks, as it fails their calls; so does one
// whose certificate is of another CA.
func TestTLSServerOfAnotherIdentityFailsItsChecks(t *testing.T) {
	p := newPKI(t)
	other := startHealthServer(t, withTLS(p.serverTLS(t, "shop", "intruder")))
	foreign := newPKI(t)
	stranger := startHealthServer(t, withTLS(foreign.serverTLS(t, "shop", "cart")))
	pr := startProber(t, p.config())
	a, b := other.Target, stranger.Target
	a.Identity, b.Identity = cartIdentity("cart"), cartIdentity("cart")
	pr.Track("cart", []Target{a, b})
	waitStatus(t, pr, a, Unhealthy)
	waitStatus(t, pr, b, Unhealthy)
	if n := pr.metric(t, "nodexds_health_checks_total", "watch", "ok"); n != 0 {
		t.Errorf("%v checks passed, want none", n)
	}
}
