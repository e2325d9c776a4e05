package discovery

import (
	"cmp"
	"maps"
	"net/netip"
	"reflect"
	"slices"
)

// Store merges Events into the current model. It is not safe for concurrent
// use: one goroutine owns it (see agent.Agent).
type Store struct {
	services map[ServiceKey]*Service
	slices   map[ServiceKey]map[string]*Slice
	// owners finds a slice's Service by the slice's namespace and name: a
	// slice can be relabelled to another Service, or lose its label.
	owners map[ServiceKey]ServiceKey
	nodes  map[string]Node
	// zoneRegions counts the Nodes of each zone by region, to place endpoints
	// whose Node is unknown (no nodeName, or not seen yet) by their zone.
	zoneRegions map[string]map[string]int
	namespaces  map[string]*Namespace
	moved       []ServiceKey
	routes      routeIndex
	local       localIndex
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{
		services: map[ServiceKey]*Service{},
		slices:   map[ServiceKey]map[string]*Slice{},
		owners:   map[ServiceKey]ServiceKey{},
		nodes:    map[string]Node{},

		zoneRegions: map[string]map[string]int{},
		namespaces:  map[string]*Namespace{},
		routes:      newRouteIndex(),
	}
}

// Change says what an Event changed. The zero Change means nothing did.
type Change struct {
	// Service is set when one Service's resources may have changed.
	Service *ServiceKey
	// Node is set when a Node's topology changed: tiers of any Service may move.
	Node string
	// Namespace is set when a Namespace's nodexds.io/ annotations changed
	// (or it was added or deleted with some): the defaults of its Services'
	// policy may have changed. Other Namespace writes (labels, status) are
	// no Change.
	Namespace string
	// Local are the addresses of local-node endpoints (see SetLocalNode)
	// that a slice event added, removed or changed (conditions, ports, or
	// the Service the slice belongs to, also when it is relabelled to
	// another or deleted), sorted, each once. Their servers' Selecting may
	// have changed. Empty for other events, and when no local node is set.
	Local []netip.Addr
	// Routed are the Services whose route configuration may have changed:
	// the parents of a route that changed, of a route whose backend Service
	// changed, or of a route a ReferenceGrant now permits or no longer does.
	Routed []ServiceKey
}

// None reports whether nothing changed.
func (c Change) None() bool {
	return c.Service == nil && c.Node == "" && c.Namespace == "" && len(c.Local) == 0 && len(c.Routed) == 0
}

// Apply records e. Updates equal to what is stored are no-ops.
func (s *Store) Apply(e Event) Change {
	switch {
	case e.Service != nil:
		k := e.Service.Key
		old, ok := s.services[k]
		if e.Deleted {
			if !ok {
				return Change{}
			}
			delete(s.services, k)
			return Change{Service: &k, Routed: s.routes.parentsOfBackend(k)}
		}
		if ok && reflect.DeepEqual(old, e.Service) {
			return Change{}
		}
		s.services[k] = e.Service
		return Change{Service: &k, Routed: s.routes.parentsOfBackend(k)}

	case e.Slice != nil:
		id := ServiceKey{Namespace: e.Slice.Service.Namespace, Name: e.Slice.Name}
		owner, owned := s.owners[id]
		if e.Deleted {
			if !owned {
				return Change{}
			}
			prev := s.slices[owner][e.Slice.Name]
			s.removeSlice(owner, e.Slice.Name)
			delete(s.owners, id)
			return Change{Service: &owner, Local: s.local.update(prev, nil)}
		}
		k := e.Slice.Service
		var prev *Slice // what the slice was, under its owner
		if owned && owner != k {
			// Relabelled to another Service: both change. Report the old one
			// now; the new one is reported below.
			prev = s.slices[owner][e.Slice.Name]
			s.removeSlice(owner, e.Slice.Name)
			s.moved = append(s.moved, owner)
		}
		bySlice := s.slices[k]
		if old, ok := bySlice[e.Slice.Name]; ok {
			if reflect.DeepEqual(old, e.Slice) {
				return Change{}
			}
			prev = old
		}
		if bySlice == nil {
			bySlice = map[string]*Slice{}
			s.slices[k] = bySlice
		}
		bySlice[e.Slice.Name] = e.Slice
		s.owners[id] = k
		return Change{Service: &k, Local: s.local.update(prev, e.Slice)}

	case e.Node != nil:
		n := *e.Node
		old, ok := s.nodes[n.Name]
		if e.Deleted {
			if !ok {
				return Change{}
			}
			delete(s.nodes, n.Name)
			s.countZone(old, -1)
			return Change{Node: n.Name}
		}
		if ok && old == n {
			return Change{}
		}
		if ok {
			s.countZone(old, -1)
		}
		s.nodes[n.Name] = n
		s.countZone(n, 1)
		return Change{Node: n.Name}

	case e.Namespace != nil:
		return s.applyNamespace(e.Namespace, e.Deleted)

	case e.Route != nil:
		return Change{Routed: s.routes.applyRoute(e.Route, e.Deleted)}

	case e.Grant != nil:
		return Change{Routed: s.routes.applyGrant(e.Grant, e.Deleted)}
	}
	return Change{}
}

// applyNamespace records a Namespace. Every Namespace is kept (a Service's
// namespace without annotations is known to have none); a change is only
// one of its nodexds.io/ annotations.
func (s *Store) applyNamespace(n *Namespace, deleted bool) Change {
	old, ok := s.namespaces[n.Name]
	if deleted {
		if !ok {
			return Change{}
		}
		delete(s.namespaces, n.Name)
		if len(old.Annotations) == 0 {
			return Change{}
		}
		return Change{Namespace: n.Name}
	}
	var was map[string]string
	if ok {
		was = old.Annotations
	}
	s.namespaces[n.Name] = n
	if maps.Equal(was, n.Annotations) {
		return Change{} // also: added without any
	}
	return Change{Namespace: n.Name}
}

func (s *Store) countZone(n Node, delta int) {
	if n.Zone == "" || n.Region == "" {
		return
	}
	regions := s.zoneRegions[n.Zone]
	if regions == nil {
		regions = map[string]int{}
		s.zoneRegions[n.Zone] = regions
	}
	regions[n.Region] += delta
	if regions[n.Region] <= 0 {
		delete(regions, n.Region)
	}
	if len(regions) == 0 {
		delete(s.zoneRegions, n.Zone)
	}
}

// regionOf returns the region of zone's Nodes, "" when none is known or
// they disagree (zones do not span regions, so that is a labelling error).
func (s *Store) regionOf(zone string) string {
	regions := s.zoneRegions[zone]
	if len(regions) != 1 {
		return ""
	}
	for r := range regions {
		return r
	}
	return ""
}

func (s *Store) removeSlice(k ServiceKey, name string) {
	delete(s.slices[k], name)
	if len(s.slices[k]) == 0 {
		delete(s.slices, k)
	}
}

// TakeMoved returns the Services that lost a slice to another Service since
// the last call: Apply reports only one Service per event.
func (s *Store) TakeMoved() []ServiceKey {
	out := s.moved
	s.moved = nil
	return out
}

// Service returns the Service named k.
func (s *Store) Service(k ServiceKey) (*Service, bool) {
	svc, ok := s.services[k]
	return svc, ok
}

// Namespace returns the named Namespace; ok is false when it is unknown.
func (s *Store) Namespace(name string) (*Namespace, bool) {
	n, ok := s.namespaces[name]
	return n, ok
}

// Node returns the topology of the named Node; ok is false when it is unknown.
func (s *Store) Node(name string) (Node, bool) {
	n, ok := s.nodes[name]
	return n, ok
}

// ServiceKeys returns the keys of all Services, sorted.
func (s *Store) ServiceKeys() []ServiceKey {
	keys := slices.Collect(maps.Keys(s.services))
	slices.SortFunc(keys, ServiceKey.Compare)
	return keys
}

// Endpoints returns the endpoints of the Service port named portName (the
// Service port's name; "" for an unnamed single port), merged over all of the
// Service's slices of one IP family (see servedFamily) and sorted by address.
// An endpoint's zone is its own, else its Node's; its region is its Node's,
// else that of its zone's Nodes. An address
// listed in several slices appears once, with its most usable conditions:
// controllers briefly duplicate endpoints while they move them between slices,
// and gRPC rejects duplicate addresses. The result is nil when there are none.
func (s *Store) Endpoints(k ServiceKey, portName string) []Endpoint {
	svc := s.services[k]
	bySlice := s.slices[k]
	if svc == nil || len(bySlice) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(bySlice))
	family := servedFamily(svc, bySlice)
	index := map[netip.AddrPort]int{}
	var out []Endpoint
	for _, name := range names {
		sl := bySlice[name]
		if sl.AddressType != family {
			continue
		}
		port, ok := slicePort(sl.Ports, portName)
		if !ok {
			continue
		}
		for _, se := range sl.Endpoints {
			node := s.nodes[se.Node]
			ep := Endpoint{
				Addr:        netip.AddrPortFrom(se.Addr, uint16(port)),
				Pod:         se.Pod,
				Node:        se.Node,
				Zone:        cmp.Or(se.Zone, node.Zone),
				Region:      node.Region,
				Ready:       se.Ready,
				Serving:     se.Serving,
				Terminating: se.Terminating,
				Hints:       se.Hints,
			}
			if ep.Region == "" {
				ep.Region = s.regionOf(ep.Zone)
			}
			if i, dup := index[ep.Addr]; dup {
				if ep.better(&out[i]) {
					out[i] = ep
				}
				continue
			}
			index[ep.Addr] = len(out)
			out = append(out, ep)
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
	return out
}

// servedFamily is the one address type of a Service's slices that is served:
// its primary IP family (spec.ipFamilies[0]). Serving a dual-stack Service's
// both families would count each pod twice. A Service that names no family
// (an ExternalName Service, or one from a file that leaves the field out)
// serves IPv4 if it has IPv4 slices, else IPv6.
func servedFamily(svc *Service, bySlice map[string]*Slice) string {
	if svc.IPFamily != "" {
		return svc.IPFamily
	}
	for _, sl := range bySlice {
		if sl.AddressType == "IPv4" {
			return "IPv4"
		}
	}
	return "IPv6"
}

// slicePort finds the target port for a Service port name. Slices name their
// ports after the Service's ports, so the name is the join key.
func slicePort(ports []Port, name string) (int32, bool) {
	for _, p := range ports {
		if p.Name == name && p.Port > 0 && p.Port < 1<<16 {
			return p.Port, true
		}
	}
	return 0, false
}
