package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// fieldManager owns the fields Apply writes.
const fieldManager = "nodexds-e2e"

// mappingTimeout bounds the wait for a kind to appear in the API server's
// discovery: a CRD is Established before every discovery document lists it.
const mappingTimeout = 30 * time.Second

// Apply server-side applies every object of a YAML (or JSON) stream of
// documents separated by "---", as `kubectl apply --server-side
// --force-conflicts` would: any kind the API server serves, custom
// resources included. A namespaced object without a namespace goes to
// "default". Objects are left for the cluster's teardown.
func (c *Cluster) Apply(t testing.TB, manifests string) {
	t.Helper()
	c.eachObject(t, manifests, func(r dynamic.ResourceInterface, obj *unstructured.Unstructured) error {
		_, err := r.Apply(t.Context(), obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
		return err
	})
}

// Delete deletes every object named by a YAML stream as Apply takes it
// (kind, namespace, name; the rest is ignored). Objects already gone are
// fine.
func (c *Cluster) Delete(t testing.TB, manifests string) {
	t.Helper()
	c.eachObject(t, manifests, func(r dynamic.ResourceInterface, obj *unstructured.Unstructured) error {
		err := r.Delete(t.Context(), obj.GetName(), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// Dynamic is a dynamic client authenticated as a system:masters member.
func (c *Cluster) Dynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatalf("e2e: dynamic client: %v", err)
	}
	return d
}

// eachObject decodes manifests and calls do with each object and the
// dynamic resource it belongs to, failing the test on the first error.
func (c *Cluster) eachObject(t testing.TB, manifests string, do func(dynamic.ResourceInterface, *unstructured.Unstructured) error) {
	t.Helper()
	objs, err := decodeObjects(manifests)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	dyn := c.Dynamic(t)
	disc, err := discovery.NewDiscoveryClientForConfig(c.RESTConfig())
	if err != nil {
		t.Fatalf("e2e: discovery client: %v", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		m, err := mapKind(t, mapper, gvk)
		if err != nil {
			t.Fatalf("e2e: %s %s: %v", gvk.Kind, obj.GetName(), err)
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(metav1.NamespaceDefault)
			}
			r = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		if err := do(r, obj); err != nil {
			t.Fatalf("e2e: %s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
	}
}

// mapKind finds the resource of a kind, waiting for a kind that discovery
// does not list yet (a CRD just established).
func mapKind(t testing.TB, mapper *restmapper.DeferredDiscoveryRESTMapper, gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	deadline := time.Now().Add(mappingTimeout)
	for {
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err == nil || !meta.IsNoMatchError(err) || time.Now().After(deadline) {
			return m, err
		}
		select {
		case <-t.Context().Done():
			return nil, t.Context().Err()
		case <-time.After(200 * time.Millisecond):
		}
		mapper.Reset()
	}
}

// decodeObjects reads a stream of YAML or JSON documents, skipping empty
// ones (comments only, a leading "---").
func decodeObjects(manifests string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(manifests)), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode manifest %d: %w", len(out)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		obj := &unstructured.Unstructured{Object: m}
		if obj.GetKind() == "" || obj.GetAPIVersion() == "" || obj.GetName() == "" {
			return nil, fmt.Errorf("manifest %d has no apiVersion, kind or metadata.name", len(out)+1)
		}
		out = append(out, obj)
	}
}
