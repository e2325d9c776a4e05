package agent

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/discovery"
)

// RouteReporter is told about Gateway API routes that cannot be used, so
// they can be surfaced on the route (a Kubernetes Event). A Reporter that
// implements it is told.
type RouteReporter interface {
	RouteRefused(r *discovery.Route, p *mesh.Problem)
}

// checkRoute reports a route that cannot be used, once per problem, and
// keeps the route gauge current.
func (a *Agent) checkRoute(r *discovery.Route, deleted bool) {
	key := "route " + r.Key.String()
	var p *mesh.Problem
	if !deleted {
		p = mesh.Refused(r)
	}
	switch {
	case p == nil:
		delete(a.reported, key)
	case a.reported[key] != p.Message:
		a.reported[key] = p.Message
		a.log.Warn("not using route", "route", r.Key.String(), "reason", p.Reason, "error", p.Message)
		if rr, ok := a.reporter.(RouteReporter); ok {
			rr.RouteRefused(r, p)
		}
	}
	refused := 0
	for k := range a.reported {
		if strings.HasPrefix(k, "route ") {
			refused++
		}
	}
	a.metrics.Routes.WithLabelValues("refused").Set(float64(refused))
	a.metrics.Routes.WithLabelValues("usable").Set(float64(a.store.RouteCount() - refused))
}

// routesView describes a port's routes for the debug pages; nil when no
// route names the Service.
func (a *Agent) routesView(svc *discovery.Service, p discovery.Port) *RoutesView {
	attached := a.store.Routes(svc.Key)
	if len(attached) == 0 {
		return nil
	}
	v := &RoutesView{Used: []string{}, Rules: []string{}}
	for _, r := range attached {
		if pr := mesh.Refused(r); pr != nil {
			v.Refused = append(v.Refused, r.Key.String()+": "+pr.Message)
		} else if ns := r.Key.Namespace; ns != svc.Key.Namespace && !slices.Contains(v.Consumers, ns) &&
			mesh.Consumes(mesh.Input{Parent: svc.Key, Port: p, Client: ns, Routes: attached}) {
			v.Consumers = append(v.Consumers, ns)
		}
	}
	t := mesh.Translate(mesh.Input{Parent: svc.Key, Port: p, Routes: attached, Service: a.store.Service, Grants: a.store.Grants})
	if t == nil {
		return v
	}
	for _, k := range t.Used {
		v.Used = append(v.Used, k.String())
	}
	v.RulesTotal = len(t.Rules)
	for _, r := range Page(t.Rules, 0, ListCap) {
		v.Rules = append(v.Rules, describeRule(r))
	}
	return v
}

// describeRule says what a rule matches and where it sends, in a line.
func describeRule(r mesh.Rule) string {
	var conds []string
	switch r.Match.Path.Kind {
	case mesh.ExactPath:
		conds = append(conds, "path "+r.Match.Path.Value)
	case mesh.PrefixPath:
		conds = append(conds, "path prefix "+r.Match.Path.Value)
	case mesh.RegexPath:
		conds = append(conds, "path ~ "+r.Match.Path.Value)
	}
	for _, h := range r.Match.Headers {
		op := "="
		if h.Regex {
			op = " ~ "
		}
		conds = append(conds, "header "+h.Name+op+h.Value)
	}
	if len(conds) == 0 {
		conds = []string{"any request"}
	}
	var to []string
	for _, b := range r.Backends {
		if b.Unresolved {
			to = append(to, fmt.Sprintf("UNAVAILABLE %d", b.Weight))
			continue
		}
		to = append(to, fmt.Sprintf("%s.%s:%d %d", b.Service.Name, b.Service.Namespace, b.Port, b.Weight))
	}
	if len(to) == 0 {
		to = []string{"UNAVAILABLE"}
	}
	out := strings.Join(conds, ", ") + " → " + strings.Join(to, ", ")
	if r.Timeout > 0 {
		out += " (timeout " + r.Timeout.String() + ")"
	}
	return out + "  [" + r.Route.String() + "]"
}
