package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// containerName is the single container every simulated pod has.
const containerName = "main"

// PodSpec describes a pod for StartPod.
type PodSpec struct {
	Namespace string // default "default"
	Name      string
	Node      string
	Labels    map[string]string
	// Ports are declared on the container (named ports resolve for
	// Services) and, for TCP, waited on before the pod is marked Ready.
	Ports []corev1.ContainerPort
	// Argv is the pod's process. "{{IP}}", "{{NAME}}", "{{NAMESPACE}}" and
	// "{{NODE}}" in it are replaced by the pod's IP, name, namespace and
	// node. Empty Argv means no process: the pod only has an IP and
	// objects, enough for tests that never connect to it.
	Argv []string
	// Env is added to the test's environment, after POD_NAME,
	// POD_NAMESPACE, POD_IP, NODE_NAME and NODE_IP (the usual downward-API
	// variables), which the harness always sets.
	Env []string
	// NotReady leaves the Ready condition False after the pod starts
	// (phase Running), as a failing readiness probe would.
	NotReady bool
	// ReadyTimeout bounds the wait for Ports to accept connections
	// (default 30 s).
	ReadyTimeout time.Duration
	// HostNetwork makes a hostNetwork pod: its IP is the node's, and its
	// process (if any) shares the node's network like every other process
	// the harness runs in the node's namespace.
	HostNetwork bool
	// ServiceAccount is spec.serviceAccountName (default: the namespace's
	// "default"). The ServiceAccount admission plugin refuses the Pod unless
	// it exists: create it first (CreateServiceAccount).
	ServiceAccount string
}

// Pod is a pod started by StartPod.
type Pod struct {
	Namespace string
	Name      string
	Node      string
	IP        netip.Addr
	// Process is the pod's process, nil if PodSpec.Argv was empty.
	Process *Process

	ipReleased bool // set by FinishPodDeletion
}

// StartPod runs a pod the way a kubelet would: it allocates an IP on the
// node, creates the Pod with spec.nodeName, starts the process inside the
// node's network namespace (hostname = pod name), waits until its TCP ports
// accept connections, and then writes status through the status subresource
// (Running, podIP(s), Ready/ContainersReady, container status) so the real
// EndpointSlice controller picks it up.
//
// t.Cleanup stops the process, force-deletes the Pod and releases the IP.
func (c *Cluster) StartPod(t testing.TB, spec PodSpec) *Pod {
	t.Helper()
	if spec.Namespace == "" {
		spec.Namespace = metav1.NamespaceDefault
	}
	if spec.Name == "" || spec.Node == "" {
		t.Fatalf("e2e: StartPod needs Name and Node (got %q, %q)", spec.Name, spec.Node)
	}
	nn, err := c.net.node(spec.Node)
	if err != nil {
		t.Fatalf("e2e: pod %s/%s: %v", spec.Namespace, spec.Name, err)
	}
	ctx := t.Context()
	p := &Pod{Namespace: spec.Namespace, Name: spec.Name, Node: spec.Node}
	c.podIP(t, p, nn, spec.HostNetwork)
	c.createPod(t, p, spec)
	if len(spec.Argv) > 0 {
		if len(spec.Ports) > 0 {
			// As a kubelet does, the pod has its IP (Running, not Ready)
			// before its ports are waited on: a process may need the API to
			// know it first — an xDS-enabled server is admitted by its
			// node's agent by that IP, and opens its port only once the
			// agent has given it a Listener.
			if err := c.updatePodStatus(ctx, p, func(pod *corev1.Pod) { c.setRunning(pod, p, false) }); err != nil {
				t.Fatalf("e2e: %v", err)
			}
		}
		c.runWorkload(t, p, nn, spec)
	}
	if err := c.updatePodStatus(ctx, p, func(pod *corev1.Pod) {
		c.setRunning(pod, p, !spec.NotReady)
	}); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	return p
}

// podIP gives p the node's IP with the host network, else one allocated on
// the node and released in t.Cleanup unless FinishPodDeletion did.
func (c *Cluster) podIP(t testing.TB, p *Pod, nn *nodeNet, hostNetwork bool) {
	t.Helper()
	if hostNetwork {
		p.IP, p.ipReleased = nn.ip, true // the node's, never released
	} else {
		ip, err := c.net.allocPodIP(t.Context(), p.Node)
		if err != nil {
			t.Fatalf("e2e: pod %s: %v", p.key(), err)
		}
		p.IP = ip
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if p.ipReleased {
			return // FinishPodDeletion did it
		}
		if err := c.net.releasePodIP(ctx, p.Node, p.IP); err != nil {
			t.Errorf("e2e: teardown pod %s: %v", p.key(), err)
		}
	})
}

// createPod creates the Pod object, bound to its node, and force-deletes it
// in t.Cleanup.
func (c *Cluster) createPod(t testing.TB, p *Pod, spec PodSpec) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels},
		Spec: corev1.PodSpec{
			NodeName:           spec.Node,
			HostNetwork:        spec.HostNetwork,
			ServiceAccountName: spec.ServiceAccount,
			Containers: []corev1.Container{{
				Name: containerName,
				// Never pulled: nothing runs images here.
				Image: "nodexds.invalid/e2e-workload:local",
				Ports: spec.Ports,
			}},
		},
	}
	if _, err := c.client.CoreV1().Pods(spec.Namespace).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("e2e: create pod %s: %v", p.key(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.forceDelete(ctx, p); err != nil {
			t.Errorf("e2e: teardown pod %s: %v", p.key(), err)
		}
	})
}

// runWorkload starts the pod's process inside the node's network namespace
// and waits until its TCP ports accept connections.
func (c *Cluster) runWorkload(t testing.TB, p *Pod, nn *nodeNet, spec PodSpec) {
	t.Helper()
	argv := make([]string, len(spec.Argv))
	r := strings.NewReplacer("{{IP}}", p.IP.String(), "{{NAME}}", spec.Name,
		"{{NAMESPACE}}", spec.Namespace, "{{NODE}}", spec.Node)
	for i, a := range spec.Argv {
		argv[i] = r.Replace(a)
	}
	// Hostname = pod name, as in a real pod's UTS namespace.
	cmd := netnsCmd(nn.netns, spec.Name, argv)
	cmd.Env = append(os.Environ(),
		"POD_NAME="+spec.Name, "POD_NAMESPACE="+spec.Namespace, "POD_IP="+p.IP.String(),
		"NODE_NAME="+spec.Node, "NODE_IP="+nn.ip.String())
	cmd.Env = append(cmd.Env, spec.Env...)
	logName := "pod-" + spec.Namespace + "-" + spec.Name + ".log"
	p.Process = startForTest(t, "pod "+p.key(), filepath.Join(c.logDir, logName), cmd, 5*time.Second)
	timeout := spec.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	for _, port := range spec.Ports {
		if port.Protocol != "" && port.Protocol != corev1.ProtocolTCP {
			continue
		}
		addr := net.JoinHostPort(p.IP.String(), strconv.Itoa(int(port.ContainerPort)))
		// Dialled from the root namespace, across the bridge: this
		// also proves the pod is reachable from other nodes.
		err := waitFor(t.Context(), timeout, 100*time.Millisecond, p.Process, func(ctx context.Context) error {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return conn.Close()
		})
		if err != nil {
			t.Fatalf("e2e: pod %s: port %s: %v\n%s", p.key(), addr, err, p.Process.LogTail(20))
		}
	}
}

func (p *Pod) key() string { return p.Namespace + "/" + p.Name }

// setRunning fills in the status a kubelet reports for a running pod.
func (c *Cluster) setRunning(pod *corev1.Pod, p *Pod, ready bool) {
	now := metav1.Now()
	nodeIP := c.NodeIP(p.Node).String()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.HostIP = nodeIP
	pod.Status.HostIPs = []corev1.HostIP{{IP: nodeIP}}
	pod.Status.PodIP = p.IP.String()
	pod.Status.PodIPs = []corev1.PodIP{{IP: p.IP.String()}}
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	setCondition(pod, corev1.PodScheduled, true)
	setCondition(pod, corev1.PodReadyToStartContainers, true)
	setCondition(pod, corev1.PodInitialized, true)
	setCondition(pod, corev1.ContainersReady, ready)
	setCondition(pod, corev1.PodReady, ready)
	started := true
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name:        containerName,
		Image:       pod.Spec.Containers[0].Image,
		ImageID:     pod.Spec.Containers[0].Image,
		ContainerID: "containerd://" + containerID(),
		Ready:       ready,
		Started:     &started,
		State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *pod.Status.StartTime}},
	}}
}

// setCondition sets a pod condition, keeping its transition time when the
// status does not change (as the kubelet does).
func setCondition(pod *corev1.Pod, typ corev1.PodConditionType, value bool) {
	status := corev1.ConditionFalse
	if value {
		status = corev1.ConditionTrue
	}
	for i := range pod.Status.Conditions {
		cond := &pod.Status.Conditions[i]
		if cond.Type != typ {
			continue
		}
		if cond.Status != status {
			cond.Status = status
			cond.LastTransitionTime = metav1.Now()
		}
		return
	}
	pod.Status.Conditions = append(pod.Status.Conditions,
		corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: metav1.Now()})
}

func containerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail on Linux
	return hex.EncodeToString(b)
}

// updatePodStatus applies mutate to the current Pod and writes it through
// the status subresource, retrying on conflicts (the EndpointSlice
// controller does not write pods, but tests may, concurrently).
func (c *Cluster) updatePodStatus(ctx context.Context, p *Pod, mutate func(*corev1.Pod)) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := c.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(pod)
		_, err = c.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("update status of pod %s: %w", p.key(), err)
	}
	return nil
}

// SetPodReady flips the pod's Ready and ContainersReady conditions (and the
// container's ready flag), as a kubelet does when a readiness probe starts
// failing or passing. The process is left alone.
func (c *Cluster) SetPodReady(t testing.TB, p *Pod, ready bool) {
	t.Helper()
	if err := c.updatePodStatus(t.Context(), p, func(pod *corev1.Pod) {
		setCondition(pod, corev1.ContainersReady, ready)
		setCondition(pod, corev1.PodReady, ready)
		for i := range pod.Status.ContainerStatuses {
			pod.Status.ContainerStatuses[i].Ready = ready
		}
	}); err != nil {
		t.Fatalf("e2e: %v", err)
	}
}

// DeletePod deletes the Pod gracefully (its terminationGracePeriodSeconds,
// 30 s by default). With no kubelet to finish the deletion, the Pod stays
// in the API with a deletionTimestamp — Terminating — and its process keeps
// running, so the EndpointSlice controller reports the endpoint with
// terminating=true and serving=<still Ready>. Follow with KillPod and/or
// FinishPodDeletion to play the kubelet's part.
func (c *Cluster) DeletePod(t testing.TB, p *Pod) {
	t.Helper()
	if err := c.client.CoreV1().Pods(p.Namespace).Delete(t.Context(), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("e2e: delete pod %s: %v", p.key(), err)
	}
}

// KillPod stops the pod's process (SIGTERM, SIGKILL after grace) and
// reports it the way a kubelet would: container terminated with its exit
// code, Ready and ContainersReady False. A pod that is being deleted moves
// to its terminal phase (Succeeded on exit code 0, else Failed), which
// removes it from EndpointSlices; otherwise it stays Running (a kubelet
// would restart the container; this harness does not).
func (c *Cluster) KillPod(t testing.TB, p *Pod, grace time.Duration) {
	t.Helper()
	exitCode := int32(137)
	if p.Process != nil {
		if err := p.Process.Stop(grace); err != nil {
			t.Fatalf("e2e: kill pod %s: %v", p.key(), err)
		}
		if ps := p.Process.cmd.ProcessState; ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				exitCode = 128 + int32(ws.Signal())
			} else {
				exitCode = int32(ps.ExitCode())
			}
		}
	}
	err := c.updatePodStatus(t.Context(), p, func(pod *corev1.Pod) {
		now := metav1.Now()
		setCondition(pod, corev1.ContainersReady, false)
		setCondition(pod, corev1.PodReady, false)
		for i := range pod.Status.ContainerStatuses {
			cs := &pod.Status.ContainerStatuses[i]
			started := false
			cs.Ready, cs.Started = false, &started
			startedAt := now
			if cs.State.Running != nil {
				startedAt = cs.State.Running.StartedAt
			}
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exitCode, Reason: terminationReason(exitCode),
				StartedAt: startedAt, FinishedAt: now, ContainerID: cs.ContainerID,
			}}
		}
		if pod.DeletionTimestamp != nil {
			pod.Status.Phase = corev1.PodFailed
			if exitCode == 0 {
				pod.Status.Phase = corev1.PodSucceeded
			}
		}
	})
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
}

func terminationReason(exitCode int32) string {
	if exitCode == 0 {
		return "Completed"
	}
	return "Error"
}

// FinishPodDeletion completes a pod's deletion like a kubelet: it kills the
// process if still running (see KillPod), deletes the Pod with grace period
// 0 and waits until it is gone, then removes its IP from the node.
func (c *Cluster) FinishPodDeletion(t testing.TB, p *Pod) {
	t.Helper()
	if p.Process != nil {
		if exited, _ := p.Process.Exited(); !exited {
			c.KillPod(t, p, 5*time.Second)
		}
	}
	ctx := t.Context()
	if err := c.forceDelete(ctx, p); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if !p.ipReleased {
		if err := c.net.releasePodIP(ctx, p.Node, p.IP); err != nil {
			t.Fatalf("e2e: %v", err)
		}
	}
	p.ipReleased = true
}

// forceDelete deletes the Pod with grace period 0 and waits for it to
// disappear. A missing Pod is not an error.
func (c *Cluster) forceDelete(ctx context.Context, p *Pod) error {
	pods := c.client.CoreV1().Pods(p.Namespace)
	zero := int64(0)
	err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("force-delete pod %s: %w", p.key(), err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("wait for pod %s to be gone: %w", p.key(), err)
	}
	return nil
}
