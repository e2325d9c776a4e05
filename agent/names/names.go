// Package names maps the names clients dial (xds:///NAME) to Service ports,
// and Service ports to the one canonical resource name all aliases share.
package names

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodexds/nodexds/discovery"
)

// Target is what a listener name asks for.
type Target struct {
	Service discovery.ServiceKey
	// Port is a port number or name; "" asks for the Service's only port.
	Port string
}

// Parser reads listener names. Accepted forms, each with an optional ":port":
//
//	svc.ns.svc.<cluster-domain>   svc.ns.svc   svc.ns   svc (in DefaultNamespace)
type Parser struct {
	DefaultNamespace string
	ClusterDomain    string
}

// Parse splits a listener name into a Target. It checks syntax only; whether
// the Service and port exist is for the caller to resolve.
func (p Parser) Parse(name string) (Target, error) {
	host, port := name, ""
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		host, port = name[:i], name[i+1:]
		if err := checkPort(port); err != nil {
			return Target{}, fmt.Errorf("name %q: %w", name, err)
		}
	}
	// "svc" is also a valid namespace name: strip the .svc suffix only from
	// the three-label form svc.ns.svc.
	labels := strings.Split(host, ".")
	if trimmed, ok := strings.CutSuffix(host, ".svc."+p.ClusterDomain); ok {
		labels = strings.Split(trimmed, ".")
		if len(labels) != 2 {
			return Target{}, fmt.Errorf("name %q: want svc[.ns[.svc[.%s]]][:port]", name, p.ClusterDomain)
		}
	} else if len(labels) == 3 && labels[2] == "svc" {
		labels = labels[:2]
	}
	var key discovery.ServiceKey
	switch len(labels) {
	case 1:
		key = discovery.ServiceKey{Namespace: p.DefaultNamespace, Name: labels[0]}
	case 2:
		key = discovery.ServiceKey{Namespace: labels[1], Name: labels[0]}
	default:
		return Target{}, fmt.Errorf("name %q: want svc[.ns[.svc[.%s]]][:port]", name, p.ClusterDomain)
	}
	for _, l := range []string{key.Name, key.Namespace} {
		if errs := validation.IsDNS1123Label(l); len(errs) > 0 {
			return Target{}, fmt.Errorf("name %q: %q: %s", name, l, errs[0])
		}
	}
	return Target{Service: key, Port: port}, nil
}

func checkPort(port string) error {
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			return fmt.Errorf("port %d out of range", n)
		}
		return nil
	}
	if errs := validation.IsValidPortName(port); len(errs) > 0 {
		return fmt.Errorf("port %q: %s", port, errs[0])
	}
	return nil
}

// Resolve finds the Service port a Target asks for.
func Resolve(t Target, svc *discovery.Service) (discovery.Port, error) {
	if t.Port == "" {
		if len(svc.Ports) != 1 {
			return discovery.Port{}, fmt.Errorf("service %s has %d ports: name one", svc.Key, len(svc.Ports))
		}
		return svc.Ports[0], nil
	}
	if p, ok := svc.Port(t.Port); ok {
		return p, nil
	}
	return discovery.Port{}, fmt.Errorf("service %s has no port %q", svc.Key, t.Port)
}

// Canonical is the resource name every alias of a Service port shares: the
// route configuration, cluster and load assignment are all named after it.
func (p Parser) Canonical(k discovery.ServiceKey, port int32) string {
	return k.Name + "." + k.Namespace + ".svc." + p.ClusterDomain + ":" + strconv.Itoa(int(port))
}
