// Package identity is the agent's own workload identity: the certificate
// files its pod is given (tls.crt, tls.key and ca.crt, as cert-manager's
// csi-driver-spiffe writes them), read again when they are rotated, and
// the TLS settings with which it checks the health of mTLS servers.
package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/internal/spiffe"
)

// reread is how stale the files read may be: a health check connection is
// made rarely (a Watch stream lasts), so reading three small files at most
// once a second costs nothing and a rotation is used within a second.
const reread = time.Second

// Source is the agent's certificate, key and roots, from a directory.
type Source struct {
	dir string
	now func() time.Time

	mu    sync.Mutex
	read  time.Time // when the files were last read
	cert  tls.Certificate
	roots *x509.CertPool
	id    string
}

// Open reads dir's files once, so that a missing or broken volume is an
// error at start rather than at the first check.
func Open(dir string) (*Source, error) {
	s := &Source{dir: dir, now: time.Now}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// ID is the SPIFFE ID of the agent's certificate, as servers' RBAC sees
// the agent.
func (s *Source) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// ClientConfig returns the TLS settings of a connection to a server whose
// certificate must chain to the roots and carry a SPIFFE ID matched by
// servers (trust.SpellMatches), as gRPC's xDS clients check it: the
// roots, not a host name, and the URI SAN. The agent presents its own
// certificate, which a strict server requires.
func (s *Source) ClientConfig(servers string) (*tls.Config, error) {
	matches, err := trust.ParseMatches(servers)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now().Sub(s.read) >= reread {
		if err := s.loadLocked(); err != nil {
			return nil, err
		}
	}
	cert, roots := s.cert, s.roots
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"},
		// The chain and the SPIFFE ID are checked below: there is no host
		// name to check.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verify(cs.PeerCertificates, roots, matches)
		},
		MinVersion: tls.VersionTLS12,
	}, nil
}

// verify checks a server's chain against roots, and its SPIFFE ID.
func verify(chain []*x509.Certificate, roots *x509.CertPool, matches []trust.Match) error {
	if len(chain) == 0 {
		return errors.New("identity: the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("identity: server certificate: %w", err)
	}
	for _, u := range chain[0].URIs {
		for _, m := range matches {
			if m.Matches(u.String()) {
				return nil
			}
		}
	}
	return fmt.Errorf("identity: server certificate's SPIFFE ID is none of %s", trust.SpellMatches(matches))
}

func (s *Source) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked()
}

// loadLocked reads the files; on an error it keeps what it had (a
// rotation half written is read again a second later).
func (s *Source) loadLocked() error {
	certPEM, keyPEM, caPEM, err := readFiles(s.dir)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("identity: %s: %w", s.dir, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("identity: %s: no certificate in %s", s.dir, spiffe.CAFile)
	}
	id := ""
	for _, u := range cert.Leaf.URIs {
		if u.Scheme == "spiffe" {
			id = u.String()
			break
		}
	}
	if id == "" {
		return fmt.Errorf("identity: %s: the certificate has no SPIFFE ID (a spiffe:// URI SAN)", s.dir)
	}
	s.cert, s.roots, s.id, s.read = cert, roots, id, s.now()
	return nil
}

// readFiles reads the three files of one issuance: through ..data when the
// directory is the kubelet's atomic writer's (csi-driver-spiffe, Secret
// volumes), else as they are.
func readFiles(dir string) (cert, key, ca []byte, err error) {
	cert, key, ca, err = spiffe.Read(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return cert, key, ca, err
	}
	var errs []error
	for _, f := range []struct {
		name string
		to   *[]byte
	}{{spiffe.CertFile, &cert}, {spiffe.KeyFile, &key}, {spiffe.CAFile, &ca}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		*f.to = b
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, err
	}
	return cert, key, ca, nil
}
