package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// nonDefaultValues turns every switch of the chart away from its default, so
// the dry run sees each optional template path.
const nonDefaultValues = `
image:
  tag: v9.9.9
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  pullPolicy: Always
imagePullSecrets: [{name: regcred}]
podSecurity: {enabled: false}
networkPolicy: {monitoringNamespace: prometheus}
fallbackService: {enabled: false}
nodeSelector: {kubernetes.io/os: linux}
tolerations:
- {operator: Exists, effect: NoSchedule}
- {key: dedicated, operator: Equal, value: grpc, effect: NoExecute}
resources:
  requests: {cpu: 100m, memory: 128Mi}
  limits: {memory: 1Gi, ephemeral-storage: 256Mi}
maxUnavailable: 10%
ports: {xds: 19000, admin: 19001}
admission: any
visibility: namespace
topology: {default: "zone,*"}
names: {defaultNamespace: apps, clusterDomain: example.org}
logLevel: debug
health:
  enabled: false
  interval: 2s
  jitter: 0
  maxEndpoints: 1000
certs: {enabled: true}
extraArgs: ["--coalesce=50ms"]
`

// TestHelmChart: deploy/helm/nodexds lints; with default values it renders
// exactly the objects of the kustomize base (deploy/), so the two cannot
// drift; `helm install --dry-run=server` and a server-side dry run of its
// rendering pass on the real API server with default and non-default values;
// the namespace's Pod Security labels leave hostPort as the only gap to
// "restricted", and the agent flags with defaults are passed only when set.
func TestHelmChart(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: clusterNodes[:1]})
	helm := helmBinary(t)
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(repo, "deploy", "helm", "nodexds")
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, []byte(nonDefaultValues), 0o644); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.WriteKubeconfig(t, c.AdminToken())
	run := func(cmd *exec.Cmd) string {
		t.Helper()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
		return string(out)
	}
	helmCmd := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(t.Context(), helm, args...)
		// A private home: no repositories, plugins or cache from the machine.
		home := t.TempDir()
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HELM_CACHE_HOME="+home,
			"HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
		return cmd
	}
	stdout := func(cmd *exec.Cmd) string {
		t.Helper()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderrOf(err))
		}
		return string(out)
	}

	t.Log(run(helmCmd("lint", "--strict", chart)))
	t.Log(run(helmCmd("lint", "--strict", "--values", valuesFile, chart)))

	base := decodeAll(t, strings.NewReader(stdout(c.Kubectl(t.Context(), "kustomize", filepath.Join(repo, "deploy")))))
	defaults := decodeAll(t, strings.NewReader(stdout(helmCmd("template", "nodexds", chart, "--namespace", "nodexds"))))
	t.Run("default values render the kustomize base", func(t *testing.T) {
		for _, d := range diffObjects(base, defaults) {
			t.Error(d)
		}
	})
	checkClusterRoleIsMinimal(t, defaults)

	custom := decodeAll(t, strings.NewReader(stdout(helmCmd("template", "nodexds", chart, "--namespace", "nodexds-custom", "--values", valuesFile))))
	t.Run("agent flags with defaults are passed only when set", func(t *testing.T) {
		optional := regexp.MustCompile(`^--(admit|visibility|health-|default-topology|default-namespace|cluster-domain|log-level|certs)`)
		for _, a := range daemonSetArgs(t, defaults) {
			if optional.MatchString(a) {
				t.Errorf("default render passes %s", a)
			}
		}
		got := daemonSetArgs(t, custom)
		for _, want := range []string{"--admit=any", "--visibility=namespace", "--xds-listen=:19000", "--admin-listen=:19001",
			"--default-topology=zone,*", "--default-namespace=apps", "--cluster-domain=example.org", "--log-level=debug",
			"--health-checks=false", "--health-interval=2s", "--health-jitter=0", "--health-max-endpoints=1000", "--certs=/var/run/secrets/spiffe.io", "--coalesce=50ms"} {
			if !slices.Contains(got, want) {
				t.Errorf("non-default render lacks %s; args %q", want, got)
			}
		}
		kinds := map[string]bool{}
		for _, o := range custom {
			kinds[o.GetKind()] = true
		}
		if kinds["Service"] {
			t.Errorf("fallbackService.enabled=false still renders a Service")
		}
		if !kinds["NetworkPolicy"] {
			t.Errorf("non-default render has no NetworkPolicy")
		}
	})

	// Server-side dry runs. The release namespaces are created for real
	// first, from the rendered Namespace object where there is one, so Pod
	// Security admission evaluates the DaemonSet against its labels.
	for _, r := range []struct {
		name, namespace string
		objs            []*unstructured.Unstructured
		args            []string
		podSecurity     bool // the namespace carries Pod Security labels
	}{
		{"default values", "nodexds", defaults, nil, true},
		{"non-default values", "nodexds-custom", custom, []string{"--values", valuesFile}, false},
	} {
		t.Run(r.name+" pass a server-side dry run", func(t *testing.T) {
			var nsDoc string
			for _, o := range r.objs {
				if o.GetKind() == "Namespace" {
					b, err := json.Marshal(o.Object)
					if err != nil {
						t.Fatal(err)
					}
					nsDoc = string(b)
				}
			}
			if nsDoc != "" {
				cmd := c.Kubectl(t.Context(), "apply", "-f", "-")
				cmd.Stdin = strings.NewReader(nsDoc)
				run(cmd)
			} else {
				run(c.Kubectl(t.Context(), "create", "namespace", r.namespace))
			}
			rendered := stdout(helmCmd(append([]string{"template", "nodexds", chart, "--namespace", r.namespace}, r.args...)...))
			cmd := c.Kubectl(t.Context(), "apply", "--dry-run=server", "-f", "-")
			cmd.Stdin = strings.NewReader(rendered)
			out := run(cmd)
			t.Logf("kubectl apply --dry-run=server (%s):\n%s", r.name, out)
			if r.podSecurity {
				checkPodSecurityGap(t, out)
			}
			// What the README tells users to run. The namespace exists
			// already, so the chart's Namespace object is adopted.
			out = run(helmCmd(append([]string{"install", "nodexds", chart, "--namespace", r.namespace,
				"--take-ownership", "--dry-run=server"}, r.args...)...))
			if !strings.Contains(out, "STATUS: pending-install") {
				t.Errorf("helm install --dry-run=server did not report a pending install:\n%s", out)
			}
		})
	}
}

// checkPodSecurityGap: with warn=restricted, the API server's warning for the
// DaemonSet must name hostPort and nothing else. A second violation (a
// capability, privilege escalation, a writable root...) is a regression.
func checkPodSecurityGap(t *testing.T, out string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^Warning: would violate PodSecurity "restricted:[^"]*": (.*)$`)
	m := re.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		t.Fatalf("want one Pod Security warning (hostPort) for the DaemonSet, got %d in:\n%s", len(m), out)
	}
	if v := m[0][1]; !strings.HasPrefix(v, "hostPort (") || strings.Contains(v, "), ") {
		t.Errorf("the only gap to restricted must be hostPort; the API server says: %s", v)
	}
}

// daemonSetArgs returns the agent container's args.
func daemonSetArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		cs, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if err != nil || len(cs) == 0 {
			t.Fatalf("DaemonSet %s: no containers (%v)", o.GetName(), err)
		}
		args, _, err := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
		if err != nil {
			t.Fatalf("DaemonSet %s args: %v", o.GetName(), err)
		}
		return args
	}
	t.Fatal("no DaemonSet rendered")
	return nil
}

// diffObjects compares two renderings object by object (keyed by kind,
// namespace and name; order and comments do not matter) and describes every
// difference with its field path.
func diffObjects(want, got []*unstructured.Unstructured) []string {
	key := func(o *unstructured.Unstructured) string {
		return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
	}
	index := func(objs []*unstructured.Unstructured) map[string]any {
		m := map[string]any{}
		for _, o := range objs {
			m[key(o)] = o.Object
		}
		return m
	}
	var out []string
	diffValue("", index(want), index(got), &out)
	return out
}

func diffValue(path string, want, got any, out *[]string) {
	wm, wok := want.(map[string]any)
	gm, gok := got.(map[string]any)
	if wok && gok {
		keys := map[string]bool{}
		for k := range wm {
			keys[k] = true
		}
		for k := range gm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			diffValue(path+"."+k, wm[k], gm[k], out)
		}
		return
	}
	ws, wok := want.([]any)
	gs, gok := got.([]any)
	if wok && gok && len(ws) == len(gs) {
		for i := range ws {
			diffValue(fmt.Sprintf("%s[%d]", path, i), ws[i], gs[i], out)
		}
		return
	}
	if !reflect.DeepEqual(want, got) {
		w, _ := json.Marshal(want)
		g, _ := json.Marshal(got)
		*out = append(*out, fmt.Sprintf("%s: kustomize %s, helm %s", strings.TrimPrefix(path, "."), w, g))
	}
}

// helmBinary returns the helm CLI built by e2e/build-helm.sh (cached, keyed
// by version; building it takes about 3 minutes the first time).
func helmBinary(t *testing.T) string {
	t.Helper()
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(repo, "e2e", "build-helm.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("e2e/build-helm.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
