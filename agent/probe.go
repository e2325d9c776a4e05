package agent

import (
	"fmt"
	"net/http"
	"time"
)

// probeServer serves what the kubelet probes, and nothing else: /healthz
// (the process answers) and /readyz (200 while ready reports true, 503
// otherwise: before the initial state is applied, and from the moment a
// drain starts).
func probeServer(ready func() bool) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
