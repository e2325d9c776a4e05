package agent

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

// Visibility says which clients see a Service.
type Visibility string

const (
	// VisibilityCluster: every admitted client sees every Service, as cluster
	// DNS already tells any pod.
	VisibilityCluster Visibility = "cluster"
	// VisibilityNamespace: a client sees the Services of its own namespace,
	// and those that export themselves to it (AnnotationExportTo).
	VisibilityNamespace Visibility = "namespace"
)

// ParseVisibility reads a --visibility value.
func ParseVisibility(s string) (Visibility, error) {
	switch v := Visibility(s); v {
	case VisibilityCluster, VisibilityNamespace:
		return v, nil
	}
	return "", fmt.Errorf("visibility %q: want cluster or namespace", s)
}

// AnnotationExportTo lists the namespaces, beyond its own, whose clients see
// a Service under --visibility=namespace: "*" for all, or a comma-separated
// list of namespace names.
const AnnotationExportTo = discovery.AnnotationPrefix + "export-to"

// scopeFor is who may see a Service's resources, and the annotation error if
// its export list cannot be read (it then exports to no other namespace:
// failing closed keeps a typo from publishing a private Service).
func scopeFor(svc *discovery.Service, v Visibility) (xds.Scope, *discovery.AnnotationError) {
	if v != VisibilityNamespace {
		return xds.Scope{}, nil
	}
	scope := xds.Scope{Namespace: svc.Key.Namespace}
	raw, ok := svc.Annotations[AnnotationExportTo]
	if !ok {
		return scope, nil
	}
	var export []string
	for _, f := range strings.Split(raw, ",") {
		f = strings.TrimSpace(f)
		if f == "*" {
			return xds.Scope{Namespace: svc.Key.Namespace, ExportTo: []string{"*"}}, nil
		}
		if errs := validation.IsDNS1123Label(f); len(errs) > 0 {
			return scope, &discovery.AnnotationError{Key: AnnotationExportTo, Value: raw,
				Err: fmt.Errorf("%q is not a namespace name (%s); exporting to no other namespace", f, strings.Join(errs, "; "))}
		}
		export = append(export, f)
	}
	slices.Sort(export)
	scope.ExportTo = slices.Compact(export)
	return scope, nil
}
