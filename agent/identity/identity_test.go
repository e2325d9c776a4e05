package identity

import (
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/internal/spiffe"
)

func TestOpenReadsTheAgentsIdentity(t *testing.T) {
	ca, err := spiffe.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Issue(dir, "nodexds-system", "nodexds", 0); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.ID(), "spiffe://cluster.local/ns/nodexds-system/sa/nodexds"; got != want {
		t.Errorf("ID %q, want %q", got, want)
	}

	// A rotation to another identity is read once the last read is a
	// second old, not before.
	now := time.Now()
	s.now = func() time.Time { return now }
	s.read = now
	if err := ca.Issue(dir, "nodexds-system", "renamed", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientConfig("spiffe://cluster.local/*"); err != nil {
		t.Fatal(err)
	}
	if got := s.ID(); !strings.HasSuffix(got, "/sa/nodexds") {
		t.Errorf("ID %q within a second of the last read, want the old one", got)
	}
	now = now.Add(reread)
	if _, err := s.ClientConfig("spiffe://cluster.local/*"); err != nil {
		t.Fatal(err)
	}
	if got := s.ID(); !strings.HasSuffix(got, "/sa/renamed") {
		t.Errorf("ID %q after a second, want the rotated one", got)
	}
}

func TestOpenRefusesWhatIsNotAnIdentity(t *testing.T) {
	ca, err := spiffe.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	plain := t.TempDir() // files written as they are, no ..data
	pair := selfSigned(t)
	for name, b := range map[string][]byte{spiffe.CertFile: pair[0], spiffe.KeyFile: pair[1], spiffe.CAFile: ca.RootPEM()} {
		if err := os.WriteFile(filepath.Join(plain, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ name, dir, want string }{
		{"no files", t.TempDir(), "no such file"},
		{"a certificate without a SPIFFE ID", plain, "no SPIFFE ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// selfSigned is a certificate and key with no URI SAN, in PEM: httptest's.
func selfSigned(t *testing.T) [2][]byte {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	defer srv.Close()
	c := srv.TLS.Certificates[0]
	key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return [2][]byte{
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}
}

func TestMatchesSpellAndParseBack(t *testing.T) {
	ms := []trust.Match{{Value: "spiffe://cluster.local/ns/shop/sa/cart"}, {Value: "spiffe://cluster.local/ns/shop/sa/", Prefix: true}}
	got, err := trust.ParseMatches(trust.SpellMatches(ms))
	if err != nil || len(got) != 2 || got[0] != ms[0] || got[1] != ms[1] {
		t.Errorf("ParseMatches(SpellMatches(%v)) = %v, %v", ms, got, err)
	}
	for _, bad := range []string{"", "cart", "https://x/"} {
		if _, err := trust.ParseMatches(bad); err == nil {
			t.Errorf("ParseMatches(%q) took it", bad)
		}
	}
}
