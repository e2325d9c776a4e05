package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodexds/nodexds/internal/poll"
)

const goodYAML = `apiVersion: v1
kind: Node
metadata: {name: n1, labels: {topology.kubernetes.io/zone: z1}}
---
apiVersion: v1
kind: Service
metadata: {name: be1}
spec: {ports: [{name: grpc, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: be1-a, labels: {kubernetes.io/service-name: be1}}
addressType: IPv4
ports: [{name: grpc, port: 50051}]
endpoints:
- addresses: ["127.0.0.1"]
  nodeName: n1
`

func TestParseObjectsErrorsNameTheObject(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"misspelt field", "apiVersion: v1\nkind: Service\nmetadata: {name: be1}\nspec: {prots: []}\n",
			`document 1: Service be1: json: unknown field "prots"`},
		{"unsupported kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
			`document 1: Pod p: unsupported kind "Pod"`},
		{"service without ports", "apiVersion: v1\nkind: Service\nmetadata: {name: be1, namespace: ns}\nspec: {}\n",
			`Service ns/be1: spec.ports is empty`},
		{"bad address, second document", goodYAML[:strings.Index(goodYAML, "---")] + "---\n" +
			"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: be1}}\nendpoints: [{addresses: [nope]}]\n",
			`document 2: EndpointSlice default/s: address "nope"`},
		{"no name", "apiVersion: v1\nkind: Node\nmetadata: {}\n", "Node: metadata.name is required"},
		{"not yaml", "kind: [\n", "document 1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseObjects([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseObjectsReadsListsAndDefaultsTheNamespace(t *testing.T) {
	evs, err := ParseObjects([]byte(`{"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "be1"}, "spec": {"ports": [{"port": 80}]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Service.Key != (ServiceKey{"default", "be1"}) {
		t.Fatalf("got %+v", evs)
	}
}

// recorder collects what a source sends.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) sink(e Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }

func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func TestFileSourceKeepsTheLastGoodStateAndSendsDeletions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(goodYAML)
	var errs []error
	var mu sync.Mutex
	f := &FileSource{Path: dir, Poll: 5 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
		OnError: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }}
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := f.Start(ctx, r.sink); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); len(got) != 3 || got[0].Node == nil || got[1].Service == nil || got[2].Slice == nil {
		t.Fatalf("initial load sent %+v, want node, service, slice in that order", got)
	}

	write("apiVersion: v1\nkind: Service\nmetadata: {name: be1}\nspec: {porst: []}\n")
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(errs) > 0 })
	if got := r.take(); len(got) != 0 {
		t.Fatalf("a malformed file changed the state: %+v", got)
	}
	mu.Lock()
	if !strings.Contains(errs[0].Error(), "cluster.yaml: document 1: Service be1") {
		t.Errorf("error %q does not name the file and object", errs[0])
	}
	mu.Unlock()

	write(goodYAML[:strings.Index(goodYAML, "---\napiVersion: discovery.k8s.io/v1")]) // slice removed
	var got []Event
	waitFor(t, func() bool { got = append(got, r.take()...); return len(got) >= 3 })
	last := got[len(got)-1]
	if last.Slice == nil || !last.Deleted || last.Slice.Name != "be1-a" {
		t.Errorf("want the removed slice deleted last, got %+v", got)
	}
}

func TestFileSourceStartFailsOnAMalformedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("kind: Pod\nmetadata: {name: x}\n"), 0o644)
	f := &FileSource{Path: path, Poll: time.Second, Log: slog.New(slog.DiscardHandler)}
	err := f.Start(context.Background(), func(Event) {})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml: document 1: Pod x") {
		t.Fatalf("Start error = %v, want one naming the file and object", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	poll.Until(t, "the condition is met", cond)
}

func TestFileSourceTakesAnEmptyFileForDeletionsOnlyOnceItStaysEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, []byte(goodYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &FileSource{Path: path, Poll: 5 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := f.Start(ctx, r.sink); err != nil {
		t.Fatal(err)
	}
	r.take()
	// A writer caught between truncating and writing: empty for a while.
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got []Event
	waitFor(t, func() bool { got = append(got, r.take()...); return len(got) >= 3 })
	if waited := time.Since(start); waited < emptySettle-100*time.Millisecond {
		t.Errorf("an empty file was taken for deletions after %v, want no sooner than %v", waited, emptySettle)
	}
	for _, e := range got {
		if !e.Deleted {
			t.Errorf("want only deletions once the file stays empty, got %+v", e)
		}
	}
}

// A Namespace document sends its nodexds.io/ annotations (the defaults of its
// Services' policy), after the Nodes and before the Services; a changed
// annotation is an update, a removed document a deletion.
func TestFileSourceSendsNamespaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	namespace := func(annotations string) string {
		return "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}, annotations: {" + annotations + "}}\n---\n"
	}
	write(namespace("nodexds.io/mtls: strict, other.io/x: z") + goodYAML)
	f := &FileSource{Path: path, Poll: 5 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := f.Start(ctx, r.sink); err != nil {
		t.Fatal(err)
	}
	render := func(evs []Event) []string {
		var out []string
		for _, e := range evs {
			switch {
			case e.Node != nil:
				out = append(out, "node "+e.Node.Name)
			case e.Namespace != nil:
				out = append(out, fmt.Sprintf("namespace %s %v deleted=%t", e.Namespace.Name, e.Namespace.Annotations, e.Deleted))
			case e.Service != nil:
				out = append(out, "service "+e.Service.Key.String())
			case e.Slice != nil:
				out = append(out, "slice "+e.Slice.Name)
			}
		}
		return out
	}
	want := []string{"node n1", "namespace shop map[nodexds.io/mtls:strict] deleted=false", "service default/be1", "slice be1-a"}
	if got := render(r.take()); !slices.Equal(got, want) {
		t.Fatalf("initial load sent\n  %q\nwant\n  %q", got, want)
	}

	write(namespace("nodexds.io/mtls: permissive") + goodYAML)
	var got []Event
	waitFor(t, func() bool { got = append(got, r.take()...); return len(got) >= 4 })
	if e := got[1]; e.Namespace == nil || e.Namespace.Annotations[AnnotationPrefix+"mtls"] != "permissive" {
		t.Errorf("after the annotation changed, sent %q", render(got))
	}

	write(goodYAML)
	got = nil
	waitFor(t, func() bool { got = append(got, r.take()...); return len(got) >= 4 })
	if want := "namespace shop map[nodexds.io/mtls:permissive] deleted=true"; render(got)[3] != want {
		t.Errorf("after the Namespace was removed, sent %q, want %q last", render(got), want)
	}
}
