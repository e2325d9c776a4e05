// Building: one subscribed name of one Service into its xDS resource, for
// the view (node) the name is of. The builder only reads the model; what a
// build asks of the agent (endpoints to check, errors to report) comes back
// with the resource, and the agent's loop carries it out (see Agent.build).

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// builder builds one node's resources from the model. Its functions read
// what the agent knows; none of them changes it.
type builder struct {
	names     names.Parser
	service   func(discovery.ServiceKey) (*discovery.Service, bool)
	config    func(*discovery.Service) *serviceConfig
	endpoints func(discovery.ServiceKey, string) *portEndpoints
	here      func(view string) topology.Here
	health    func(health.Target) health.Status
	failOpen  func(cluster string) bool // as last decided, for picker routes and picked endpoints
	maxPicker int
	// routes are the Gateway API routes naming a Service as a parent, and
	// grants a namespace's ReferenceGrants.
	routes func(discovery.ServiceKey) []*discovery.Route
	grants func(namespace string) []*discovery.Grant
	// selecting finds the Service ports whose endpoints are a pod of this
	// node at a port; namespaceAnnotations a namespace's defaults.
	selecting            func(netip.AddrPort) []discovery.Selection
	namespaceAnnotations func(string) map[string]string
	podsAdmitted         bool
	trustDomain          string
	// late is where a Service's late clients are in its moves between
	// plaintext and TLS (latetls.go).
	late func(k discovery.ServiceKey) late
}

// built is one resource, and what building it asks of the agent.
type built struct {
	resource proto.Message // nil: the name is absent
	scope    xds.Scope
	// checks, for a Service port's own load assignment, are its endpoints
	// to check (nil slice: none) and whether they all fail.
	checks *checks
	// picker, for a route of a Service with the endpoint picker on, is
	// what the picker could not do (empty: nothing), reported under the
	// Service port's name.
	picker *pickerReport
	// workaround names the client workaround applied, if any.
	workaround string
}

type checks struct {
	targets  []health.Target
	failOpen bool
}

type pickerReport struct {
	port string
	errs []*discovery.AnnotationError
}

// build builds the resource of one subscribed name. ref is what the name
// refers to (zero for a listener).
func (b *builder) build(k discovery.ServiceKey, typ, name string, ref portRef) built {
	svc, _ := b.service(k)
	var out built
	var cfg *serviceConfig
	if svc != nil {
		cfg = b.config(svc)
		out.scope = cfg.scope
	}
	if typ == xds.ListenerType {
		// name may be another node's view of the listener the client named.
		l := names.ParseListener(name)
		canonical, port, err := b.resolve(l.Base, svc)
		if err != nil {
			return built{} // does not resolve (yet)
		}
		rc := names.Resource{Base: canonical, View: l.View}
		if b.consumes(svc, port, l.Client) {
			rc.Client = l.Client
		}
		out.resource = resources.Listener(l.Base, rc.String())
		return out
	}
	var p discovery.Port
	exists := false
	if svc != nil {
		p, exists = svc.PortNumber(ref.port)
	}
	if !exists {
		out = built{resource: absent(typ, name, b.names)}
		if typ == xds.EndpointType && ref.Subset == names.AllEndpoints {
			out.checks = &checks{}
		}
		return out
	}
	unmarked := ref.Resource
	unmarked.NoRingHash, unmarked.MTLS, unmarked.LateTLS = false, false, false
	switch {
	case typ == xds.RouteType:
		out.resource, out.picker = b.route(unmarked.String(), svc, p, ref, cfg)
		if ref.LateTLS {
			b.lateRoute(out.resource)
		}
	case typ == xds.EndpointType && ref.Gen != 0 && b.late(k).withheld(ref.Gen):
		// A move's fresh cluster, filled once the servers have moved.
	case typ == xds.ClusterType && ref.Subset == names.AllEndpoints:
		lb := cfg.lb
		if ref.NoRingHash && lb.Policy == resources.RingHash {
			lb.Policy = resources.RoundRobin
			out.workaround = "ring_hash_as_round_robin"
		}
		out.resource = b.secure(resources.Cluster(unmarked.String(), lb), ref, cfg)
	case typ == xds.ClusterType:
		out.resource = b.secure(resources.Cluster(unmarked.String(), resources.DefaultLB), ref, cfg)
	case ref.Subset == names.AllEndpoints:
		out.resource, out.checks = b.loadAssignment(svc, p, name, ref.View, cfg)
	case ref.Subset == names.NoEndpoint:
		out.resource = resources.LoadAssignment(name, nil, nil)
	default:
		out.resource = b.pickedEndpoint(svc, p, ref.Port().String(), name, ref.Endpoint, cfg)
	}
	return out
}

// secure gives a cluster the Service's mTLS settings, for clients that can
// use them (the #mtls variant); the others are sent plaintext, which a
// Service's servers accept until they hand over to TLS.
func (b *builder) secure(c *clusterv3.Cluster, ref portRef, cfg *serviceConfig) *clusterv3.Cluster {
	tls := cfg.trust.Mode.TLS()
	if ref.LateTLS {
		tls = b.late(cfg.of.Key).tls(tls, ref.Gen)
	}
	if ref.MTLS && tls {
		c.TransportSocket = resources.UpstreamTLS(xds.CertProvider, cfg.trust.ServerMatches(b.trustDomain))
	}
	return c
}

// lateRoute readies a route configuration for late clients (latetls.go):
// each cluster it names is of the generation its Service is at, and while
// one is moving, calls that fail UNAVAILABLE are retried (moveRetry), unless
// the Service has retries of its own. The route is built anew for each
// call.
func (b *builder) lateRoute(rc proto.Message) {
	gen := func(cluster string) (string, bool) {
		k, ref, err := parseCanonical(cluster, b.names)
		if err != nil || ref.Subset == names.NoEndpoint { // no endpoints, so no transport to move
			return cluster, false
		}
		l := b.late(k)
		ref.Gen = l.gen
		return ref.String(), l.moving
	}
	for _, vh := range rc.(*routev3.RouteConfiguration).GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			moving := false
			if c := a.GetCluster(); c != "" {
				c, moving = gen(c)
				a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: c}
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				var m bool
				wc.Name, m = gen(wc.Name)
				moving = moving || m
			}
			if moving && a.RetryPolicy == nil {
				a.RetryPolicy = resources.RetryPolicy(moveRetry)
			}
		}
	}
}

// moveRetry is how a late client's calls are retried while a Service they
// go to moves between plaintext and TLS. grpc-js-xds holds a fresh
// cluster back until it has endpoints, so its calls of the moment after the
// servers moved fail on the old cluster's connections; by the time these
// retries run out (0.1 + 0.2 + 0.4 + 0.8 s at most, each a random part of
// that), the old cluster has the new TLS settings too.
var moveRetry = resources.Retry{On: []string{"unavailable"}, Attempts: 5, BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}

// absent is what clients are told of a name whose Service port does not
// exist (and, by the ADS server, of one they may not see). Clients keep
// deleted listeners and clusters (ignore_resource_deletion), so the load
// assignment of a name the agent hands out says "no endpoints": RPCs fail
// fast. Everything else is absent.
func absent(typ, name string, p names.Parser) proto.Message {
	if typ != xds.EndpointType {
		return nil
	}
	if _, _, err := parseCanonical(name, p); err != nil {
		return nil
	}
	return resources.LoadAssignment(name, nil, nil)
}

// resolve returns the canonical name of the Service port a listener name
// asks for, and the port.
func (b *builder) resolve(name string, svc *discovery.Service) (string, discovery.Port, error) {
	t, err := b.names.Parse(name)
	if err != nil {
		return "", discovery.Port{}, err
	}
	if svc == nil {
		return "", discovery.Port{}, errors.New("no such service " + t.Service.String())
	}
	p, err := names.Resolve(t, svc)
	if err != nil {
		return "", discovery.Port{}, err
	}
	return b.names.Canonical(svc.Key, p.Port), p, nil
}

// consumes reports whether the clients of namespace client have routes of
// their own for the Service port (GEP-1294 consumer routes), and so a route
// configuration of their own.
func (b *builder) consumes(svc *discovery.Service, p discovery.Port, client string) bool {
	if client == "" || b.routes == nil {
		return false
	}
	return mesh.Consumes(mesh.Input{Parent: svc.Key, Port: p, Client: client, Routes: b.routes(svc.Key)})
}

// status is what clients are told of an endpoint's health in cluster: nil
// (all Unknown) when checks are off or the cluster fails open.
func (b *builder) status(cfg *serviceConfig, failOpen bool) func(netip.AddrPort) health.Status {
	if !cfg.health.Enabled || failOpen {
		return nil
	}
	return func(ap netip.AddrPort) health.Status { return b.health(b.target(cfg, ap)) }
}

// target is what the agent checks of an endpoint: mTLS Services' servers
// over mTLS, accepting the server identities their clients accept.
func (b *builder) target(cfg *serviceConfig, ap netip.AddrPort) health.Target {
	return health.Target{Addr: ap, Service: cfg.health.Name, Identity: cfg.checkIdentity}
}

// loadAssignment prioritizes a Service port's endpoints for the view's node,
// with what active health checking knows about them, and returns the
// endpoints to check.
func (b *builder) loadAssignment(svc *discovery.Service, p discovery.Port, name, view string, cfg *serviceConfig) (proto.Message, *checks) {
	prios := topology.Prioritize(b.endpoints(svc.Key, p.Name).list, cfg.policy, b.here(view))
	c := &checks{}
	if cfg.health.Enabled {
		for _, pr := range prios {
			for _, e := range pr.Endpoints {
				c.targets = append(c.targets, b.target(cfg, e.Addr))
			}
		}
	}
	list := make([]health.Status, len(c.targets))
	for i, t := range c.targets {
		list[i] = b.health(t)
	}
	c.failOpen = health.FailOpen(list)
	return resources.LoadAssignment(name, prios, b.status(cfg, c.failOpen)), c
}

// route is a Service port's route configuration: by its Gateway API routes
// if any apply, else to its own cluster, after the endpoint picker's routes.
func (b *builder) route(name string, svc *discovery.Service, p discovery.Port, ref portRef, cfg *serviceConfig) (proto.Message, *pickerReport) {
	port := ref.Port()
	if t := b.routed(svc, p, ref.Client); t != nil {
		return b.routedConfig(name, port, t, cfg), nil
	}
	picks, fail, report := b.picks(svc, p, port, cfg)
	return resources.RouteConfig(name, name, cfg.lb, picks, fail), report
}

// routed is how Gateway API routes route a Service port for the clients of
// namespace client ("": the producer's routes), nil when none do.
func (b *builder) routed(svc *discovery.Service, p discovery.Port, client string) *mesh.Table {
	if b.routes == nil {
		return nil
	}
	attached := b.routes(svc.Key)
	if len(attached) == 0 {
		return nil
	}
	return mesh.Translate(mesh.Input{Parent: svc.Key, Port: p, Client: client, Routes: attached, Service: b.service, Grants: b.grants})
}

// routedConfig is a routed Service port's route configuration. Each backend
// is its own Service port's cluster in the same view, so a split keeps the
// node's tiers, health and load balancing of every backend; an unresolved
// backend's share, like a rule with no backends, goes to the port's cluster
// with no endpoints (UNAVAILABLE). The endpoint picker does not apply to
// routed ports: the routes replace the Service's own routing.
func (b *builder) routedConfig(name string, port names.Resource, t *mesh.Table, cfg *serviceConfig) proto.Message {
	none := port
	none.Subset = names.NoEndpoint
	rules := make([]resources.Routed, len(t.Rules))
	for i, r := range t.Rules {
		rules[i] = resources.Routed{Match: r.Match, Timeout: r.Timeout}
		for _, be := range r.Backends {
			cluster := none.String()
			if !be.Unresolved {
				cluster = names.Resource{Base: b.names.Canonical(be.Service, be.Port), View: port.View}.String()
			}
			// mesh merges backends naming one cluster: each appears once.
			rules[i].Clusters = append(rules[i].Clusters, resources.WeightedCluster{Name: cluster, Weight: be.Weight})
		}
	}
	return resources.RoutedConfig(name, rules, cfg.lb, none.String())
}

// picks lists the endpoints a request may pick by header, and the cluster for
// requests that name none when the Service fails them closed. Members are the
// Service port's serving endpoints, minus those failing health checks.
func (b *builder) picks(svc *discovery.Service, p discovery.Port, port names.Resource, cfg *serviceConfig) ([]resources.Pick, string, *pickerReport) {
	if cfg.lb.EndpointHeader == "" {
		return nil, "", nil
	}
	canonical := port.String()
	report := &pickerReport{port: canonical}
	eps := b.endpoints(svc.Key, p.Name).list
	if len(eps) > b.maxPicker {
		report.errs = []*discovery.AnnotationError{{
			Key: resources.AnnotationEndpointHeader, Value: cfg.lb.EndpointHeader,
			Err: fmt.Errorf("port %d has %d endpoints, more than the agent's limit of %d: endpoint picking is off", p.Port, len(eps), b.maxPicker),
		}}
		return nil, "", report
	}
	status := b.status(cfg, b.failOpen(canonical))
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
	return picks, fail, report
}

// pickedEndpoint is the load assignment of one endpoint-picker cluster.
func (b *builder) pickedEndpoint(svc *discovery.Service, p discovery.Port, canonical, name string, addr netip.AddrPort, cfg *serviceConfig) proto.Message {
	pe := b.endpoints(svc.Key, p.Name)
	if i, ok := pe.index()[addr]; ok && pe.list[i].Serving {
		return resources.SingleEndpoint(name, &pe.list[i], b.status(cfg, b.failOpen(canonical)))
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

type portKey struct {
	svc  discovery.ServiceKey
	port string
}
