package spiffe

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// issued reads dir's files (through the user-visible names, as a program
// does) and checks they parse: the leaf, its key, the roots.
func issued(t *testing.T, dir string) (*x509.Certificate, *ecdsa.PrivateKey, *x509.CertPool) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 1 {
		t.Fatalf("tls.crt holds %d certificates, want the leaf alone", len(pair.Certificate))
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("tls.key is not a PKCS#8 PEM block: %q", keyPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("tls.key is a %T, want an ECDSA P-256 key", k)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.crt holds no certificate: %q", caPEM)
	}
	return leaf, key, roots
}

func TestIssueWritesWhatCSIDriverSPIFFEWrites(t *testing.T) {
	ca, err := NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Root().IsCA || ca.Root().CheckSignatureFrom(ca.Root()) != nil {
		t.Fatal("the root is not a self-signed CA")
	}
	if d := ca.Root().NotAfter.Sub(ca.Root().NotBefore); d != 24*time.Hour+skew {
		t.Errorf("root valid for %v", d)
	}
	dir := filepath.Join(t.TempDir(), "spiffe.io")
	if err := ca.Issue(dir, "shop", "frontend", 0); err != nil {
		t.Fatal(err)
	}
	leaf, _, roots := issued(t, dir)

	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/frontend" {
		t.Errorf("URI SANs %v", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.String() != "" {
		t.Errorf("names besides the SPIFFE ID: subject %q, DNS %v, IP %v, email %v", leaf.Subject, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Error("the leaf is a CA")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Errorf("key usage %b, want %b", leaf.KeyUsage, want)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d != DefaultTTL+skew {
		t.Errorf("leaf valid for %v, want 1h (+%v backdating)", d, skew)
	}
	if time.Until(leaf.NotBefore) > 0 {
		t.Errorf("leaf not valid yet: %v", leaf.NotBefore)
	}

	// The kubelet's atomic writer's layout.
	for _, name := range []string{CertFile, KeyFile, CAFile} {
		target, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || target != filepath.Join("..data", name) {
			t.Errorf("%s: %q, %v; want a symlink to ..data/%s", name, target, err, name)
		}
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o440 {
			t.Errorf("%s: %v, %v; want read-only for owner and group, as csi-lib writes it", name, fi, err)
		}
	}
	ts, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil || !strings.HasPrefix(ts, "..") || strings.Contains(ts, "/") {
		t.Errorf("..data: %q, %v; want a symlink to a hidden timestamped directory beside it", ts, err)
	}

	if got := ID("example.org", "ns", "sa"); got != "spiffe://example.org/ns/ns/sa/sa" {
		t.Errorf("ID: %s", got)
	}
	if ca.TrustDomain() != "cluster.local" {
		t.Errorf("TrustDomain: %s", ca.TrustDomain())
	}
}

func TestIssueTTL(t *testing.T) {
	ca, err := NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Issue(dir, "ns", "sa", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	leaf, _, _ := issued(t, dir)
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d != 5*time.Minute+skew {
		t.Errorf("valid for %v", d)
	}
	if err := ca.Issue(dir, "ns", "sa", -time.Minute); err == nil {
		t.Error("a negative ttl: want an error")
	}
	if err := ca.Issue(dir, "", "sa", 0); err == nil {
		t.Error("no namespace: want an error")
	}
}

func TestReissueRotatesKeyAndSerial(t *testing.T) {
	ca, err := NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Issue(dir, "ns", "sa", 0); err != nil {
		t.Fatal(err)
	}
	leaf1, key1, _ := issued(t, dir)
	if err := ca.Issue(dir, "ns", "sa", 0); err != nil {
		t.Fatal(err)
	}
	leaf2, key2, _ := issued(t, dir)
	if leaf1.SerialNumber.Cmp(leaf2.SerialNumber) == 0 {
		t.Error("same serial after rotation")
	}
	if key1.Equal(key2) || leaf1.PublicKey.(*ecdsa.PublicKey).Equal(leaf2.PublicKey) {
		t.Error("same key after rotation")
	}
	if leaf1.URIs[0].String() != leaf2.URIs[0].String() {
		t.Errorf("identity changed: %v, %v", leaf1.URIs, leaf2.URIs)
	}
	// Only the current issuance's directory is left.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 5 { // ..2026_..., ..data, ca.crt, tls.crt, tls.key
		t.Errorf("after a rotation the directory holds %v", names)
	}
}

func TestAnotherCAIsUnrelated(t *testing.T) {
	ca1, err := NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ca1.RootPEM(), ca2.RootPEM()) || ca1.Root().Subject.String() == ca2.Root().Subject.String() {
		t.Error("two CAs share a root or a subject")
	}
	dir := t.TempDir()
	if err := ca2.Issue(dir, "ns", "sa", 0); err != nil {
		t.Fatal(err)
	}
	leaf, _, _ := issued(t, dir)
	roots1 := x509.NewCertPool()
	roots1.AddCert(ca1.Root())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots1, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("a certificate of the second CA verifies against the first's root")
	}
}

// TestFilesAreNeverSeenHalfWritten: while Issue rotates a directory 200
// times, readers never see a torn file, and Read always returns a tls.crt
// and tls.key that pair, of the ca.crt beside them. Reading the two
// user-visible names one after the other may straddle a rotation (that is
// what Read is for), so that reader only checks each file on its own; it
// may also find a name missing for an instant (the previous directory
// removed after the open resolved ..data to it), as with the kubelet's
// writer.
func TestFilesAreNeverSeenHalfWritten(t *testing.T) {
	ca, err := NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Issue(dir, "ns", "sa", 0); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())

	var done atomic.Bool
	var pairs, singles, straddled, missing atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // one resolution of ..data per read: always a pair
		defer wg.Done()
		for !done.Load() {
			cert, key, caPEM, err := Read(dir)
			if err != nil {
				t.Errorf("Read: %v", err)
				return
			}
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				t.Errorf("Read returned a tls.crt and tls.key that do not pair: %v", err)
				return
			}
			if !bytes.Equal(caPEM, ca.RootPEM()) {
				t.Errorf("Read returned a ca.crt that is not the root: %q", caPEM)
				return
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err == nil {
				_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			}
			if err != nil {
				t.Errorf("Read returned a certificate that does not verify: %v", err)
				return
			}
			pairs.Add(1)
		}
	}()
	go func() { // the user-visible names, one file at a time: always whole
		defer wg.Done()
		for !done.Load() {
			certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
			var keyPEM []byte
			if err == nil {
				keyPEM, err = os.ReadFile(filepath.Join(dir, KeyFile))
			}
			if errors.Is(err, fs.ErrNotExist) {
				missing.Add(1)
				continue
			}
			if err != nil {
				t.Error(err)
				return
			}
			cb, _ := pem.Decode(certPEM)
			kb, _ := pem.Decode(keyPEM)
			if cb == nil || kb == nil {
				t.Errorf("a torn file: tls.crt %q, tls.key %q", certPEM, keyPEM)
				return
			}
			if _, err := x509.ParseCertificate(cb.Bytes); err != nil {
				t.Errorf("tls.crt: %v", err)
				return
			}
			if _, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
				t.Errorf("tls.key: %v", err)
				return
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				straddled.Add(1) // a rotation between the two reads
			}
			singles.Add(1)
		}
	}()
	for range 200 {
		if err := ca.Issue(dir, "ns", "sa", 0); err != nil {
			t.Error(err)
			break
		}
	}
	done.Store(true)
	wg.Wait()
	t.Logf("200 rotations: %d reads with Read (all paired); %d reads of the two names one after the other, %d straddled a rotation, %d more found a name missing",
		pairs.Load(), singles.Load(), straddled.Load(), missing.Load())
	if pairs.Load() < 20 || singles.Load() < 20 {
		t.Errorf("the readers read too little during the rotations to tell: %d, %d", pairs.Load(), singles.Load())
	}
}
