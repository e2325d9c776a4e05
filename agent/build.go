// Building: one subscribed name of one Service into its xDS resource, for
// the view (node) the name is of.

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// build computes one resource and stores it in the cache.
func (a *Agent) build(k discovery.ServiceKey, typ, name string, observed time.Time) {
	a.metrics.Builds.WithLabelValues(xds.ShortType(typ)).Inc()
	svc, _ := a.store.Service(k)
	var scope xds.Scope
	if svc != nil {
		scope = a.scope(svc)
	}
	set := func(res proto.Message) { a.set(typ, name, res, scope, observed) }
	switch typ {
	case xds.ListenerType:
		// name may be another node's view of the listener the client named.
		l := names.ParseListener(name)
		canonical, err := a.resolve(l.Base, svc)
		if err != nil {
			a.log.Debug("listener name does not resolve (yet)", "name", name, "error", err)
			a.set(typ, name, nil, xds.Scope{}, observed)
			return
		}
		set(resources.Listener(l.Base, names.Resource{Base: canonical, View: l.View}.String()))

	case xds.RouteType, xds.ClusterType, xds.EndpointType:
		ref, _ := a.subs.ref(typ, name)
		var p discovery.Port
		exists := false
		if svc != nil {
			p, exists = svc.PortNumber(ref.port)
		}
		if !exists {
			if typ == xds.EndpointType && ref.Subset == names.AllEndpoints {
				a.checker.Track(name, nil)
			}
			a.set(typ, name, a.absent(typ, name), xds.Scope{}, observed)
			return
		}
		cfg := a.config(svc)
		unmarked := ref.Resource
		unmarked.NoRingHash = false
		switch {
		case typ == xds.RouteType:
			picks, fail := a.picks(svc, p, ref.Port(), cfg)
			set(resources.RouteConfig(name, name, cfg.lb, picks, fail))
		case typ == xds.ClusterType && ref.Subset == names.AllEndpoints:
			lb := cfg.lb
			if ref.NoRingHash && lb.Policy == resources.RingHash {
				lb.Policy = resources.RoundRobin
				a.metrics.ClientWorkarounds.WithLabelValues("ring_hash_as_round_robin").Inc()
			}
			set(resources.Cluster(unmarked.String(), lb))
		case typ == xds.ClusterType:
			set(resources.Cluster(unmarked.String(), resources.DefaultLB))
		case ref.Subset == names.AllEndpoints:
			set(a.loadAssignment(svc, p, name, ref.View, cfg))
		case ref.Subset == names.NoEndpoint:
			set(resources.LoadAssignment(name, nil, nil))
		default:
			set(a.pickedEndpoint(svc, p, ref.Port().String(), name, ref.Endpoint, cfg))
		}
	}
}

// absent is what clients are told of a name whose Service port does not
// exist (and, by the ADS server, of one they may not see). Clients keep
// deleted listeners and clusters (ignore_resource_deletion), so the load
// assignment of a name the agent hands out says "no endpoints": RPCs fail
// fast. Everything else is absent.
func (a *Agent) absent(typ, name string) proto.Message {
	if typ != xds.EndpointType {
		return nil
	}
	if _, _, err := parseCanonical(name, a.cfg.Names); err != nil {
		return nil
	}
	return resources.LoadAssignment(name, nil, nil)
}

func (a *Agent) resolve(name string, svc *discovery.Service) (string, error) {
	t, err := a.cfg.Names.Parse(name)
	if err != nil {
		return "", err
	}
	if svc == nil {
		return "", errors.New("no such service " + t.Service.String())
	}
	p, err := names.Resolve(t, svc)
	if err != nil {
		return "", err
	}
	return a.cfg.Names.Canonical(svc.Key, p.Port), nil
}

// loadAssignment prioritizes a Service port's endpoints for this node, with
// what active health checking knows about them.
func (a *Agent) loadAssignment(svc *discovery.Service, p discovery.Port, name, view string, cfg serviceConfig) proto.Message {
	prios := topology.Prioritize(a.endpoints(svc.Key, p.Name).list, cfg.policy, a.hereFor(view))
	var targets []health.Target
	if cfg.health.Enabled {
		for _, pr := range prios {
			for _, e := range pr.Endpoints {
				targets = append(targets, health.Target{Addr: e.Addr, Service: cfg.health.Name})
			}
		}
	}
	a.checker.Track(name, targets)
	list := make([]health.Status, len(targets))
	for i, t := range targets {
		list[i] = a.checker.Status(t)
	}
	if failOpen := health.FailOpen(list); failOpen != a.failOpen[name] {
		if failOpen {
			a.log.Warn("every endpoint fails its health checks: serving them all rather than none", "cluster", name, "endpoints", len(list))
		} else {
			a.log.Info("health checks pass again: no longer failing open", "cluster", name)
		}
		a.setFailOpen(name, failOpen)
	}
	return resources.LoadAssignment(name, prios, a.status(name, cfg))
}

// picks lists the endpoints a request may pick by header, and the cluster for
// requests that name none when the Service fails them closed. Members are the
// Service port's serving endpoints, minus those failing health checks.
func (a *Agent) picks(svc *discovery.Service, p discovery.Port, port names.Resource, cfg serviceConfig) ([]resources.Pick, string) {
	if cfg.lb.EndpointHeader == "" {
		return nil, ""
	}
	canonical := port.String()
	eps := a.endpoints(svc.Key, p.Name).list
	if len(eps) > a.cfg.MaxPickerEndpoints {
		a.report(canonical+"/picker", svc, []*discovery.AnnotationError{{
			Key: resources.AnnotationEndpointHeader, Value: cfg.lb.EndpointHeader,
			Err: fmt.Errorf("port %d has %d endpoints, more than the agent's limit of %d: endpoint picking is off", p.Port, len(eps), a.cfg.MaxPickerEndpoints),
		}})
		return nil, ""
	}
	a.report(canonical+"/picker", svc, nil)
	status := a.status(canonical, cfg)
	var picks []resources.Pick
	for _, e := range eps {
		if !e.Serving || (status != nil && status(e.Addr) == health.Unhealthy) {
			continue
		}
		picked := port
		picked.Subset, picked.Endpoint = names.OneEndpoint, e.Addr
		pk := resources.Pick{Cluster: picked.String(), Values: []string{e.Addr.String()}}
		if e.Pod != "" {
			pk.Values = append([]string{e.Pod}, pk.Values...)
		}
		picks = append(picks, pk)
	}
	fail := ""
	if cfg.lb.PickerFailClosed {
		none := port
		none.Subset = names.NoEndpoint
		fail = none.String()
	}
	return picks, fail
}

// pickedEndpoint is the load assignment of one endpoint-picker cluster.
func (a *Agent) pickedEndpoint(svc *discovery.Service, p discovery.Port, canonical, name string, addr netip.AddrPort, cfg serviceConfig) proto.Message {
	pe := a.endpoints(svc.Key, p.Name)
	if i, ok := pe.index()[addr]; ok && pe.list[i].Serving {
		return resources.SingleEndpoint(name, &pe.list[i], a.status(canonical, cfg))
	}
	return resources.SingleEndpoint(name, nil, nil)
}

// portEndpoints is a Service port's merged endpoints, with an index by
// address built on first use.
type portEndpoints struct {
	list   []discovery.Endpoint
	byAddr map[netip.AddrPort]int
}

func (pe *portEndpoints) index() map[netip.AddrPort]int {
	if pe.byAddr == nil {
		pe.byAddr = make(map[netip.AddrPort]int, len(pe.list))
		for i, e := range pe.list {
			pe.byAddr[e.Addr] = i
		}
	}
	return pe.byAddr
}

// endpoints returns a Service port's endpoints, merged from its slices once
// per loop iteration however many resources are built from them: the
// endpoint picker builds one load assignment per member, which would
// otherwise merge (and scan) every slice per member.
func (a *Agent) endpoints(k discovery.ServiceKey, port string) *portEndpoints {
	key := portKey{k, port}
	if pe := a.merged[key]; pe != nil {
		return pe
	}
	pe := &portEndpoints{list: a.store.Endpoints(k, port)}
	a.merged[key] = pe
	return pe
}

type portKey struct {
	svc  discovery.ServiceKey
	port string
}

func (a *Agent) set(typ, name string, res proto.Message, scope xds.Scope, observed time.Time) {
	if err := a.cache.Set(typ, name, res, scope, observed); err != nil {
		a.log.Error("cannot store resource", "type", typ, "name", name, "error", err)
	}
}
