package e2e

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// TestDeployManifestsPassServerSideDryRun: what deploy/ tells users to run
// (kubectl apply -k deploy/) is accepted by a real API server of the pinned
// Kubernetes version, with full server-side validation and admission; so
// are deploy/examples/ if they exist. The ClusterRole it renders is exactly
// what the agent needs (the agent tests prove it is also enough).
func TestDeployManifestsPassServerSideDryRun(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: clusterNodes[:1]})
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(t.Context(), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	deploy := filepath.Join(repo, "deploy")

	rendered := kubectl("kustomize", deploy)
	objs := decodeAll(t, strings.NewReader(rendered))
	checkClusterRoleIsMinimal(t, objs)

	// A server-side dry run persists nothing, so the namespaced objects
	// are refused (NotFound) for want of the namespace the same run
	// "creates". Create the namespaces first, for real; apply then updates
	// them (--save-config: as if they had been applied).
	for _, ns := range namespacesOf(objs) {
		kubectl("create", "namespace", "--save-config", ns)
	}
	out := kubectl("apply", "--dry-run=server", "-k", deploy)
	t.Logf("kubectl apply --dry-run=server -k deploy/:\n%s", out)

	// Overlays build on the base: same namespace, so no new one is needed.
	overlays, err := filepath.Glob(filepath.Join(deploy, "overlays", "*", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range overlays {
		dir := filepath.Dir(k)
		rel := strings.TrimPrefix(dir, repo+"/")
		objs := decodeAll(t, strings.NewReader(kubectl("kustomize", dir)))
		if filepath.Base(dir) == "pinned" && !imagesPinned(objs) {
			t.Errorf("%s: the agent image is not pinned by digest", rel)
		}
		if filepath.Base(dir) == "surge" {
			checkSurgeOverlay(t, c, objs)
		}
		t.Logf("kubectl apply --dry-run=server -k %s:\n%s", rel, kubectl("apply", "--dry-run=server", "-k", dir))
	}

	examples := filepath.Join(deploy, "examples")
	if _, err := os.Stat(examples); errors.Is(err, fs.ErrNotExist) {
		t.Logf("no deploy/examples/ to check")
		return
	}
	exampleObjs := decodeAll(t, strings.NewReader(kubectl("kustomize", examples)))
	for _, ns := range namespacesOf(exampleObjs) {
		if _, err := c.Kubectl(t.Context(), "get", "namespace", ns).CombinedOutput(); err != nil {
			kubectl("create", "namespace", "--save-config", ns)
		}
	}
	out = kubectl("apply", "--dry-run=server", "-k", examples)
	t.Logf("kubectl apply --dry-run=server -k deploy/examples/:\n%s", out)
}

// decodeAll reads every object of a multi-document YAML stream.
func decodeAll(t testing.TB, r io.Reader) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode manifests: %v", err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// imagesPinned reports whether every container image of every DaemonSet is
// pinned by digest.
func imagesPinned(objs []*unstructured.Unstructured) bool {
	n := 0
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			img, _ := c.(map[string]any)["image"].(string)
			if !strings.Contains(img, "@sha256:") {
				return false
			}
			n++
		}
	}
	return n > 0
}

// namespacesOf lists the namespaces objects live in or create.
func namespacesOf(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		ns := o.GetNamespace()
		if o.GetKind() == "Namespace" {
			ns = o.GetName()
		}
		if ns != "" && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// checkClusterRoleIsMinimal compares the rendered ClusterRole's rules,
// flattened to group/resource:verb, with what the agent uses: informers
// (list, watch) on Services, Nodes, Pods (this node's, for admission),
// Namespaces (their nodexds.io/ annotations) and EndpointSlices, Events
// (create, patch) for annotations it ignores, the
// Gateway API routes and ReferenceGrants it reads while their CRDs exist
// (list, watch), CustomResourceDefinitions (list, watch, as metadata) to
// see them appear, and for the route status writer a route (get) and its
// status (update). The Role of its Lease is namespaced, and not checked here.
func checkClusterRoleIsMinimal(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	want := []string{
		"/events:create", "/events:patch",
		"/namespaces:list", "/namespaces:watch",
		"/nodes:list", "/nodes:watch",
		"/pods:list", "/pods:watch",
		"/services:list", "/services:watch",
		"apiextensions.k8s.io/customresourcedefinitions:list", "apiextensions.k8s.io/customresourcedefinitions:watch",
		"discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch",
		"gateway.networking.k8s.io/grpcroutes/status:update",
		"gateway.networking.k8s.io/grpcroutes:get", "gateway.networking.k8s.io/grpcroutes:list", "gateway.networking.k8s.io/grpcroutes:watch",
		"gateway.networking.k8s.io/httproutes/status:update",
		"gateway.networking.k8s.io/httproutes:get", "gateway.networking.k8s.io/httproutes:list", "gateway.networking.k8s.io/httproutes:watch",
		"gateway.networking.k8s.io/referencegrants:list", "gateway.networking.k8s.io/referencegrants:watch",
	}
	found := false
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" {
			continue
		}
		found = true
		var role rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
			t.Fatalf("ClusterRole %s: %v", o.GetName(), err)
		}
		var got []string
		for _, r := range role.Rules {
			if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
				t.Errorf("ClusterRole %s: unexpected rule %+v", role.Name, r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						got = append(got, g+"/"+res+":"+v)
					}
				}
			}
		}
		slices.Sort(got)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			t.Errorf("ClusterRole %s grants\n  %s\nwant exactly\n  %s", role.Name, strings.Join(got, " "), strings.Join(want, " "))
		}
	}
	if !found {
		t.Errorf("deploy/ renders no ClusterRole")
	}
}
