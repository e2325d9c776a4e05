package discovery

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// FileSource reads Nodes, Namespaces, Services and EndpointSlices (and the
// Gateway API routes and ReferenceGrants), written as ordinary
// Kubernetes YAML or JSON (several documents per file, or kind: List), from a
// file or a directory of *.yaml, *.yml and *.json files, and re-reads them when
// their content changes. Unlike the API server it accepts loopback addresses,
// so a whole "cluster" can run on one host.
type FileSource struct {
	Path string
	// Poll is how often the files are checked for changes; a change is
	// applied when two checks in a row see the same content.
	Poll time.Duration
	Log  *slog.Logger
	// OnError is told about every reload that failed (for a metric); may be nil.
	OnError func(error)

	digest    [sha256.Size]byte // of what was last applied
	pending   [sha256.Size]byte // of a change seen once, applied when seen again
	pendingAt time.Time         // when pending was first seen
	last      map[string]Event  // by kind/namespace/name, as last sent
}

// emptySettle is how long files that read empty must stay so before they
// are taken for "every object deleted": an empty read is much more often a
// writer caught between truncating and writing than an intent.
const emptySettle = 2 * time.Second

// Start loads the files and sends their objects to sink; an error here (a
// missing or malformed file) is returned. Afterwards it watches the files in
// the background until ctx is done: a reload that fails is logged and the
// last good state stays in place.
func (f *FileSource) Start(ctx context.Context, sink func(Event)) error {
	if err := f.reload(sink); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(f.Poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := f.reload(sink); err != nil {
					f.Log.Error("file source: keeping the last good state", "error", err)
					if f.OnError != nil {
						f.OnError(err)
					}
				}
			}
		}
	}()
	return nil
}

// reload reads everything, and if the content changed, sends upserts for what
// is there and deletions for what is gone.
func (f *FileSource) reload(sink func(Event)) error {
	files, err := f.files()
	if err != nil {
		return err
	}
	h := sha256.New()
	contents := make([][]byte, len(files))
	size := 0
	for i, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("file source: %w", err)
		}
		contents[i] = b
		size += len(bytes.TrimSpace(b))
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	var digest [sha256.Size]byte
	h.Sum(digest[:0])
	if f.last != nil && digest == f.digest {
		return nil
	}
	// A change is applied once it reads the same on two polls in a row: a
	// file caught mid-write (truncated, half written) must not be taken for
	// "every object was deleted". The first load is applied at once.
	if f.last != nil && digest != f.pending {
		f.pending, f.pendingAt = digest, time.Now()
		return nil
	}
	if f.last != nil && size == 0 && len(f.last) > 0 && time.Since(f.pendingAt) < emptySettle {
		return nil
	}

	next := map[string]Event{}
	for i, name := range files {
		evs, err := ParseObjects(contents[i])
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, e := range evs {
			k := eventKey(e)
			if _, dup := next[k]; dup {
				return fmt.Errorf("%s: %s defined twice", name, k)
			}
			next[k] = e
		}
	}
	// Nodes first, so endpoints find their region; deletions last.
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range next {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		sink(next[k])
	}
	for k, e := range f.last {
		if _, ok := next[k]; !ok {
			e.Deleted = true
			sink(e)
		}
	}
	f.last, f.digest = next, digest
	f.Log.Info("file source loaded", "path", f.Path, "files", len(files), "objects", len(next))
	return nil
}

func (f *FileSource) files() ([]string, error) {
	info, err := os.Stat(f.Path)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	if !info.IsDir() {
		return []string{f.Path}, nil
	}
	var out []string
	err = filepath.WalkDir(f.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	slices.Sort(out)
	return out, nil
}

// eventKey orders Nodes before Namespaces before Services before
// EndpointSlices before routes.
func eventKey(e Event) string {
	switch {
	case e.Node != nil:
		return "0node/" + e.Node.Name
	case e.Namespace != nil:
		return "1namespace/" + e.Namespace.Name
	case e.Service != nil:
		return "2service/" + e.Service.Key.String()
	case e.Slice != nil:
		return "3endpointslice/" + e.Slice.Service.Namespace + "/" + e.Slice.Name
	case e.Grant != nil:
		return "4referencegrant/" + e.Grant.Namespace + "/" + e.Grant.Name
	default:
		return "5" + e.Route.Key.String()
	}
}

// ParseObjects reads Kubernetes objects from YAML or JSON documents and
// converts the kinds nodexds uses; other kinds are an error, so a typo in
// "kind" does not silently drop an object. Errors name the object.
func ParseObjects(data []byte) ([]Event, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Event
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		evs, err := parseObject(js)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		out = append(out, evs...)
	}
}

type header struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func parseObject(js []byte) ([]Event, error) {
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, err
	}
	name := h.Kind + " " + h.Metadata.Name
	if h.Metadata.Namespace != "" {
		name = h.Kind + " " + h.Metadata.Namespace + "/" + h.Metadata.Name
	}
	if h.Kind != "List" && h.Metadata.Name == "" {
		return nil, fmt.Errorf("%s: metadata.name is required", h.Kind)
	}
	switch h.Kind {
	case "List":
		var out []Event
		for i, item := range h.Items {
			evs, err := parseObject(item)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, evs...)
		}
		return out, nil
	case "Node":
		var n corev1.Node
		if err := strict(js, &n); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return []Event{{Node: FromNode(&n)}}, nil
	case "Service":
		var s corev1.Service
		if err := strict(js, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defaultNamespace(&s.ObjectMeta.Namespace)
		if len(s.Spec.Ports) == 0 {
			return nil, fmt.Errorf("%s: spec.ports is empty", name)
		}
		return []Event{{Service: FromService(&s)}}, nil
	case "EndpointSlice":
		var es discoveryv1.EndpointSlice
		if err := strict(js, &es); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defaultNamespace(&es.Namespace)
		if es.AddressType == "" {
			es.AddressType = discoveryv1.AddressTypeIPv4
		}
		sl, err := FromEndpointSlice(&es)
		if err != nil {
			return nil, err
		}
		return []Event{{Slice: sl}}, nil
	case "Namespace":
		// Its nodexds.io/ annotations set defaults for its Services. A
		// Namespace need not be written: Services' namespaces exist
		// implicitly here.
		var n corev1.Namespace
		if err := strict(js, &n); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return []Event{{Namespace: FromNamespace(&n)}}, nil
	}
	if gv := h.APIVersion; strings.HasPrefix(gv, gwv1.GroupName+"/") && gv != gwv1.GroupVersion.String() {
		return nil, fmt.Errorf("%s: apiVersion %s is not served (want %s)", name, gv, gwv1.GroupVersion)
	}
	switch h.Kind {
	case KindGRPCRoute:
		return namespaced(js, name, func(r *gwv1.GRPCRoute) Event { return Event{Route: FromGRPCRoute(r)} })
	case KindHTTPRoute:
		return namespaced(js, name, func(r *gwv1.HTTPRoute) Event { return Event{Route: FromHTTPRoute(r)} })
	case "ReferenceGrant":
		return namespaced(js, name, func(g *gwv1.ReferenceGrant) Event { return Event{Grant: FromReferenceGrant(g)} })
	}
	return nil, fmt.Errorf("%s: unsupported kind %q (want Node, Service, EndpointSlice, GRPCRoute, HTTPRoute, ReferenceGrant, Namespace or List)", name, h.Kind)
}

// namespaced decodes one namespaced object strictly, in namespace default
// unless it names one, and converts it.
func namespaced[T any, PT interface {
	*T
	GetNamespace() string
	SetNamespace(string)
}](js []byte, name string, convert func(PT) Event) ([]Event, error) {
	obj := PT(new(T))
	if err := strict(js, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace("default")
	}
	return []Event{convert(obj)}, nil
}

// strict decodes rejecting unknown fields: a misspelt field is an error, not
// a silently missing setting.
func strict(js []byte, into any) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	return d.Decode(into)
}

func defaultNamespace(ns *string) {
	if *ns == "" {
		*ns = "default"
	}
}
