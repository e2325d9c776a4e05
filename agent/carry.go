// Carrying out a build: the loop's side of building, where what the
// builder asks of the agent is done.

package agent

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// newBuilder returns the builder of a's node, reading a's model.
func newBuilder(a *Agent) *builder {
	return &builder{
		names:     a.cfg.Names,
		service:   func(k discovery.ServiceKey) (*discovery.Service, bool) { return a.store.Service(k) },
		config:    a.config,
		endpoints: a.endpoints,
		here:      a.hereFor,
		health:    a.checker.Status,
		failOpen:  func(cluster string) bool { return a.failOpen[cluster] },
		maxPicker: a.cfg.MaxPickerEndpoints,
		routes:    a.store.Routes,
		grants:    a.store.Grants,

		selecting:            a.store.Selecting,
		namespaceAnnotations: a.namespaceAnnotations,
		podsAdmitted:         a.cfg.PodsAdmitted,
		trustDomain:          a.cfg.TrustDomain,
		late:                 a.late,
	}
}

// build builds one subscribed name, does what the build asks, and stores
// the resource in the cache.
func (a *Agent) build(k discovery.ServiceKey, typ, name string, observed time.Time) {
	a.metrics.Builds.WithLabelValues(xds.ShortType(typ)).Inc()
	ref, _ := a.subs.ref(typ, name)
	out := a.builder.build(k, typ, name, ref)
	if out.checks != nil && a.trackChecks(name, out.checks) {
		// Tracking stopped a check this build read: build with what is
		// known now (the same endpoints, so tracking again changes nothing).
		out = a.builder.build(k, typ, name, ref)
	}
	if out.picker != nil {
		if svc, ok := a.store.Service(k); ok {
			a.report(out.picker.port+"/picker", svc, out.picker.errs)
		}
	}
	if out.workaround != "" {
		a.metrics.ClientWorkarounds.WithLabelValues(out.workaround).Inc()
	}
	if typ == xds.ListenerType && out.resource == nil {
		a.log.Debug("listener name does not resolve (yet)", "name", name)
	}
	a.set(typ, name, out.resource, out.scope, observed)
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

// hereFor is where a view's node sits.
func (a *Agent) hereFor(view string) topology.Here {
	if view == "" || view == a.cfg.NodeName {
		return a.here
	}
	n, _ := a.store.Node(view)
	return topology.Here{Node: view, Zone: n.Zone, Region: n.Region}
}

// Absent is what the ADS server tells a client of a name it may not see: as
// the builder would for a name with no Service port behind it.
func (a *Agent) Absent(typ, name string) proto.Message { return absent(typ, name, a.cfg.Names) }

func (a *Agent) set(typ, name string, res proto.Message, scope xds.Scope, observed time.Time) {
	if err := a.cache.Set(typ, name, res, scope, observed); err != nil {
		a.log.Error("cannot store resource", "type", typ, "name", name, "error", err)
	}
}
