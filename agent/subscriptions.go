package agent

import (
	"fmt"
	"strconv"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/discovery"
)

// subscriptions indexes what clients of this node subscribe to by Service,
// so a change to a Service finds the resources to rebuild, including listener
// names for Services that do not exist yet.
type subscriptions struct {
	bySvc  map[discovery.ServiceKey]map[string]map[string]bool // service → type → names
	byName map[string]map[string]discovery.ServiceKey          // type → name → service
	ports  map[string]int32                                    // canonical name → port
}

func newSubscriptions() *subscriptions {
	return &subscriptions{
		bySvc:  map[discovery.ServiceKey]map[string]map[string]bool{},
		byName: map[string]map[string]discovery.ServiceKey{},
		ports:  map[string]int32{},
	}
}

// addListener records a listener name; the Service it names need not exist.
func (s *subscriptions) addListener(name string, p names.Parser) (discovery.ServiceKey, error) {
	t, err := p.Parse(name)
	if err != nil {
		return discovery.ServiceKey{}, err
	}
	s.add(t.Service, resources.ListenerType, name)
	return t.Service, nil
}

// addCanonical records a route, cluster or endpoints name. Those are names the
// agent handed out, so only the canonical form is accepted.
func (s *subscriptions) addCanonical(typ, name string, p names.Parser) (discovery.ServiceKey, error) {
	t, err := p.Parse(name)
	if err != nil {
		return discovery.ServiceKey{}, err
	}
	port, err := strconv.Atoi(t.Port)
	if err != nil || p.Canonical(t.Service, int32(port)) != name {
		return discovery.ServiceKey{}, fmt.Errorf("%q is not a name this agent hands out", name)
	}
	s.ports[name] = int32(port)
	s.add(t.Service, typ, name)
	return t.Service, nil
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
}

// remove forgets a name.
func (s *subscriptions) remove(typ, name string) {
	k, ok := s.byName[typ][name]
	if !ok {
		return
	}
	delete(s.byName[typ], name)
	delete(s.ports, name)
	byType := s.bySvc[k]
	delete(byType[typ], name)
	if len(byType[typ]) == 0 {
		delete(byType, typ)
	}
	if len(byType) == 0 {
		delete(s.bySvc, k)
	}
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

func (s *subscriptions) canonicalPort(name string) (int32, bool) {
	p, ok := s.ports[name]
	return p, ok
}
