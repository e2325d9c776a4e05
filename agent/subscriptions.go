package agent

import (
	"fmt"
	"strconv"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/internal/shrink"
)

// subscriptions indexes what clients of this node subscribe to by Service,
// so a change to a Service finds the resources to rebuild, including listener
// names for Services that do not exist yet.
type subscriptions struct {
	bySvc  map[discovery.ServiceKey]map[string]map[string]bool // service → type → names
	byName map[string]map[string]discovery.ServiceKey          // type → name → service
	ports  map[typedName]portRef                               // route, cluster or endpoints name → port
	// peaks of the maps above (byName by type), see shrink.Map: junk names
	// come and go in floods.
	svcPeak, portsPeak int
	namePeak           map[string]*int
}

func newSubscriptions() *subscriptions {
	return &subscriptions{
		bySvc:    map[discovery.ServiceKey]map[string]map[string]bool{},
		byName:   map[string]map[string]discovery.ServiceKey{},
		ports:    map[typedName]portRef{},
		namePeak: map[string]*int{},
	}
}

// addListener records a listener name; the Service it names need not exist.
func (s *subscriptions) addListener(name string, p names.Parser) (discovery.ServiceKey, error) {
	t, err := p.Parse(names.ParseListener(name).Base)
	if err != nil {
		return discovery.ServiceKey{}, err
	}
	s.add(t.Service, xds.ListenerType, name)
	return t.Service, nil
}

// portRef is what a route, cluster or endpoints name refers to: the name
// in its parts, and the Service port number its base names.
type portRef struct {
	names.Resource
	port int32
}

// addCanonical records a route, cluster or endpoints name. Those are names the
// agent handed out, so only the canonical form (and its subsets) is accepted.
func (s *subscriptions) addCanonical(typ, name string, p names.Parser) (discovery.ServiceKey, error) {
	k, ref, err := parseCanonical(name, p)
	if err != nil {
		return k, err
	}
	if ref.Client != "" && typ != xds.RouteType {
		return k, fmt.Errorf("%q: only route configurations are handed out per client namespace", name)
	}
	s.ports[typedName{typ, name}] = ref
	s.add(k, typ, name)
	return k, nil
}

// parseCanonical reads a route, cluster or endpoints name the agent hands out.
func parseCanonical(name string, p names.Parser) (discovery.ServiceKey, portRef, error) {
	r, err := names.ParseResource(name)
	if err != nil {
		return discovery.ServiceKey{}, portRef{}, err
	}
	t, err := p.Parse(r.Base)
	if err != nil {
		return discovery.ServiceKey{}, portRef{}, err
	}
	port, err := strconv.Atoi(t.Port)
	if err != nil || p.Canonical(t.Service, int32(port)) != r.Base {
		return discovery.ServiceKey{}, portRef{}, fmt.Errorf("%q is not a name this agent hands out", name)
	}
	return t.Service, portRef{Resource: r, port: int32(port)}, nil
}

func (s *subscriptions) add(k discovery.ServiceKey, typ, name string) {
	byType := s.bySvc[k]
	if byType == nil {
		byType = map[string]map[string]bool{}
		s.bySvc[k] = byType
	}
	if byType[typ] == nil {
		byType[typ] = map[string]bool{}
	}
	byType[typ][name] = true
	if s.byName[typ] == nil {
		s.byName[typ] = map[string]discovery.ServiceKey{}
	}
	s.byName[typ][name] = k
	s.shrink(typ)
}

// shrink lets the maps that index typ give back the space of removed names.
func (s *subscriptions) shrink(typ string) {
	if s.namePeak[typ] == nil {
		s.namePeak[typ] = new(int)
	}
	s.byName[typ] = shrink.Map(s.byName[typ], s.namePeak[typ])
	s.bySvc = shrink.Map(s.bySvc, &s.svcPeak)
	s.ports = shrink.Map(s.ports, &s.portsPeak)
}

// remove forgets a name.
func (s *subscriptions) remove(typ, name string) {
	k, ok := s.byName[typ][name]
	if !ok {
		return
	}
	delete(s.byName[typ], name)
	delete(s.ports, typedName{typ, name})
	byType := s.bySvc[k]
	delete(byType[typ], name)
	if len(byType[typ]) == 0 {
		delete(byType, typ)
	}
	if len(byType) == 0 {
		delete(s.bySvc, k)
	}
	s.shrink(typ)
}

func (s *subscriptions) has(k discovery.ServiceKey) bool { return s.bySvc[k] != nil }

func (s *subscriptions) services() []discovery.ServiceKey {
	out := make([]discovery.ServiceKey, 0, len(s.bySvc))
	for k := range s.bySvc {
		out = append(out, k)
	}
	return out
}

// of returns the subscribed names of one Service by type.
func (s *subscriptions) of(k discovery.ServiceKey) map[string][]string {
	out := map[string][]string{}
	for typ, set := range s.bySvc[k] {
		for n := range set {
			out[typ] = append(out[typ], n)
		}
	}
	return out
}

// service returns the Service a subscribed name belongs to.
func (s *subscriptions) service(typ, name string) (discovery.ServiceKey, bool) {
	k, ok := s.byName[typ][name]
	return k, ok
}

// ref returns what a subscribed route, cluster or endpoints name refers to.
func (s *subscriptions) ref(typ, name string) (portRef, bool) {
	p, ok := s.ports[typedName{typ, name}]
	return p, ok
}

// typedName keys by type as well as name: a route, a cluster and a load
// assignment share their name, and each type's subscription comes and goes
// on its own.
type typedName struct{ typ, name string }
