package admin

import (
	"slices"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// ServiceClient is one client subscribing to a cluster.
type ServiceClient struct {
	Node   string `json:"node"`
	Stream uint64 `json:"stream"`
	// Via lists the listener names through which the client reaches the
	// cluster; empty when it names the cluster directly.
	Via []string `json:"via"`
	// Types are the resource types it subscribes to for the cluster.
	Types []string `json:"types"`
	// EDS is the state of the cluster's endpoints on the client (SYNCED, ...),
	// empty when it does not subscribe to them.
	EDS xds.ResourceState `json:"eds,omitempty"`
}

// ServiceDebug is an agent.ServiceView with its subscribers: at most
// agent.ListCap of ClientsTotal.
type ServiceDebug struct {
	agent.ServiceView
	Clients      []ServiceClient `json:"clients"`
	ClientsTotal int             `json:"clientsTotal"`
}

// ServicesDebug is what /debug/services serves: one page of Total.
type ServicesDebug struct {
	Node   string `json:"node"`
	Zone   string `json:"zone"`
	Region string `json:"region"`
	Total  int    `json:"total"`
	Offset int    `json:"offset"`
	// Next is the path of the next page; empty on the last.
	Next     string         `json:"next,omitempty"`
	Services []ServiceDebug `json:"services"`
}

// ClientsDebug is what /debug/clients serves: one page of Total.
type ClientsDebug struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	// Next is the path of the next page; empty on the last.
	Next    string        `json:"next,omitempty"`
	Clients []ClientDebug `json:"clients"`
}

// ClientDebug is one ADS stream, its lists capped.
type ClientDebug struct {
	xds.ClientStatus
	Types []TypeDebug `json:"types"` // hides ClientStatus.Types
	// XDSServer marks an xDS-enabled gRPC server (gRFC A36), and
	// ServerListeners are the Listeners it asked for.
	XDSServer       bool                  `json:"xdsServer,omitempty"`
	ServerListeners []ServerListenerDebug `json:"serverListeners,omitempty"`
}

// TypeDebug is one type of one stream: at most agent.ListCap of its
// ResourcesTotal subscribed names, their names clipped to MaxNameShown.
type TypeDebug struct {
	xds.TypeStatus
	ResourcesTotal int `json:"resourcesTotal"`
}

// MaxNameShown bounds a resource name in the debug pages. The names the agent
// hands out are far shorter; only junk sent by a client is cut.
const MaxNameShown = 256

// joinClients adds to each Service port of v the clients that subscribe to
// it: to its cluster's names (the cluster, its route configuration and
// endpoints, and clusters derived from it, named cluster|...), or to a
// listener resolving to it. One pass over the clients' names, so a page costs
// what the clients subscribe to, not that times the page's size.
func joinClients(v agent.View, clients []xds.ClientStatus) ServicesDebug {
	d := ServicesDebug{Node: v.Node, Zone: v.Zone, Region: v.Region, Total: v.Total, Services: make([]ServiceDebug, 0, len(v.Services))}
	byCluster, byListener := map[string]int{}, map[string]int{} // → index in d.Services
	for i, sv := range v.Services {
		d.Services = append(d.Services, ServiceDebug{ServiceView: sv, Clients: []ServiceClient{}})
		byCluster[sv.Cluster] = i
		for _, l := range sv.Listeners {
			byListener[l] = i
		}
	}
	for _, cl := range clients {
		mine := map[int]*ServiceClient{} // this client's entry, by service
		var order []int
		entry := func(i int) *ServiceClient {
			if mine[i] == nil {
				mine[i] = &ServiceClient{Node: cl.Node, Stream: cl.Stream, Via: []string{}}
				order = append(order, i)
			}
			return mine[i]
		}
		for _, ts := range cl.Types {
			var used []int
			for _, r := range ts.Resources {
				i, ok := 0, false
				if ts.TypeURL == xds.ListenerType {
					if i, ok = byListener[r.Name]; ok {
						entry(i).Via = append(entry(i).Via, r.Name)
					}
				} else {
					base := portName(r.Name)
					if i, ok = byCluster[base]; ok && ts.TypeURL == xds.EndpointType && r.Name == base {
						entry(i).EDS = r.State
					}
				}
				if ok && !slices.Contains(used, i) {
					used = append(used, i)
				}
			}
			for _, i := range used {
				entry(i).Types = append(entry(i).Types, ts.Type)
			}
		}
		for _, i := range order {
			s := &d.Services[i]
			s.ClientsTotal++
			if len(s.Clients) < agent.ListCap {
				s.Clients = append(s.Clients, *mine[i])
			}
		}
	}
	return d
}

// subscribedBy matches the Service ports that clients subscribe to, by
// cluster name or through a listener.
func subscribedBy(clients []xds.ClientStatus) func(string, []string) bool {
	clusters, listeners := map[string]bool{}, map[string]bool{}
	for _, cl := range clients {
		for _, ts := range cl.Types {
			for _, r := range ts.Resources {
				if ts.TypeURL == xds.ListenerType {
					listeners[r.Name] = true
				} else {
					clusters[portName(r.Name)] = true
				}
			}
		}
	}
	return func(cluster string, ls []string) bool {
		return clusters[cluster] || slices.ContainsFunc(ls, func(l string) bool { return listeners[l] })
	}
}

// pageClients filters clients, and returns the page q asks for.
func pageClients(all []xds.ClientStatus, q debugQuery, p names.Parser) ClientsDebug {
	matched := all[:0:0]
	for _, cl := range all {
		if q.isClient(&cl) && (q.service == "" || subscribesTo(&cl, q.service, p)) {
			matched = append(matched, cl)
		}
	}
	out := ClientsDebug{Total: len(matched), Offset: q.offset, Clients: []ClientDebug{}}
	for _, cl := range agent.Page(matched, q.offset, q.limit) {
		cd := ClientDebug{ClientStatus: cl, Types: make([]TypeDebug, 0, len(cl.Types)), ServerListeners: serverListeners(&cl)}
		cd.XDSServer = len(cd.ServerListeners) > 0
		cd.ClientStatus.Types = nil
		for _, ts := range cl.Types {
			td := TypeDebug{TypeStatus: ts, ResourcesTotal: len(ts.Resources)}
			td.Resources = slices.Clone(agent.Page(ts.Resources, 0, agent.ListCap))
			for i := range td.Resources {
				td.Resources[i].Name = xds.Clip(td.Resources[i].Name, MaxNameShown)
			}
			cd.Types = append(cd.Types, td)
		}
		out.Clients = append(out.Clients, cd)
	}
	return out
}

// subscribesTo reports whether cl subscribes to any name of the Service
// "namespace/name".
func subscribesTo(cl *xds.ClientStatus, service string, p names.Parser) bool {
	for _, ts := range cl.Types {
		for _, r := range ts.Resources {
			var base string
			if ts.TypeURL == xds.ListenerType {
				base = names.ParseListener(r.Name).Base
			} else if res, err := names.ParseResource(r.Name); err == nil {
				base = res.Base
			}
			if t, err := p.Parse(base); err == nil && t.Service.String() == service {
				return true
			}
		}
	}
	return false
}

// portName is the name of the Service port's own resource that a route,
// cluster or endpoints name belongs to (an endpoint picker's cluster belongs
// to its Service port's); a name the agent never hands out is its own.
func portName(name string) string {
	if r, err := names.ParseResource(name); err == nil {
		return r.Port().String()
	}
	return name
}
