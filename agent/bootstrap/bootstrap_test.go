package bootstrap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/tls/certprovider"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds" // registers the file_watcher plugin, as an xDS program's import does
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nodexds/nodexds/agent/names"
)

// helperEnv makes the test binary, re-run by runGRPCGoServer, create an
// xDS-enabled grpc-go server from $GRPC_XDS_BOOTSTRAP_CONFIG and report.
const helperEnv = "NODEXDS_TEST_GRPC_XDS_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// grpc-go reads GRPC_XDS_BOOTSTRAP_CONFIG once, when the process
		// starts: only a new process sees a bootstrap as a pod's does.
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err == nil {
			var s *xds.GRPCServer
			if s, err = xds.NewGRPCServer(grpc.Creds(creds)); err == nil {
				s.Stop()
			}
		}
		if err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("ok")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// parse returns doc as generic JSON.
func parse(t *testing.T, doc []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("%v in %s", err, doc)
	}
	return v
}

func TestJSON(t *testing.T) {
	const (
		// The server listener template is always there: plaintext
		// xDS-enabled servers need it too.
		servers = `"xds_servers":[{"server_uri":"10.0.0.1:18000","channel_creds":[{"type":"insecure"}],"server_features":["ignore_resource_deletion"]}],` +
			`"server_listener_resource_name_template":"grpc/server?xds.resource.listening_address=%s"`
	)
	certs := func(dir, refresh string) string {
		return `"certificate_providers":{"nodexds":{"plugin_name":"file_watcher","config":{` +
			`"certificate_file":"` + dir + `/tls.crt","private_key_file":"` + dir + `/tls.key","ca_certificate_file":"` + dir + `/ca.crt",` +
			`"refresh_interval":"` + refresh + `"}}}`
	}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{
			name: "locality is always present, even empty (grpc-js-xds requires it)",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod"},
			want: `{` + servers + `,"node":{"id":"ns/pod","locality":{}}}`,
		},
		{
			name: "zone and region when known",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod", Zone: "z1", Region: "r1"},
			want: `{` + servers + `,"node":{"id":"ns/pod","locality":{"region":"r1","zone":"z1"}}}`,
		},
		{
			name: "no certs: no certificate provider, no metadata, whatever the refresh",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod", CertRefresh: time.Millisecond},
			want: `{` + servers + `,"node":{"id":"ns/pod","locality":{}}}`,
		},
		{
			name: "certs: file_watcher instance nodexds over csi-driver-spiffe's files, refreshed every 10m by default",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod", Certs: "/var/run/secrets/spiffe.io"},
			want: `{` + servers + `,"node":{"id":"ns/pod","locality":{},"metadata":{"nodexds.io/certificate-provider":"nodexds"}},` +
				certs("/var/run/secrets/spiffe.io", "600s") + `}`,
		},
		{
			name: "certs with the other metadata; a trailing slash is cleaned; whole seconds",
			o: Options{Server: "10.0.0.1:18000", NodeID: "ns/pod", NodeName: "node-a", Namespace: "ns",
				Certs: "/certs/", CertRefresh: 90 * time.Second},
			want: `{` + servers + `,"node":{"id":"ns/pod","locality":{},"metadata":{"nodexds.io/certificate-provider":"nodexds","nodexds.io/node-name":"node-a","nodexds.io/namespace":"ns"}},` +
				certs("/certs", "90s") + `}`,
		},
		{
			name: "a refresh of one second and a half",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod", Certs: "/certs", CertRefresh: 1500 * time.Millisecond},
			want: `{` + servers + `,"node":{"id":"ns/pod","locality":{},"metadata":{"nodexds.io/certificate-provider":"nodexds"}},` +
				certs("/certs", "1.500s") + `}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := JSON(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got, want := parse(t, doc), parse(t, []byte(tc.want))
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Errorf("bootstrap:\n got  %s\n want %s", g, w)
			}
		})
	}
}

// TestServerListenerNamesAreTheAgents: the names xDS-enabled servers make
// from the template (grpc-go replaces %s with its listener's address, as
// net.Listener.Addr().String() writes it) are server names the agent reads.
func TestServerListenerNamesAreTheAgents(t *testing.T) {
	if ServerListenerTemplate != "grpc/server?xds.resource.listening_address=%s" {
		t.Errorf("template %q is not gRFC A36's", ServerListenerTemplate)
	}
	for _, addr := range []string{"0.0.0.0:50051", "[::]:50051", "10.1.2.3:8080", "[fd00::1]:50051"} {
		name := strings.ReplaceAll(ServerListenerTemplate, "%s", addr)
		ap, err := names.ParseServer(name)
		if err != nil || ap.String() != addr {
			t.Errorf("%s: %v, %v", name, ap, err)
		}
	}
}

func TestJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no server", Options{NodeID: "x"}, "no server address"},
		{"no node id", Options{Server: "10.0.0.1:18000"}, "no node id"},
		{"refresh under a second", Options{Server: "s:1", NodeID: "x", Certs: "/certs", CertRefresh: 999 * time.Millisecond}, "under a second"},
		{"negative refresh", Options{Server: "s:1", NodeID: "x", Certs: "/certs", CertRefresh: -time.Minute}, "under a second"},
		{"relative directory", Options{Server: "s:1", NodeID: "x", Certs: "certs"}, `"certs" is not an absolute path`},
		{"dot-relative directory", Options{Server: "s:1", NodeID: "x", Certs: "./var/run/secrets/spiffe.io"}, "is not an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := JSON(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (%s), want an error containing %q", err, doc, tc.want)
			}
		})
	}
}

// TestCertRefreshIsADuration: every refresh is written as protobuf's JSON
// Duration (what grpc-go and C-core parse; grpc-js-xds's pattern is the
// same), and reads back exactly.
func TestCertRefreshIsADuration(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 1500 * time.Millisecond, 1001500 * time.Microsecond,
		time.Second + time.Nanosecond, 10 * time.Minute, 36 * time.Hour} {
		s, err := certRefresh(d)
		if err != nil {
			t.Fatal(err)
		}
		var pb durationpb.Duration
		if err := protojson.Unmarshal([]byte(`"`+s+`"`), &pb); err != nil {
			t.Fatalf("%v: %q: %v", d, s, err)
		}
		want := d
		if d == 0 {
			want = DefaultCertRefresh
		}
		if pb.AsDuration() != want {
			t.Errorf("%v: %q reads back as %v", d, s, pb.AsDuration())
		}
	}
}

// writeCerts writes a CA and a leaf signed by it into dir, as
// csi-driver-spiffe names them, and returns the leaf's DER.
func writeCerts(t *testing.T, dir string) []byte {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse("spiffe://cluster.local/ns/ns/sa/sa")
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), URIs: []*url.URL{id},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		CertFile: {Type: "CERTIFICATE", Bytes: leafDER},
		KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
		CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return leafDER
}

// runGRPCGoServer creates an xDS-enabled grpc-go server, with xDS
// credentials, in a new process whose GRPC_XDS_BOOTSTRAP_CONFIG is doc,
// and returns "ok" or "error: ...".
func runGRPCGoServer(t *testing.T, doc []byte) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "GRPC_XDS_BOOTSTRAP_CONFIG="+string(doc), "GRPC_XDS_BOOTSTRAP=")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	return strings.TrimSpace(out.String())
}

// TestGRPCGoAcceptsTheBootstrap: grpc-go (the version this module builds
// with) reads the certificate provider of a --certs bootstrap and the key
// material from its files, and an xDS-enabled server accepts the bootstrap,
// which it refuses without --certs (no server listener template) or with a
// provider config it cannot use. grpc-go's bootstrap parser is internal, so
// the test goes through its public certprovider registry (which the parser
// calls with the instance's "config", as json.RawMessage) and through
// GRPC_XDS_BOOTSTRAP_CONFIG in a process of its own.
func TestGRPCGoAcceptsTheBootstrap(t *testing.T) {
	dir := t.TempDir()
	leaf := writeCerts(t, dir)
	doc, err := JSON(Options{Server: "127.0.0.1:1", NodeID: "ns/pod", Certs: dir, CertRefresh: time.Second})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("file_watcher reads the three files", func(t *testing.T) {
		var b struct {
			Providers map[string]struct {
				Plugin string          `json:"plugin_name"`
				Config json.RawMessage `json:"config"`
			} `json:"certificate_providers"`
		}
		if err := json.Unmarshal(doc, &b); err != nil {
			t.Fatal(err)
		}
		p, ok := b.Providers["nodexds"]
		if !ok {
			t.Fatalf("no certificate provider instance nodexds in %s", doc)
		}
		prov, err := certprovider.GetProvider(p.Plugin, p.Config, certprovider.BuildOptions{WantIdentity: true, WantRoot: true})
		if err != nil {
			t.Fatalf("grpc-go refuses the provider config: %v", err)
		}
		defer prov.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		km, err := prov.KeyMaterial(ctx)
		if err != nil {
			t.Fatalf("key material: %v", err)
		}
		if len(km.Certs) != 1 || !bytes.Equal(km.Certs[0].Certificate[0], leaf) {
			t.Errorf("grpc-go's identity is not tls.crt: %d certificates", len(km.Certs))
		}
		cert, err := x509.ParseCertificate(leaf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: km.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("grpc-go's roots are not ca.crt: %v", err)
		}
	})

	t.Run("an xDS-enabled server accepts it", func(t *testing.T) {
		if got := runGRPCGoServer(t, doc); got != "ok" {
			t.Errorf("grpc-go: %s\nbootstrap: %s", got, doc)
		}
	})

	t.Run("and so does a plaintext one, without certificates", func(t *testing.T) {
		plain, err := JSON(Options{Server: "127.0.0.1:1", NodeID: "ns/pod"})
		if err != nil {
			t.Fatal(err)
		}
		if got := runGRPCGoServer(t, plain); got != "ok" {
			t.Errorf("grpc-go without certificates: %s\nbootstrap: %s", got, plain)
		}
	})

	t.Run("and parses the provider's config (a broken one is refused)", func(t *testing.T) {
		// grpc-go requires the certificate and the key in one directory.
		broken := bytes.Replace(doc, []byte(filepath.Join(dir, KeyFile)), []byte("/elsewhere/tls.key"), 1)
		if bytes.Equal(broken, doc) {
			t.Fatalf("no key file path in %s", doc)
		}
		if got := runGRPCGoServer(t, broken); !strings.Contains(got, "certificate provider") {
			t.Errorf("grpc-go with a broken certificate provider: %s", got)
		}
	})
}
