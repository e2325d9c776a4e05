package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// admin serves the admin port: only what probes and Prometheus need. It is
// reachable from the pod network, so it shows nothing about Services or
// clients; that is the debug port's.
type admin struct {
	mux *http.ServeMux
}

func newAdmin(g prometheus.Gatherer, ready func() bool, loop *heartbeat, stuckAfter time.Duration) *admin {
	ad := &admin{mux: http.NewServeMux()}
	ad.mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, `nodexds admin
/metrics          Prometheus metrics
/healthz          liveness: the event loop makes progress
/readyz           ready once the cluster has been read and ADS is served
Debug views, CSDS and pprof are on the debug port (--debug-listen, local by default).
`)
	})
	ad.mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	handleProbes(ad.mux, ready, loop, stuckAfter)
	return ad
}

// handleProbes adds what the kubelet probes to mux: /healthz (the event loop
// makes progress) and /readyz (200 while ready reports true, 503 otherwise:
// before the initial state is applied, and from the moment a drain starts).
func handleProbes(mux *http.ServeMux, ready func() bool, loop *heartbeat, stuckAfter time.Duration) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := loopHealth(loop.at(), time.Now(), stuckAfter); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// server returns an http.Server for the admin port: HTTP/1 only, as probes
// and scrapers speak it.
func (ad *admin) server() *http.Server {
	return &http.Server{Handler: ad.mux, ReadHeaderTimeout: 5 * time.Second}
}

// debugPort serves the debug views, CSDS (gRPC, on the same listener, told
// apart by content type: the server speaks HTTP/1 and prior-knowledge
// HTTP/2, as gRPC clients do) and, when asked for, pprof. What it shows names
// every client and Service, so it listens on loopback by default.
type debugPort struct {
	agent *Agent
	xds   *xds.Server
	grpc  *grpc.Server
	mux   *http.ServeMux
}

func newDebugPort(a *Agent, x *xds.Server, withPprof bool) *debugPort {
	d := &debugPort{agent: a, xds: x, grpc: grpc.NewServer(), mux: http.NewServeMux()}
	statusv3.RegisterClientStatusDiscoveryServiceServer(d.grpc, boundedCSDS{x})
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

func (d *debugPort) server() *http.Server {
	s := &http.Server{Handler: d, ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	s.Protocols.SetHTTP1(true)
	s.Protocols.SetUnencryptedHTTP2(true) // gRPC clients speak it with prior knowledge
	return s
}

func (d *debugPort) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		d.grpc.ServeHTTP(w, r)
		return
	}
	d.mux.ServeHTTP(w, r)
}

func (d *debugPort) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, `nodexds debug
/debug/services   what each subscribed Service port is served as, and who subscribes (?format=json|text)
/debug/clients    connected ADS clients: subscriptions, versions sent, ACKs, NACKs
                  both take ?service=NAMESPACE/NAME, ?client=NODE_ID|STREAM, ?limit=N (default %d, max %d), ?offset=N
gRPC              envoy.service.status.v3.ClientStatusDiscoveryService (CSDS; at most %d clients a response), and reflection
`, DefaultPageLimit, MaxPageLimit, MaxCSDSClients)
}

// Page sizes of /debug/services and /debug/clients.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 500
)

// debugQuery is what the debug pages are asked for.
type debugQuery struct {
	service       string // namespace/name
	client        string // node id, or stream number
	offset, limit int
}

func readQuery(q url.Values) (debugQuery, error) {
	d := debugQuery{service: q.Get("service"), client: q.Get("client"), limit: DefaultPageLimit}
	if d.service != "" {
		if ns, name, ok := strings.Cut(d.service, "/"); !ok || ns == "" || name == "" {
			return d, fmt.Errorf("service=%q: want namespace/name", d.service)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageLimit {
			return d, fmt.Errorf("limit=%q: want 1 to %d", v, MaxPageLimit)
		}
		d.limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return d, fmt.Errorf("offset=%q: want 0 or more", v)
		}
		d.offset = n
	}
	return d, nil
}

// next is the path of the page after one of n entries at q's offset, of
// total; "" when it was the last.
func next(u *url.URL, q debugQuery, n, total int) string {
	if q.offset+n >= total || n == 0 {
		return ""
	}
	v := u.Query()
	v.Set("offset", strconv.Itoa(q.offset+n))
	v.Set("limit", strconv.Itoa(q.limit))
	return u.Path + "?" + v.Encode()
}

// isClient reports whether cl is the client q.client names: by node id, or
// by stream number.
func (q debugQuery) isClient(cl *xds.ClientStatus) bool {
	return q.client == "" || cl.Node == q.client || strconv.FormatUint(cl.Stream, 10) == q.client
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

// ServiceDebug is a ServiceView with its subscribers: at most ListCap of
// ClientsTotal.
type ServiceDebug struct {
	ServiceView
	Clients      []ServiceClient `json:"clients"`
	ClientsTotal int             `json:"clientsTotal"`
}

// ServicesDebug is what /debug/services serves: one page of Total.
type ServicesDebug struct {
	Node   string `json:"node"`
	Zone   string `json:"zone"`
	Region string `json:"region"`
	Total  int    `json:"total"`
	Offset int    `json:"offset"`
	// Next is the path of the next page; empty on the last.
	Next     string         `json:"next,omitempty"`
	Services []ServiceDebug `json:"services"`
}

func (d *debugPort) services(w http.ResponseWriter, r *http.Request) {
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
	vq := ViewQuery{Service: q.service, Offset: q.offset, Limit: q.limit}
	if q.client != "" {
		vq.Match = subscribedBy(clients)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v, err := d.agent.Snapshot(ctx, vq)
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

// subscribedBy matches the Service ports that clients subscribe to, by
// cluster name or through a listener.
func subscribedBy(clients []xds.ClientStatus) func(string, []string) bool {
	clusters, listeners := map[string]bool{}, map[string]bool{}
	for _, cl := range clients {
		for _, ts := range cl.Types {
			for _, r := range ts.Resources {
				if ts.TypeURL == xds.ListenerType {
					listeners[r.Name] = true
				} else {
					clusters[portName(r.Name)] = true
				}
			}
		}
	}
	return func(cluster string, ls []string) bool {
		return clusters[cluster] || slices.ContainsFunc(ls, func(l string) bool { return listeners[l] })
	}
}

// ClientsDebug is what /debug/clients serves: one page of Total.
type ClientsDebug struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	// Next is the path of the next page; empty on the last.
	Next    string        `json:"next,omitempty"`
	Clients []ClientDebug `json:"clients"`
}

// ClientDebug is one ADS stream, its lists capped.
type ClientDebug struct {
	xds.ClientStatus
	Types []TypeDebug `json:"types"` // hides ClientStatus.Types
}

// TypeDebug is one type of one stream: at most ListCap of its
// ResourcesTotal subscribed names, their names clipped to MaxNameShown.
type TypeDebug struct {
	xds.TypeStatus
	ResourcesTotal int `json:"resourcesTotal"`
}

// MaxNameShown bounds a resource name in the debug pages. The names the agent
// hands out are far shorter; only junk sent by a client is cut.
const MaxNameShown = 256

func (d *debugPort) clients(w http.ResponseWriter, r *http.Request) {
	q, err := readQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := pageClients(d.xds.Clients(), q, d.agent.cfg.Names)
	out.Next = next(r.URL, q, len(out.Clients), out.Total)
	writeJSON(w, out)
}

// pageClients filters clients, and returns the page q asks for.
func pageClients(all []xds.ClientStatus, q debugQuery, p names.Parser) ClientsDebug {
	matched := all[:0:0]
	for _, cl := range all {
		if q.isClient(&cl) && (q.service == "" || subscribesTo(&cl, q.service, p)) {
			matched = append(matched, cl)
		}
	}
	out := ClientsDebug{Total: len(matched), Offset: q.offset, Clients: []ClientDebug{}}
	for _, cl := range page(matched, q.offset, q.limit) {
		cd := ClientDebug{ClientStatus: cl, Types: make([]TypeDebug, 0, len(cl.Types))}
		cd.ClientStatus.Types = nil
		for _, ts := range cl.Types {
			td := TypeDebug{TypeStatus: ts, ResourcesTotal: len(ts.Resources)}
			td.Resources = slices.Clone(page(ts.Resources, 0, ListCap))
			for i := range td.Resources {
				td.Resources[i].Name = clipName(td.Resources[i].Name)
			}
			cd.Types = append(cd.Types, td)
		}
		out.Clients = append(out.Clients, cd)
	}
	return out
}

// subscribesTo reports whether cl subscribes to any name of the Service
// "namespace/name".
func subscribesTo(cl *xds.ClientStatus, service string, p names.Parser) bool {
	for _, ts := range cl.Types {
		for _, r := range ts.Resources {
			var base string
			if ts.TypeURL == xds.ListenerType {
				base = names.ParseListener(r.Name).Base
			} else if res, err := names.ParseResource(r.Name); err == nil {
				base = res.Base
			}
			if t, err := p.Parse(base); err == nil && t.Service.String() == service {
				return true
			}
		}
	}
	return false
}

func clipName(s string) string {
	if len(s) <= MaxNameShown {
		return s
	}
	cut := MaxNameShown
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
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

// writeJSON encodes v before writing anything, so that a value that cannot
// be encoded is a 500 with the reason, not a 200 with half a body.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "cannot encode the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n')) // an error here is the client gone: nothing to tell it
}

// joinClients adds to each Service port of v the clients that subscribe to
// it: to its cluster's names (the cluster, its route configuration and
// endpoints, and clusters derived from it, named cluster|...), or to a
// listener resolving to it. One pass over the clients' names, so a page costs
// what the clients subscribe to, not that times the page's size.
func joinClients(v View, clients []xds.ClientStatus) ServicesDebug {
	d := ServicesDebug{Node: v.Node, Zone: v.Zone, Region: v.Region, Total: v.Total, Services: make([]ServiceDebug, 0, len(v.Services))}
	byCluster, byListener := map[string]int{}, map[string]int{} // → index in d.Services
	for i, sv := range v.Services {
		d.Services = append(d.Services, ServiceDebug{ServiceView: sv, Clients: []ServiceClient{}})
		byCluster[sv.Cluster] = i
		for _, l := range sv.Listeners {
			byListener[l] = i
		}
	}
	for _, cl := range clients {
		mine := map[int]*ServiceClient{} // this client's entry, by service
		var order []int
		entry := func(i int) *ServiceClient {
			if mine[i] == nil {
				mine[i] = &ServiceClient{Node: cl.Node, Stream: cl.Stream, Via: []string{}}
				order = append(order, i)
			}
			return mine[i]
		}
		for _, ts := range cl.Types {
			var used []int
			for _, r := range ts.Resources {
				i, ok := 0, false
				if ts.TypeURL == xds.ListenerType {
					if i, ok = byListener[r.Name]; ok {
						entry(i).Via = append(entry(i).Via, r.Name)
					}
				} else {
					base := portName(r.Name)
					if i, ok = byCluster[base]; ok && ts.TypeURL == xds.EndpointType && r.Name == base {
						entry(i).EDS = r.State
					}
				}
				if ok && !slices.Contains(used, i) {
					used = append(used, i)
				}
			}
			for _, i := range used {
				entry(i).Types = append(entry(i).Types, ts.Type)
			}
		}
		for _, i := range order {
			s := &d.Services[i]
			s.ClientsTotal++
			if len(s.Clients) < ListCap {
				s.Clients = append(s.Clients, *mine[i])
			}
		}
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
	switch {
	case d.Total == 0:
		fmt.Fprintln(w, "no subscribed services")
	case len(d.Services) < d.Total:
		fmt.Fprintf(w, "services %d to %d of %d", d.Offset+1, d.Offset+len(d.Services), d.Total)
		if d.Next != "" {
			fmt.Fprintf(w, "; next page: %s", d.Next)
		}
		fmt.Fprintln(w)
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
		fmt.Fprintf(w, "  clients: %s", clientsText(s.Clients))
		if more := s.ClientsTotal - len(s.Clients); more > 0 {
			fmt.Fprintf(w, ", and %d more streams", more)
		}
		fmt.Fprintln(w)
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
				if e.Unchecked != "" {
					fmt.Fprint(w, " (not health-checked: over budget)")
				}
				fmt.Fprintln(w)
			}
			if more := p.EndpointsTotal - len(p.Endpoints); more > 0 {
				fmt.Fprintf(w, "%sand %d more\n", strings.Repeat(" ", len(head)), more)
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

// portName is the name of the Service port's own resource that a route,
// cluster or endpoints name belongs to (an endpoint picker's cluster belongs
// to its Service port's); a name the agent never hands out is its own.
func portName(name string) string {
	if r, err := names.ParseResource(name); err == nil {
		return r.Port().String()
	}
	return name
}
