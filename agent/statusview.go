package agent

import (
	"context"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/routestatus"
	"github.com/nodexds/nodexds/discovery"
)

// RouteStatuses computes the status (mesh.Status) of every route the agent
// knows, sorted by key, from a consistent model: what routestatus.Writer
// writes. The event loop only copies what the statuses read (routes, the
// Services and grants they name: values the store replaces, never edits);
// the statuses are computed here, off the loop, so that many routes never
// hold up a change.
func (a *Agent) RouteStatuses(ctx context.Context) ([]routestatus.Route, error) {
	var m routeModel
	if err := a.read(ctx, func() { m = copyRouteModel(a.store) }); err != nil {
		return nil, err
	}
	out := make([]routestatus.Route, 0, len(m.routes))
	for _, r := range m.routes {
		out = append(out, routestatus.Route{
			Key: r.Key, UID: r.UID, Generation: r.Generation,
			Parents: mesh.Status(r, m.service, m.grantsOf, m.attachedTo),
		})
	}
	return out, nil
}

// routeModel is the part of the model route statuses read.
type routeModel struct {
	routes   []*discovery.Route
	services map[discovery.ServiceKey]*discovery.Service
	grants   map[string][]*discovery.Grant
	attached map[discovery.ServiceKey][]*discovery.Route
}

func copyRouteModel(s *discovery.Store) routeModel {
	m := routeModel{
		routes:   s.AllRoutes(),
		services: map[discovery.ServiceKey]*discovery.Service{},
		grants:   map[string][]*discovery.Grant{},
		attached: map[discovery.ServiceKey][]*discovery.Route{},
	}
	for _, r := range m.routes {
		for _, k := range append(r.ParentServices(), r.BackendServices()...) {
			if svc, ok := s.Service(k); ok {
				m.services[k] = svc
			}
			if _, ok := m.grants[k.Namespace]; !ok {
				m.grants[k.Namespace] = s.Grants(k.Namespace)
			}
		}
		for _, k := range r.ParentServices() {
			if _, ok := m.attached[k]; !ok {
				m.attached[k] = s.Routes(k)
			}
		}
	}
	return m
}

func (m routeModel) service(k discovery.ServiceKey) (*discovery.Service, bool) {
	svc, ok := m.services[k]
	return svc, ok
}

func (m routeModel) grantsOf(ns string) []*discovery.Grant { return m.grants[ns] }

func (m routeModel) attachedTo(k discovery.ServiceKey) []*discovery.Route { return m.attached[k] }

// read runs f on the event loop, which owns the model, and waits for it.
func (a *Agent) read(ctx context.Context, f func()) error {
	done := make(chan struct{})
	return roundTrip(ctx, a.reads, func() { f(); close(done) }, done)
}
