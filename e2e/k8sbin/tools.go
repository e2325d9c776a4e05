//go:build tools

// Package k8sbin pins the main packages of the binaries built by
// e2e/build-bins.sh so that `go mod tidy` keeps their whole dependency
// graph in go.mod/go.sum. The build tag keeps the package out of any
// ordinary build; the binaries are built with
// `go build k8s.io/kubernetes/cmd/kube-apiserver` etc. from this directory.
// kubectl (with its built-in kustomize) is pinned here too, so the e2e
// tests dry-run deploy/ with the same Kubernetes version as the API server.
package k8sbin

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
