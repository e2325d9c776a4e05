package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// ServiceView is what the agent serves for one subscribed Service port: the
// answer to "why does my client on this node go to that pod?".
type ServiceView struct {
	Cluster   string   `json:"cluster"` // canonical name of the port's resources
	Service   string   `json:"service"` // namespace/name
	Port      int32    `json:"port"`
	Exists    bool     `json:"exists"` // false: deleted, served with no endpoints
	Policy    string   `json:"policy"` // tiers, e.g. "node,zone,region,*"
	Source    string   `json:"source"` // the rule that chose the policy
	MinTier   int      `json:"minTierEndpoints"`
	Errors    []string `json:"annotationErrors,omitempty"`
	FailOpen  bool     `json:"failOpen,omitempty"`
	Listeners []string `json:"listeners"` // names clients dialled
	// Priorities in EDS order; nil when no endpoint may be used.
	Priorities []PriorityView `json:"priorities"`
	// Routes, when Gateway API routes name the Service as a parent.
	Routes *RoutesView `json:"routes,omitempty"`
	// MTLS is its nodexds.io/mtls mode; AllowFrom the identities its
	// servers accept calls from when strict ("ns/sa", "ns/*", "*");
	// ServerIdentities what its clients accept from its servers.
	MTLS             string   `json:"mtls"`
	AllowFrom        []string `json:"allowFrom,omitempty"`
	ServerIdentities []string `json:"serverIdentities,omitempty"`
	// LateClients is how clients that redial when their TLS settings
	// change are moved with the servers (latetls.go); nil until the
	// Service first moves between plaintext and TLS.
	LateClients *LateClientsView `json:"lateClients,omitempty"`
}

// LateClientsView is where a Service's late clients are in its moves.
type LateClientsView struct {
	Generation uint32 `json:"generation"`       // of the clusters their routes name (name!N)
	TLS        bool   `json:"tls"`              // what that generation's clusters have
	Moving     string `json:"moving,omitempty"` // "" (no move), "naming" or "filling"
	Next       string `json:"next,omitempty"`   // when the move takes its next step (RFC 3339)
}

// RoutesView is how Gateway API routes route a port for clients that get
// the producer's routes; namespaces with routes of their own are listed.
type RoutesView struct {
	Used    []string `json:"used"`              // "GRPCRoute ns/name"
	Refused []string `json:"refused,omitempty"` // with why
	// Rules in precedence order, at most ListCap of RulesTotal, e.g.
	// "path prefix /pkg.Svc, header env=canary → checkout.shop:8080 90, checkout-v2.shop:8080 10".
	Rules      []string `json:"rules"`
	RulesTotal int      `json:"rulesTotal"`
	// Consumers are the namespaces whose clients get routes of their own.
	Consumers []string `json:"consumerNamespaces,omitempty"`
}

// PriorityView is one EDS priority.
type PriorityView struct {
	Tiers string `json:"tiers"`
	// Endpoints lists at most ListCap of the priority's EndpointsTotal.
	Endpoints      []EndpointView `json:"endpoints"`
	EndpointsTotal int            `json:"endpointsTotal"`
}

// EndpointView is one endpoint as served.
type EndpointView struct {
	Addr   string `json:"addr"`
	Pod    string `json:"pod,omitempty"`
	Node   string `json:"node,omitempty"`
	Zone   string `json:"zone,omitempty"`
	Region string `json:"region,omitempty"`
	Ready  bool   `json:"ready"`
	Health string `json:"health"`
	// Unchecked says why health checking does not check this endpoint
	// (its health is then what Kubernetes reports); empty when it does.
	Unchecked string `json:"unchecked,omitempty"`
}

// ListCap bounds every list nested in a debug page entry (endpoints of a
// priority, clients of a Service, resources of a client's type): a page's
// size depends on its limit, never on how big the cluster or a client is.
// Each capped list comes with its total.
const ListCap = 100

// View is the agent's state for the debug endpoints: one page of the
// subscribed Service ports that a ViewQuery selects.
type View struct {
	Node     string        `json:"node"`
	Zone     string        `json:"zone"`
	Region   string        `json:"region"`
	Total    int           `json:"total"` // matching Service ports, of which Services is a page
	Services []ServiceView `json:"services"`
}

// ViewQuery selects what Snapshot returns.
type ViewQuery struct {
	// Service keeps only the ports of this Service ("namespace/name"); ""
	// keeps all.
	Service string
	// Match, when set, keeps only the ports it accepts, given their cluster
	// name and the listener names that resolve to it. It runs on the agent's
	// event loop: it must be cheap and must not block.
	Match func(cluster string, listeners []string) bool
	// Offset and Limit select a page, in cluster name order; Limit ≤ 0 means
	// all. Only the page's endpoints are computed.
	Offset, Limit int
}

type viewRequest struct {
	q     ViewQuery
	reply chan View
}

// Snapshot returns what the agent currently serves, computed by the goroutine
// that owns the model (so it is consistent), sorted by cluster name.
func (a *Agent) Snapshot(ctx context.Context, q ViewQuery) (View, error) {
	req := viewRequest{q: q, reply: make(chan View, 1)}
	select {
	case a.debug <- req:
	case <-ctx.Done():
		return View{}, ctx.Err()
	}
	select {
	case v := <-req.reply:
		return v, nil
	case <-ctx.Done():
		return View{}, ctx.Err()
	}
}

// view builds the View; called by Run.
func (a *Agent) view(q ViewQuery) View {
	type port struct {
		sv  ServiceView
		svc *discovery.Service
	}
	var all []port
	for _, k := range a.subs.services() {
		if q.Service != "" && k.String() != q.Service {
			continue
		}
		byType := a.subs.of(k)
		clusters := map[string]string{} // name → a type it is subscribed as
		for _, typ := range []string{xds.RouteType, xds.ClusterType, xds.EndpointType} {
			for _, n := range byType[typ] {
				clusters[n] = typ
			}
		}
		svc, _ := a.store.Service(k)
		for name, typ := range clusters {
			ref, _ := a.subs.ref(typ, name)
			if ref.Subset != names.AllEndpoints || ref.NoRingHash || ref.MTLS || ref.LateTLS {
				// Endpoint-picker clusters are shown through their Service, a
				// cluster's cached variants through its route and endpoints.
				continue
			}
			sv := ServiceView{Cluster: name, Service: k.String(), Port: ref.port, FailOpen: a.failOpen[name], Listeners: []string{}}
			for _, l := range byType[xds.ListenerType] {
				lr := names.ParseListener(l)
				if c, _, err := a.builder.resolve(lr.Base, svc); err == nil && (names.Resource{Base: c, View: lr.View}) == ref.Port() { // a moved generation too
					sv.Listeners = append(sv.Listeners, l)
				}
			}
			if q.Match != nil && !q.Match(sv.Cluster, sv.Listeners) {
				continue
			}
			slices.Sort(sv.Listeners)
			all = append(all, port{sv, svc})
		}
	}
	slices.SortFunc(all, func(x, y port) int { return strings.Compare(x.sv.Cluster, y.sv.Cluster) })
	v := View{Node: a.here.Node, Zone: a.here.Zone, Region: a.here.Region, Total: len(all), Services: []ServiceView{}}
	for _, p := range Page(all, q.Offset, q.Limit) {
		if p.svc != nil {
			if sp, ok := p.svc.PortNumber(p.sv.Port); ok {
				a.fillView(&p.sv, p.svc, sp)
			}
		}
		v.Services = append(v.Services, p.sv)
	}
	return v
}

// Page returns s[offset:offset+limit], clamped; limit ≤ 0 means no limit: a
// page of a list, as ViewQuery selects one.
func Page[T any](s []T, offset, limit int) []T {
	offset = min(max(offset, 0), len(s))
	s = s[offset:]
	if limit > 0 && limit < len(s) {
		s = s[:limit]
	}
	return s
}

func (a *Agent) fillView(sv *ServiceView, svc *discovery.Service, p discovery.Port) {
	sv.Exists = true
	cfg := a.config(svc) // what its resources were built from
	errs := cfg.errs
	policy := cfg.policy
	sv.Policy, sv.Source, sv.MinTier = policy.Tiers.String(), string(policy.Source), policy.MinTierEndpoints
	for _, e := range errs {
		sv.Errors = append(sv.Errors, e.Error())
	}
	status := a.builder.status(cfg, a.failOpen[sv.Cluster]) // what clients are told
	unchecked := map[netip.AddrPort]bool{}
	if u, ok := a.checker.(interface{ Unchecked(string) []health.Target }); ok && cfg.health.Enabled {
		for _, t := range u.Unchecked(sv.Cluster) {
			unchecked[t.Addr] = true
		}
	}
	sv.Routes = a.routesView(svc, p)
	sv.MTLS = cfg.trust.Mode.String()
	if cfg.trust.Mode != trust.Disabled {
		for _, p := range cfg.trust.AllowFrom {
			sv.AllowFrom = append(sv.AllowFrom, p.String())
		}
		for _, m := range cfg.trust.ServerMatches(a.cfg.TrustDomain) {
			sv.ServerIdentities = append(sv.ServerIdentities, m.String())
		}
	}
	sv.LateClients = a.late(svc.Key).view(cfg.trust.Mode.TLS(), a.cfg.Handover)
	for _, pr := range topology.Prioritize(a.store.Endpoints(svc.Key, p.Name), policy, a.here) {
		pv := PriorityView{Tiers: pr.Tiers.String(), EndpointsTotal: len(pr.Endpoints)}
		for _, e := range Page(pr.Endpoints, 0, ListCap) {
			st := health.Unknown
			if status != nil {
				st = status(e.Addr)
			}
			ev := EndpointView{
				Addr: e.Addr.String(), Pod: e.Pod, Node: e.Node, Zone: e.Zone, Region: e.Region,
				Ready: e.Ready, Health: st.String(),
			}
			if unchecked[e.Addr] {
				ev.Unchecked = health.UncheckedReason
			}
			pv.Endpoints = append(pv.Endpoints, ev)
		}
		sv.Priorities = append(sv.Priorities, pv)
	}
}
