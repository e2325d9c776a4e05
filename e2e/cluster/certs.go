package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pkiFiles are the key material the API server is started with, all
// generated in Go per test run (no openssl/cfssl needed).
type pkiFiles struct {
	caPEM []byte // CA bundle clients trust for the API server

	servingCert string // --tls-cert-file
	servingKey  string // --tls-private-key-file
	saPublic    string // --service-account-key-file
	saPrivate   string // --service-account-signing-key-file
}

// generatePKI writes a CA, an API server serving certificate signed by it
// and a service-account signing key pair into dir.
//
// The serving certificate is generated here rather than left to the API
// server's --cert-dir self-signing so that the harness knows the exact CA
// bundle to hand to clients, and so that it carries the bridge address that
// processes inside node namespaces dial.
func generatePKI(dir string, ips []net.IP, dnsNames []string) (*pkiFiles, error) {
	now := time.Now()
	caKey, caCert, err := newCA(now)
	if err != nil {
		return nil, err
	}
	srvKey, srvDER, err := newServingCert(caKey, caCert, now, ips, dnsNames)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	files := &pkiFiles{
		caPEM:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saPublic:    filepath.Join(dir, "sa.pub"),
		saPrivate:   filepath.Join(dir, "sa.key"),
	}
	if err := files.write(dir, srvKey, srvDER, saKey); err != nil {
		return nil, err
	}
	return files, nil
}

// newCA makes the self-signed CA.
func newCA(now time.Time) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	tmpl := certTemplate(1, "nodexds-e2e-ca", now, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature)
	tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	key, der, err := newKeyAndCert("CA", tmpl, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return key, cert, nil
}

// newServingCert makes the API server's serving key and certificate, signed
// by the CA, for ips and dnsNames.
func newServingCert(caKey *ecdsa.PrivateKey, ca *x509.Certificate, now time.Time, ips []net.IP, dnsNames []string) (*ecdsa.PrivateKey, []byte, error) {
	tmpl := certTemplate(2, "kube-apiserver", now, x509.KeyUsageDigitalSignature)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.IPAddresses, tmpl.DNSNames = ips, dnsNames
	return newKeyAndCert("serving", tmpl, ca, caKey)
}

// certTemplate is a certificate valid from an hour before now to a day
// after: it outlives any run, and a clock a little behind accepts it.
func certTemplate(serial int64, name string, now time.Time, usage x509.KeyUsage) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     usage,
	}
}

// newKeyAndCert generates a P-256 key and the DER certificate of tmpl for
// it, signed by parent's key, or self-signed when parent is nil; what names
// it in errors.
func newKeyAndCert(what string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", what, err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s certificate: %w", what, err)
	}
	return key, der, nil
}

// write writes the CA bundle into dir and the serving and service-account
// keys and certificates to f's paths.
func (f *pkiFiles) write(dir string, srvKey *ecdsa.PrivateKey, srvDER []byte, saKey *ecdsa.PrivateKey) error {
	srvKeyPEM, err := ecKeyPEM(srvKey)
	if err != nil {
		return err
	}
	saKeyPEM, err := ecKeyPEM(saKey)
	if err != nil {
		return err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("marshal service-account public key: %w", err)
	}
	writes := []struct {
		path string
		data []byte
	}{
		{filepath.Join(dir, "ca.crt"), f.caPEM},
		// The chain: serving certificate, then its CA.
		{f.servingCert, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), f.caPEM...)},
		{f.servingKey, srvKeyPEM},
		{f.saPublic, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		{f.saPrivate, saKeyPEM},
	}
	for _, w := range writes {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", w.path, err)
		}
	}
	return nil
}

func ecKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal EC key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
