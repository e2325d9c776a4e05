// Package admin serves nodexds' HTTP surfaces: the admin port (metrics and
// probes), the probe socket, and the debug port (debug pages, CSDS, pprof).
// It reads the agent only through exported, read-only views: the agent's
// Snapshot, the ADS server's Clients and ClientStatus, and the probe answers
// its caller hands it.
package admin

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probes is what the kubelet's probes are answered from.
type Probes struct {
	// Ready reports whether the agent is ready: false before the initial
	// state is applied, and from the moment a drain starts.
	Ready func() bool
	// Live says why the event loop counts as stuck; nil while it makes
	// progress.
	Live func() error
}

// Server returns the admin port's server: only what probes and Prometheus
// need. It is reachable from the pod network, so it shows nothing about
// Services or clients; that is the debug port's. HTTP/1 only, as probes and
// scrapers speak it.
func Server(g prometheus.Gatherer, p Probes) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, `nodexds admin
/metrics          Prometheus metrics
/healthz          liveness: the event loop makes progress
/readyz           ready once the cluster has been read and ADS is served
Debug views, CSDS and pprof are on the debug port (--debug-listen, local by default).
`)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	handleProbes(mux, p)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

// ProbeServer serves what the kubelet probes, and nothing else: the same
// answers as the admin port, for probes that must reach this agent when
// another one shares the node's ports.
func ProbeServer(p Probes) *http.Server {
	mux := http.NewServeMux()
	handleProbes(mux, p)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

// handleProbes adds what the kubelet probes to mux: /healthz (the event loop
// makes progress) and /readyz (200 while ready, 503 otherwise).
func handleProbes(mux *http.ServeMux, p Probes) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.Live(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}
