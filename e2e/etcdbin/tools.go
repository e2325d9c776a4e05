//go:build tools

// Package etcdbin pins the etcd server main package so that `go mod tidy`
// keeps its dependency graph in go.mod/go.sum. The build tag keeps it out
// of ordinary builds; e2e/build-bins.sh runs
// `go build go.etcd.io/etcd/server/v3` from this directory.
package etcdbin

import _ "go.etcd.io/etcd/server/v3"
