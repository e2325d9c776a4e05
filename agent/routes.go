package agent

import (
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
		if len(k) > 6 && k[:6] == "route " {
			refused++
		}
	}
	a.metrics.Routes.WithLabelValues("refused").Set(float64(refused))
	a.metrics.Routes.WithLabelValues("usable").Set(float64(a.store.RouteCount() - refused))
}
