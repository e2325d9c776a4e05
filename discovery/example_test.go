package discovery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

// exampleFile is the file-source example the README points to.
const exampleFile = "../docs/examples/file-source.yaml"

// TestExampleFileSourceLoads loads the shipped example through the file
// source, as `nodexds serve --source=file:docs/examples/file-source.yaml`
// does, and checks what it describes: three nodes in two zones, Service
// default/be1 port grpc 8080, and one ready pod on each node at 50051.
func TestExampleFileSourceLoads(t *testing.T) {
	src := &FileSource{Path: exampleFile, Poll: time.Hour, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	store := NewStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Start applies the file before it returns; later polls never come.
	if err := src.Start(ctx, func(e Event) { store.Apply(e) }); err != nil {
		t.Fatalf("%s: %v", exampleFile, err)
	}

	var nodes []string
	for _, name := range []string{"node-a", "node-b", "node-c"} {
		n, ok := store.Node(name)
		if !ok {
			t.Errorf("no Node %s", name)
			continue
		}
		nodes = append(nodes, fmt.Sprintf("%s %s/%s", n.Name, n.Region, n.Zone))
	}
	if want := []string{"node-a region-1/zone-1", "node-b region-1/zone-1", "node-c region-1/zone-2"}; !slices.Equal(nodes, want) {
		t.Errorf("nodes %q, want %q", nodes, want)
	}

	be1 := ServiceKey{Namespace: "default", Name: "be1"}
	if keys := store.ServiceKeys(); !slices.Equal(keys, []ServiceKey{be1}) {
		t.Errorf("Services %v, want only %v", keys, be1)
	}
	svc, ok := store.Service(be1)
	if !ok {
		t.Fatalf("no Service %v", be1)
	}
	if want := []Port{{Name: "grpc", Port: 8080}}; !slices.Equal(svc.Ports, want) {
		t.Errorf("be1 ports %v, want %v", svc.Ports, want)
	}

	var eps []string
	for _, e := range store.Endpoints(be1, "grpc") {
		eps = append(eps, fmt.Sprintf("%s %s %s %s/%s ready=%v", e.Addr, e.Pod, e.Node, e.Region, e.Zone, e.Ready))
	}
	slices.Sort(eps)
	want := []string{
		"127.0.0.1:50051 be1-a node-a region-1/zone-1 ready=true",
		"127.0.0.2:50051 be1-b node-b region-1/zone-1 ready=true",
		"127.0.0.3:50051 be1-c node-c region-1/zone-2 ready=true",
	}
	if !slices.Equal(eps, want) {
		t.Errorf("be1 endpoints:\n  %s\nwant:\n  %s", strings.Join(eps, "\n  "), strings.Join(want, "\n  "))
	}
}
