// Package conformance holds the Gateway API's mesh conformance fixtures,
// copied verbatim from sigs.k8s.io/gateway-api/conformance v1.6.3
// (tests/mesh/*.yaml and mesh/manifests.yaml; Apache License 2.0, The
// Kubernetes Authors), so that tests read them as the suite's authors wrote
// them.
package conformance

import "embed"

// Version is the conformance module version the fixtures come from.
const Version = "v1.6.3"

// Mesh holds tests/mesh/*.yaml, as mesh/NAME.yaml.
//
//go:embed mesh/*.yaml
var Mesh embed.FS

// Manifests is mesh/manifests.yaml: the namespaces, Services and
// Deployments every mesh conformance test runs against.
//
//go:embed mesh-manifests.yaml
var Manifests []byte
