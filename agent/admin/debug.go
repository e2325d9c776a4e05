package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// Views is the agent's read-only view of what it serves (agent.Agent's).
type Views interface {
	Snapshot(context.Context, agent.ViewQuery) (agent.View, error)
}

// Debug serves the debug port: the debug views, CSDS (gRPC, on the same
// listener, told apart by content type: the server speaks HTTP/1 and
// prior-knowledge HTTP/2, as gRPC clients do) and, when asked for, pprof.
// What it shows names every client and Service, so it listens on loopback by
// default.
type Debug struct {
	views Views
	xds   *xds.Server
	names names.Parser // how the client page tells which Service a name is of
	grpc  *grpc.Server
	mux   *http.ServeMux
}

// NewDebug returns the debug port's handler, showing v and x's clients.
func NewDebug(v Views, x *xds.Server, p names.Parser, withPprof bool) *Debug {
	d := &Debug{views: v, xds: x, names: p, grpc: grpc.NewServer(), mux: http.NewServeMux()}
	xds.RegisterCSDSFunc(d.grpc, boundedCSDS(x))
	reflection.Register(d.grpc) // so grpcurl needs no proto files

	d.mux.HandleFunc("/{$}", d.index)
	d.mux.HandleFunc("/debug/services", d.services)
	d.mux.HandleFunc("/debug/clients", d.clients)
	if withPprof {
		d.mux.HandleFunc("/debug/pprof/", pprof.Index)
		d.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		d.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		d.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		d.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return d
}

// Server returns an http.Server for d. Closing it leaves the CSDS streams
// it carries to Stop.
func (d *Debug) Server() *http.Server {
	s := &http.Server{Handler: d, ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	s.Protocols.SetHTTP1(true)
	s.Protocols.SetUnencryptedHTTP2(true) // gRPC clients speak it with prior knowledge
	return s
}

// Stop ends the gRPC calls in progress.
func (d *Debug) Stop() { d.grpc.Stop() }

func (d *Debug) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		d.grpc.ServeHTTP(w, r)
		return
	}
	d.mux.ServeHTTP(w, r)
}

func (d *Debug) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, `nodexds debug
/debug/services   what each subscribed Service port is served as, and who subscribes (?format=json|text)
/debug/clients    connected ADS clients: subscriptions, versions sent, ACKs, NACKs
                  both take ?service=NAMESPACE/NAME, ?client=NODE_ID|STREAM, ?limit=N (default %d, max %d), ?offset=N
gRPC              envoy.service.status.v3.ClientStatusDiscoveryService (CSDS; at most %d clients a response), and reflection
`, DefaultPageLimit, MaxPageLimit, MaxCSDSClients)
}

func (d *Debug) services(w http.ResponseWriter, r *http.Request) {
	text, err := wantText(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q, err := readQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	clients := d.xds.Clients()
	if q.client != "" {
		clients = slices.DeleteFunc(clients, func(cl xds.ClientStatus) bool { return !q.isClient(&cl) })
	}
	vq := agent.ViewQuery{Service: q.service, Offset: q.offset, Limit: q.limit}
	if q.client != "" {
		vq.Match = subscribedBy(clients)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v, err := d.views.Snapshot(ctx, vq)
	if err != nil {
		http.Error(w, "agent did not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	out := joinClients(v, clients)
	out.Offset, out.Next = q.offset, next(r.URL, q, len(out.Services), out.Total)
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeServicesText(w, out)
		return
	}
	writeJSON(w, out)
}

func (d *Debug) clients(w http.ResponseWriter, r *http.Request) {
	q, err := readQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := pageClients(d.xds.Clients(), q, d.names)
	out.Next = next(r.URL, q, len(out.Clients), out.Total)
	writeJSON(w, out)
}
