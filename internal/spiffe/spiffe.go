// Package spiffe is a test certificate authority that writes workload
// certificates the way cert-manager's csi-driver-spiffe does, for the
// tests of mTLS (the agent's in process, and the end-to-end suite).
//
// What csi-driver-spiffe puts in a pod's volume, and so what Issue writes:
//
//   - tls.crt: the workload's X.509 SVID, one certificate, whose only name
//     is the URI SAN spiffe://<trust domain>/ns/<namespace>/sa/<service
//     account> (no DNS SANs, empty subject), with key usages digital
//     signature and key encipherment and extended key usages server and
//     client auth, valid for 1 hour by default;
//   - tls.key: its ECDSA P-256 key, PKCS#8 in a "PRIVATE KEY" PEM block;
//   - ca.crt: the trust domain's root (csi-driver-spiffe writes it when
//     installed with app.driver.sourceCABundle).
//
// The files are written as csi-driver-spiffe writes them, through the
// kubelet's atomic writer (cert-manager/csi-lib's storage.Filesystem uses a
// copy of k8s.io/kubernetes/pkg/volume/util's AtomicWriter): each issuance
// goes into a new hidden timestamped directory ..2006_01_02_15_04_05.NNN,
// the symlink ..data is switched to it by a rename (atomic), the names a
// program opens are symlinks tls.crt -> ..data/tls.crt (and so on), and the
// previous directory is then removed. A file is therefore never seen half
// written. Two files read one after the other through those symlinks may
// still come from two issuances (a rotation between the reads), and an open
// that resolved ..data just before a rotation may find its file already
// removed ("no such file", rarely); Read reads all three through one
// resolution of ..data, again if that directory went, so they always pair.
// grpc-go's file_watcher reads tls.crt then tls.key through the symlinks
// and, if a read fails or they do not pair, keeps its previous certificate
// until its next refresh.
package spiffe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The files of a workload's certificate directory, as csi-driver-spiffe
// names them.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
	CAFile   = "ca.crt"
)

// DefaultTTL is the lifetime of a workload certificate when Issue is given
// none: csi-driver-spiffe's (app.certificateRequestDuration).
const DefaultTTL = time.Hour

// caTTL is the root's lifetime.
const caTTL = 24 * time.Hour

// skew backdates every certificate, so clocks a little apart accept it.
const skew = time.Minute

// dataDir is the symlink to the current issuance's directory, as the
// kubelet's atomic writer names it.
const dataDir = "..data"

// ID returns the SPIFFE ID of a Kubernetes service account, in
// csi-driver-spiffe's form.
func ID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// CA is a trust domain's self-signed root. Every NewCA is a new key: a
// second CA, even of the same trust domain, is unrelated to the first (its
// certificates do not verify against the first's root). A CA is safe for
// concurrent use.
type CA struct {
	trustDomain string
	cert        *x509.Certificate
	certPEM     []byte
	key         *ecdsa.PrivateKey
}

// NewCA returns a new root for trustDomain: ECDSA P-256, self-signed, valid
// for 24 hours.
func NewCA(trustDomain string) (*CA, error) {
	if trustDomain == "" {
		return nil, errors.New("spiffe: no trust domain")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"nodexds e2e"}, CommonName: "test CA " + trustDomain + " " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-skew),
		NotAfter:              now.Add(caTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{
		trustDomain: trustDomain,
		cert:        cert,
		certPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:         key,
	}, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() string { return ca.trustDomain }

// Root returns the CA's certificate.
func (ca *CA) Root() *x509.Certificate { return ca.cert }

// RootPEM returns the CA's certificate in PEM, as ca.crt holds it.
func (ca *CA) RootPEM() []byte { return ca.certPEM }

// Issue writes a new certificate for namespace/serviceAccount, with a new
// key and serial, valid for ttl (DefaultTTL if zero), into dir (created if
// missing) as csi-driver-spiffe does: see the package comment. Calling it
// again on the same dir is a rotation. Calls on one dir must not overlap.
func (ca *CA) Issue(dir, namespace, serviceAccount string, ttl time.Duration) error {
	if namespace == "" || serviceAccount == "" {
		return errors.New("spiffe: no namespace or service account")
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 {
		return fmt.Errorf("spiffe: negative ttl %v", ttl)
	}
	id, err := url.Parse(ID(ca.trustDomain, namespace, serviceAccount))
	if err != nil {
		return fmt.Errorf("spiffe: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// No subject and one URI SAN, as csi-driver-spiffe requests (Go
		// marks the SAN extension critical, as RFC 5280 wants of a
		// certificate with an empty subject).
		URIs:                  []*url.URL{id},
		NotBefore:             now.Add(-skew),
		NotAfter:              now.Add(ttl),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writeAtomic(dir, map[string][]byte{
		CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CAFile:   ca.certPEM,
	})
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// writeAtomic publishes files in dir the way the kubelet's atomic writer
// does (its steps, without the payload diffing): a new timestamped
// directory, ..data renamed onto it, user-visible symlinks into ..data, the
// previous directory removed.
func writeAtomic(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dataPath := filepath.Join(dir, dataDir)
	old, err := os.Readlink(dataPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	for name, b := range files {
		// Read-only for owner and group, as csi-lib writes them (its group
		// is the volume's spiffe.csi.cert-manager.io/fs-group).
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o440); err != nil {
			os.RemoveAll(ts)
			return err
		}
	}
	// The switch: one rename of a symlink over ..data.
	if err := replaceSymlink(filepath.Base(ts), dataPath); err != nil {
		os.RemoveAll(ts)
		return err
	}
	for name := range files {
		target := filepath.Join(dataDir, name)
		if t, err := os.Readlink(filepath.Join(dir, name)); err == nil && t == target {
			continue
		}
		if err := replaceSymlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(ts) {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// replaceSymlink makes path a symlink to target, atomically (whatever was
// at path is replaced by a rename).
func replaceSymlink(target, path string) error {
	tmp := path + "_tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Read returns tls.crt, tls.key and ca.crt of dir, all three of one
// issuance: it resolves ..data once and reads the files of the directory it
// names, again if a rotation removed that directory meanwhile.
func Read(dir string) (cert, key, ca []byte, err error) {
	for range 100 {
		var ts string
		ts, err = os.Readlink(filepath.Join(dir, dataDir))
		if err != nil {
			return nil, nil, nil, err
		}
		base := filepath.Join(dir, ts)
		if cert, err = os.ReadFile(filepath.Join(base, CertFile)); err == nil {
			if key, err = os.ReadFile(filepath.Join(base, KeyFile)); err == nil {
				if ca, err = os.ReadFile(filepath.Join(base, CAFile)); err == nil {
					return cert, key, ca, nil
				}
			}
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, err
		}
		// Rotated and removed between the readlink and the reads.
	}
	return nil, nil, nil, fmt.Errorf("spiffe: %s keeps rotating: %w", dir, err)
}

// Load reads dir's files (Read) as a certificate with its key, and the
// roots of ca.crt.
func Load(dir string) (tls.Certificate, *x509.CertPool, error) {
	certPEM, keyPEM, caPEM, err := Read(dir)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("spiffe: no certificate in %s", filepath.Join(dir, CAFile))
	}
	return pair, roots, nil
}
