package agent

import (
	"context"
	"slices"
	"strings"

	"github.com/nodexds/nodexds/agent/topology"
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
}

// PriorityView is one EDS priority.
type PriorityView struct {
	Tiers     string         `json:"tiers"`
	Endpoints []EndpointView `json:"endpoints"`
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
}

// View is the agent's state for the debug endpoints.
type View struct {
	Node     string        `json:"node"`
	Zone     string        `json:"zone"`
	Region   string        `json:"region"`
	Services []ServiceView `json:"services"`
}

// Snapshot returns what the agent currently serves, computed by the goroutine
// that owns the model (so it is consistent), sorted by cluster name.
func (a *Agent) Snapshot(ctx context.Context) (View, error) {
	reply := make(chan View, 1)
	select {
	case a.debug <- reply:
	case <-ctx.Done():
		return View{}, ctx.Err()
	}
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		return View{}, ctx.Err()
	}
}

// view builds the View; called by Run.
func (a *Agent) view() View {
	v := View{Node: a.here.Node, Zone: a.here.Zone, Region: a.here.Region, Services: []ServiceView{}}
	for _, k := range a.subs.services() {
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
			if ref.subset != "" {
				continue // endpoint-picker clusters are shown through their Service
			}
			port := ref.port
			sv := ServiceView{Cluster: name, Service: k.String(), Port: port, FailOpen: a.failOpen[name], Listeners: []string{}}
			for _, l := range byType[xds.ListenerType] {
				if c, err := a.resolve(l, svc); err == nil && c == name {
					sv.Listeners = append(sv.Listeners, l)
				}
			}
			slices.Sort(sv.Listeners)
			if svc != nil {
				if p, ok := svc.PortNumber(port); ok {
					a.fillView(&sv, svc, p)
				}
			}
			v.Services = append(v.Services, sv)
		}
	}
	slices.SortFunc(v.Services, func(x, y ServiceView) int { return strings.Compare(x.Cluster, y.Cluster) })
	return v
}

func (a *Agent) fillView(sv *ServiceView, svc *discovery.Service, p discovery.Port) {
	sv.Exists = true
	cfg, errs := a.readConfig(svc)
	policy := cfg.policy
	sv.Policy, sv.Source, sv.MinTier = policy.Tiers.String(), string(policy.Source), policy.MinTierEndpoints
	for _, e := range errs {
		sv.Errors = append(sv.Errors, e.Error())
	}
	status := a.status(sv.Cluster, cfg) // what clients are told
	for _, pr := range topology.Prioritize(a.store.Endpoints(svc.Key, p.Name), policy, a.here) {
		pv := PriorityView{Tiers: pr.Tiers.String()}
		for _, e := range pr.Endpoints {
			st := health.Unknown
			if status != nil {
				st = status(e.Addr)
			}
			pv.Endpoints = append(pv.Endpoints, EndpointView{
				Addr: e.Addr.String(), Pod: e.Pod, Node: e.Node, Zone: e.Zone, Region: e.Region,
				Ready: e.Ready, Health: st.String(),
			})
		}
		sv.Priorities = append(sv.Priorities, pv)
	}
}
