package discovery

import (
	"fmt"
	"net/netip"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// FromService reduces a Kubernetes Service.
func FromService(s *corev1.Service) *Service {
	out := &Service{
		Key: ServiceKey{Namespace: s.Namespace, Name: s.Name},
		UID: string(s.UID),
	}
	for _, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		out.Ports = append(out.Ports, Port{Name: p.Name, Port: p.Port})
	}
	if p := s.Spec.InternalTrafficPolicy; p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal {
		out.InternalTrafficLocal = true
	}
	if d := s.Spec.TrafficDistribution; d != nil {
		out.TrafficDistribution = *d
	}
	if len(s.Spec.IPFamilies) > 0 {
		out.IPFamily = string(s.Spec.IPFamilies[0])
	}
	out.Annotations = keptAnnotations(s.Annotations)
	return out
}

// FromNamespace reduces a Namespace to its nodexds.io/ annotations.
func FromNamespace(n *corev1.Namespace) *Namespace {
	return &Namespace{Name: n.Name, Annotations: keptAnnotations(n.Annotations)}
}

// keptAnnotations returns the nodexds.io/ annotations of all, nil when
// there are none.
func keptAnnotations(all map[string]string) map[string]string {
	var out map[string]string
	for k, v := range all {
		if strings.HasPrefix(k, AnnotationPrefix) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// FromEndpointSlice reduces an EndpointSlice. It returns an error for a slice
// that names no Service or holds an address that is not an IP; endpoints
// without addresses are skipped, as kube-proxy does.
func FromEndpointSlice(es *discoveryv1.EndpointSlice) (*Slice, error) {
	svc := es.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil, fmt.Errorf("EndpointSlice %s/%s: no %s label", es.Namespace, es.Name, discoveryv1.LabelServiceName)
	}
	out := &Slice{
		Service:     ServiceKey{Namespace: es.Namespace, Name: svc},
		Name:        es.Name,
		AddressType: string(es.AddressType),
	}
	if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
		return out, nil // FQDN slices name no address gRPC could dial.
	}
	for _, p := range es.Ports {
		if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		out.Ports = append(out.Ports, Port{Name: name, Port: *p.Port})
	}
	if len(es.Endpoints) > 0 {
		out.Endpoints = make([]SliceEndpoint, 0, len(es.Endpoints)) // cached for the slice's lifetime: no spare capacity
	}
	for _, e := range es.Endpoints {
		if len(e.Addresses) == 0 {
			continue
		}
		addr, err := netip.ParseAddr(e.Addresses[0])
		if err != nil {
			return nil, fmt.Errorf("EndpointSlice %s/%s: address %q: %w", es.Namespace, es.Name, e.Addresses[0], err)
		}
		ready := e.Conditions.Ready == nil || *e.Conditions.Ready
		se := SliceEndpoint{
			Addr:        addr.Unmap(),
			Ready:       ready,
			Serving:     ready,
			Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
		}
		if e.Conditions.Serving != nil {
			se.Serving = *e.Conditions.Serving
		}
		if e.NodeName != nil {
			se.Node = intern(*e.NodeName)
		}
		if e.Zone != nil {
			se.Zone = intern(*e.Zone)
		}
		if r := e.TargetRef; r != nil && r.Kind == "Pod" {
			se.Pod = r.Name
		}
		if h := e.Hints; h != nil && len(h.ForZones)+len(h.ForNodes) > 0 {
			se.Hints = &Hints{}
			for _, z := range h.ForZones {
				se.Hints.Zones = append(se.Hints.Zones, intern(z.Name))
			}
			for _, n := range h.ForNodes {
				se.Hints.Nodes = append(se.Hints.Nodes, intern(n.Name))
			}
		}
		out.Endpoints = append(out.Endpoints, se)
	}
	return out, nil
}

// FromNode reduces a Node to its topology labels.
func FromNode(n *corev1.Node) *Node { return nodeFromLabels(n.Name, n.Labels) }

func nodeFromLabels(name string, labels map[string]string) *Node {
	return &Node{Name: name, Zone: intern(labels[LabelZone]), Region: intern(labels[LabelRegion])}
}

// intern returns the one shared copy of s. Node, zone and hint names repeat
// on every endpoint; decoded, each is a separate allocation.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
