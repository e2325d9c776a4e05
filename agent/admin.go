package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/nodexds/nodexds/agent/xds"
)

// admin serves the admin port: HTTP endpoints, and gRPC (CSDS) on the same
// listener, told apart by content type (the server speaks HTTP/1 and
// prior-knowledge HTTP/2, as gRPC clients do).
type admin struct {
	gatherer prometheus.Gatherer
	ready    func() bool
	agent    *Agent
	xds      *xds.Server
	grpc     *grpc.Server
	mux      *http.ServeMux
}

func newAdmin(g prometheus.Gatherer, ready func() bool, a *Agent, x *xds.Server, withPprof bool) *admin {
	ad := &admin{gatherer: g, ready: ready, agent: a, xds: x, grpc: grpc.NewServer(), mux: http.NewServeMux()}
	x.RegisterCSDS(ad.grpc)
	reflection.Register(ad.grpc) // so grpcurl needs no proto files

	ad.mux.HandleFunc("/{$}", ad.index)
	ad.mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	ad.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ad.mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not synced yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ad.mux.HandleFunc("/debug/services", ad.services)
	ad.mux.HandleFunc("/debug/clients", ad.clients)
	if withPprof {
		ad.mux.HandleFunc("/debug/pprof/", pprof.Index)
		ad.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		ad.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		ad.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		ad.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return ad
}

// server returns an http.Server for the admin port.
func (ad *admin) server() *http.Server {
	s := &http.Server{Handler: ad, ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	s.Protocols.SetHTTP1(true)
	s.Protocols.SetUnencryptedHTTP2(true) // gRPC clients speak it with prior knowledge
	return s
}

func (ad *admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		ad.grpc.ServeHTTP(w, r)
		return
	}
	ad.mux.ServeHTTP(w, r)
}

func (ad *admin) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, `nodexds admin
/metrics          Prometheus metrics
/healthz          liveness
/readyz           ready once the cluster has been read and ADS is served
/debug/services   what each subscribed Service port is served as, and who subscribes (?format=json|text)
/debug/clients    connected ADS clients: subscriptions, versions sent, ACKs, NACKs
gRPC              envoy.service.status.v3.ClientStatusDiscoveryService (CSDS), and reflection, on this port
`)
}

// ServiceClient is one client subscribing to a cluster.
type ServiceClient struct {
	Node   string `json:"node"`
	Stream uint64 `json:"stream"`
	// Via lists the listener names through which the client reaches the
	// cluster; empty when it names the cluster directly.
	Via []string `json:"via"`
	// Types are the resource types it subscribes to for the cluster.
	Types []string `json:"types"`
	// EDS is the state of the cluster's endpoints on the client (SYNCED, ...),
	// empty when it does not subscribe to them.
	EDS xds.ResourceState `json:"eds,omitempty"`
}

// ServiceDebug is a ServiceView with its subscribers.
type ServiceDebug struct {
	ServiceView
	Clients []ServiceClient `json:"clients"`
}

// ServicesDebug is what /debug/services serves.
type ServicesDebug struct {
	Node     string         `json:"node"`
	Zone     string         `json:"zone"`
	Region   string         `json:"region"`
	Services []ServiceDebug `json:"services"`
}

func (ad *admin) services(w http.ResponseWriter, r *http.Request) {
	text, err := wantText(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v, err := ad.agent.Snapshot(ctx)
	if err != nil {
		http.Error(w, "agent did not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	d := joinClients(v, ad.xds.Clients())
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeServicesText(w, d)
		return
	}
	writeJSON(w, d)
}

func (ad *admin) clients(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, ad.xds.Clients())
}

// wantText reads ?format=json|text, else the Accept header; JSON by default.
func wantText(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "text":
		return true, nil
	case "json":
		return false, nil
	case "":
	default:
		return false, fmt.Errorf("format=%q: want json or text", f)
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "text/plain") && !strings.Contains(accept, "application/json"), nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// joinClients adds to each Service port the clients that subscribe to it: to
// its cluster's names (the cluster, its route configuration and endpoints, and
// clusters derived from it, named cluster|...), or to a listener resolving to it.
func joinClients(v View, clients []xds.ClientStatus) ServicesDebug {
	d := ServicesDebug{Node: v.Node, Zone: v.Zone, Region: v.Region, Services: make([]ServiceDebug, 0, len(v.Services))}
	for _, sv := range v.Services {
		sd := ServiceDebug{ServiceView: sv, Clients: []ServiceClient{}}
		for _, cl := range clients {
			sc := ServiceClient{Node: cl.Node, Stream: cl.Stream, Via: []string{}}
			for _, ts := range cl.Types {
				uses := false
				for _, r := range ts.Resources {
					switch {
					case ts.TypeURL == xds.ListenerType:
						if slices.Contains(sv.Listeners, r.Name) {
							sc.Via = append(sc.Via, r.Name)
							uses = true
						}
					case r.Name == sv.Cluster || strings.HasPrefix(r.Name, sv.Cluster+"|"):
						uses = true
						if ts.TypeURL == xds.EndpointType && r.Name == sv.Cluster {
							sc.EDS = r.State
						}
					}
				}
				if uses {
					sc.Types = append(sc.Types, ts.Type)
				}
			}
			if len(sc.Types) > 0 {
				sd.Clients = append(sd.Clients, sc)
			}
		}
		d.Services = append(d.Services, sd)
	}
	return d
}

// writeServicesText renders /debug/services for people:
//
//	cluster be1.default.svc.cluster.local:8080  (default/be1 port 8080)  policy node,zone,region,* (default)
//	  clients: ns/client-1 (via be1:8080)
//	  priority 0 [node]: 10.0.0.1:50051 be1-abc node-a zone-a HEALTHY
func writeServicesText(w io.Writer, d ServicesDebug) {
	fmt.Fprintf(w, "node %s  zone %s  region %s\n", dash(d.Node), dash(d.Zone), dash(d.Region))
	if len(d.Services) == 0 {
		fmt.Fprintln(w, "no subscribed services")
	}
	for _, s := range d.Services {
		fmt.Fprintf(w, "\ncluster %s  (%s port %d)", s.Cluster, s.Service, s.Port)
		if !s.Exists {
			fmt.Fprintf(w, "  no such Service port: served with no endpoints\n")
		} else {
			fmt.Fprintf(w, "  policy %s (%s)", s.Policy, s.Source)
			if s.MinTier > 1 {
				fmt.Fprintf(w, "  min-tier-endpoints %d", s.MinTier)
			}
			fmt.Fprintln(w)
		}
		for _, e := range s.Errors {
			fmt.Fprintf(w, "  annotation error: %s\n", e)
		}
		if s.FailOpen {
			fmt.Fprintln(w, "  FAIL OPEN: every endpoint fails its health checks; all are served as UNKNOWN")
		}
		fmt.Fprintf(w, "  clients: %s\n", clientsText(s.Clients))
		if s.Exists && len(s.Priorities) == 0 {
			fmt.Fprintln(w, "  no endpoint may be used (none ready, or none in the policy's tiers)")
		}
		for i, p := range s.Priorities {
			head := fmt.Sprintf("  priority %d [%s]: ", i, p.Tiers)
			for j, e := range p.Endpoints {
				lead := head
				if j > 0 {
					lead = strings.Repeat(" ", len(head))
				}
				fmt.Fprintf(w, "%s%s %s %s %s %s", lead, e.Addr, dash(e.Pod), dash(e.Node), dash(e.Zone), e.Health)
				if !e.Ready {
					fmt.Fprint(w, " (terminating)")
				}
				fmt.Fprintln(w)
			}
		}
	}
}

// clientsText lists clients once per node id and route, with a count when a
// node has several streams that way.
func clientsText(cs []ServiceClient) string {
	if len(cs) == 0 {
		return "none"
	}
	type key struct{ node, how string }
	counts := map[key]int{}
	var order []key
	for _, c := range cs {
		how := strings.Join(c.Types, ", ")
		if len(c.Via) > 0 {
			how = "via " + strings.Join(c.Via, ", ")
		}
		if c.EDS != "" && c.EDS != xds.Synced {
			how += ", EDS " + string(c.EDS)
		}
		k := key{cmp.Or(c.Node, "(no node id)"), how}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		p := fmt.Sprintf("%s (%s)", k.node, k.how)
		if counts[k] > 1 {
			p += fmt.Sprintf(" ×%d", counts[k])
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func dash(s string) string { return cmp.Or(s, "-") }
