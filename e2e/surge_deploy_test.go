package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// checkSurgeOverlay checks what makes deploy/overlays/surge roll without a
// gap, on the real API server: the update strategy surges; the agent runs on
// the host network with --reuse-port; its probes reach it over its own
// socket; and a Pod made from its template, as the DaemonSet controller
// makes it, holds no hostPort once the API server has defaulted it (on the
// host network a containerPort becomes one, and the scheduler would refuse
// the second pod on the node: the base's template, on the host network,
// shows that it does). The fallback Service targets a port the pods have.
func checkSurgeOverlay(t *testing.T, c *cluster.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	var ds appsv1.DaemonSet
	var svc corev1.Service
	for _, o := range objs {
		var into any
		switch o.GetKind() {
		case "DaemonSet":
			into = &ds
		case "Service":
			into = &svc
		default:
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil || ru.MaxSurge == nil || *ru.MaxSurge != intstr.FromInt32(1) || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("surge: rollingUpdate = %+v, want maxSurge 1, maxUnavailable 0", ru)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("surge: hostNetwork %t, dnsPolicy %q; want true, ClusterFirstWithHostNet", spec.HostNetwork, spec.DNSPolicy)
	}
	agent := spec.Containers[0]
	for _, arg := range []string{"--reuse-port", "--xds-listen=$(HOST_IP):18000"} {
		if !slices.Contains(agent.Args, arg) {
			t.Errorf("surge: agent args %v lack %s", agent.Args, arg)
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": agent.ReadinessProbe, "liveness": agent.LivenessProbe} {
		if p == nil || p.Exec == nil || !slices.Contains(p.Exec.Command, "probe") {
			t.Errorf("surge: %s probe %+v, want an exec probe with `nodexds probe` (an HTTP probe may reach the other pod)", name, p)
		}
	}

	// Pods as the DaemonSet controller would create them, defaulted and
	// validated by the API server (dry run; the ServiceAccount must exist,
	// in the namespace the test created).
	if out, err := c.Kubectl(t.Context(), "create", "serviceaccount", "-n", "nodexds", "nodexds").CombinedOutput(); err != nil && !strings.Contains(string(out), "AlreadyExists") {
		t.Fatalf("create serviceaccount: %v\n%s", err, out)
	}
	if ports := hostPortsOf(t, c, spec); len(ports) > 0 {
		t.Errorf("surge: a Pod of the DaemonSet holds hostPorts %v: the scheduler refuses a second one on a node, so maxSurge cannot work", ports)
	}
	base := spec.DeepCopy()
	base.Containers[0].Ports = []corev1.ContainerPort{{Name: "xds", ContainerPort: 18000}}
	if ports := hostPortsOf(t, c, *base); !slices.Equal(ports, []int32{18000}) {
		t.Errorf("on the host network, a containerPort 18000 became hostPorts %v, want [18000]: is this check still meaningful?", ports)
	}

	target := svc.Spec.Ports[0].TargetPort
	if target.Type == intstr.String || target.IntValue() != 18000 {
		t.Errorf("surge: fallback Service targets %s, want the ADS port by number (the pods name no ports)", target.String())
	}
}

// hostPortsOf dry-runs the creation of a Pod with spec on the first node and
// returns the hostPorts of the Pod the API server would store.
func hostPortsOf(t *testing.T, c *cluster.Cluster, spec corev1.PodSpec) []int32 {
	t.Helper()
	spec.NodeName = clusterNodes[0].Name
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "nodexds", Name: "surge-check"},
		Spec:       spec,
	}
	in, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.Kubectl(t.Context(), "create", "--dry-run=server", "-o", "json", "-f", "-")
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl create --dry-run=server a Pod of the DaemonSet: %v\n%s", err, out)
	}
	var created corev1.Pod
	if err := json.Unmarshal(out, &created); err != nil {
		t.Fatal(err)
	}
	var ports []int32
	for _, ctr := range created.Spec.Containers {
		for _, p := range ctr.Ports {
			if p.HostPort != 0 {
				ports = append(ports, p.HostPort)
			}
		}
	}
	return ports
}
