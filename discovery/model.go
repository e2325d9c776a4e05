// Package discovery turns what Kubernetes (or a file) says about Services,
// EndpointSlices, Nodes and Namespaces into the small model the rest of nodexds works on.
//
// Sources (kube informers, files) only translate and forward Events; a Store,
// owned by a single goroutine, merges them and says which Services changed.
package discovery

import (
	"cmp"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// AnnotationPrefix marks the Service and Namespace annotations nodexds reads;
// others are dropped.
const AnnotationPrefix = "nodexds.io/"

// Topology labels read from Nodes.
const (
	LabelHostname = "kubernetes.io/hostname"
	LabelZone     = "topology.kubernetes.io/zone"
	LabelRegion   = "topology.kubernetes.io/region"
)

// ServiceKey names a Service.
type ServiceKey struct{ Namespace, Name string }

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Compare orders keys by namespace, then name.
func (k ServiceKey) Compare(o ServiceKey) int {
	return cmp.Or(strings.Compare(k.Namespace, o.Namespace), strings.Compare(k.Name, o.Name))
}

// Port is a named port: a Service port, or an EndpointSlice target port.
type Port struct {
	Name string
	Port int32
}

// Service is the part of a Kubernetes Service that nodexds acts on.
type Service struct {
	Key ServiceKey
	UID string // for Events about the Service
	// Ports are the TCP ports; gRPC does not run over anything else.
	Ports []Port
	// InternalTrafficLocal is spec.internalTrafficPolicy == Local.
	InternalTrafficLocal bool
	// TrafficDistribution is spec.trafficDistribution, "" when unset.
	TrafficDistribution string
	// IPFamily is the primary family ("IPv4", "IPv6"), "" when unknown. Dual-stack
	// Services have a slice per family; serving both would count each pod twice.
	IPFamily string
	// Annotations holds only the nodexds.io/ annotations; nil when there are none.
	Annotations map[string]string
}

// Port returns the Service port matching spec, a port number or name.
func (s *Service) Port(spec string) (Port, bool) {
	if n, err := strconv.ParseInt(spec, 10, 32); err == nil {
		return s.PortNumber(int32(n))
	}
	for _, p := range s.Ports {
		if spec != "" && p.Name == spec {
			return p, true
		}
	}
	return Port{}, false
}

// PortNumber returns the Service port numbered n.
func (s *Service) PortNumber(n int32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Port == n {
			return p, true
		}
	}
	return Port{}, false
}

// Slice is one EndpointSlice, reduced to what is needed.
type Slice struct {
	Service     ServiceKey
	Name        string
	AddressType string
	Ports       []Port
	Endpoints   []SliceEndpoint
}

// SliceEndpoint is one endpoint of a Slice, conditions already defaulted the
// way the API documents them (ready nil = true, serving nil = ready).
type SliceEndpoint struct {
	Addr                        netip.Addr
	Pod                         string // targetRef name when it is a Pod
	Node, Zone                  string
	Ready, Serving, Terminating bool
	Hints                       *Hints // nil when the slice carries none
}

// Hints are an endpoint's EndpointSlice hints (KEP-2433, KEP-3015): the zones
// and nodes whose clients it is meant for. Held by pointer, as most endpoints
// have none and every endpoint is cached.
type Hints struct {
	Zones, Nodes []string
}

// ForZones returns the zones hinted, nil for none (also on a nil *Hints).
func (h *Hints) ForZones() []string {
	if h == nil {
		return nil
	}
	return h.Zones
}

// ForNodes returns the nodes hinted, nil for none (also on a nil *Hints).
func (h *Hints) ForNodes() []string {
	if h == nil {
		return nil
	}
	return h.Nodes
}

// Node is a Node's topology.
type Node struct {
	Name, Zone, Region string
}

// Namespace is what nodexds reads of a Namespace: its nodexds.io/
// annotations, which set the defaults of its Services' (mTLS) policy.
type Namespace struct {
	Name string
	// Annotations holds only the nodexds.io/ annotations; nil when there are none.
	Annotations map[string]string
}

// Endpoint is one address:port of one Service port, merged across all of the
// Service's slices, with the region of its node resolved.
type Endpoint struct {
	Addr                        netip.AddrPort
	Pod                         string
	Node, Zone, Region          string
	Ready, Serving, Terminating bool
	Hints                       *Hints // shared with the slice: read only
}

// Event is one change from a source: exactly one of Service, Slice, Node,
// Namespace, Route, Grant is set. With Deleted, only the object's
// identifying fields need to be filled in.
type Event struct {
	Service   *Service
	Slice     *Slice
	Node      *Node
	Namespace *Namespace
	Route     *Route
	Grant     *Grant
	Deleted   bool
}

// better ranks the endpoint conditions, so a duplicate keeps its most usable copy.
func (e *Endpoint) better(o *Endpoint) bool {
	rank := func(e *Endpoint) int {
		switch {
		case e.Ready:
			return 2
		case e.Serving:
			return 1
		}
		return 0
	}
	return rank(e) > rank(o)
}

// AnnotationError is a Service annotation that could not be used. The
// Service then falls back to the default the annotation would override; the
// agent logs, counts and reports the error as a Kubernetes Event.
type AnnotationError struct {
	Key, Value string
	Err        error
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: %v", e.Key, e.Value, e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }
