package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/internal/spiffe"
)

// BenchmarkServerListeners is what a subscribed xDS-enabled server's
// Listener costs the agent: 1,000 of them, one stream's worth (a server
// port each, of pods the agent admits), strict with an allow list, answered
// in one response. It reports the agent's heap per listener and the time
// from the request to the response holding all of them.
func BenchmarkServerListeners(b *testing.B) {
	const n = 1000
	for range b.N {
		w := newWorld(b)
		w.namespaces = map[string]map[string]string{"default": {trust.AnnotationMTLS: "strict", trust.AnnotationAllowFrom: "web/frontend, ops/*"}}
		a := startAgent(b, w, func(o *serve.Options) { o.PodsAdmitted = true })
		listeners := make([]string, n)
		for i := range listeners {
			listeners[i] = fmt.Sprintf("%s0.0.0.0:%d", names.ServerPrefix, 10000+i)
		}
		before := heapAfterGC()
		start := time.Now()
		st := rawADS(b, a.Addr, "bench/server", listenerTypeURL, nil, listeners...)
		took := time.Since(start)
		after := heapAfterGC()
		_ = st
		b.ReportMetric(float64(int64(after)-int64(before))/n, "heap-bytes/listener")
		b.ReportMetric(float64(took.Microseconds())/n, "µs/listener")
	}
}

const listenerTypeURL = "type.googleapis.com/envoy.config.listener.v3.Listener"

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMTLSHandshake is what mTLS adds to a new connection: a grpc-go
// channel with xDS credentials opens a connection to an xDS-enabled server
// and makes its first RPC, plaintext (disabled) and mTLS (strict), the
// agent already holding everything. Each op is one new connection.
func BenchmarkMTLSHandshake(b *testing.B) {
	for _, mode := range []string{"disabled", "strict"} {
		b.Run(mode, func(b *testing.B) {
			id := newIdentities(b)
			w := newWorld(b)
			cart := w.addService("shop", "cart", func(s *service) { s.Annotations = map[string]string{trust.AnnotationMTLS: mode} })
			a := startAgent(b, w)
			be := w.startXDSBackend(a, cart, "cart", id.certs("shop", "cart"))
			// One xDS channel resolves the endpoint; each op then dials the
			// server directly with the same credentials settings the xDS
			// channel has (mTLS or plaintext), so only the connection and
			// its handshake are timed.
			certs := id.certs("web", "frontend")
			eventually(b, dialSecure(b, a, "cart.shop:8080", certs), "cart")
			creds := grpc.WithTransportCredentials(insecure.NewCredentials())
			if mode == "strict" {
				creds = grpc.WithTransportCredentials(tlsCreds(b, certs))
			}
			b.ResetTimer()
			for range b.N {
				cc, err := grpc.NewClient("passthrough:///"+be.addr, creds)
				if err != nil {
					b.Fatal(err)
				}
				if got := hit(cc); got != "cart" {
					b.Fatalf("RPC: %s", got)
				}
				cc.Close()
			}
		})
	}
}

// tlsCreds are mTLS credentials with the certificate of dir, verifying the
// server's chain against its roots as gRPC's xDS credentials do (the
// identity is a URI SAN: no host name to check).
func tlsCreds(b *testing.B, dir string) credentials.TransportCredentials {
	pair, roots, err := spiffe.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates:       []tls.Certificate{pair},
		InsecureSkipVerify: true, //nolint:gosec // the chain is verified below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	})
}
