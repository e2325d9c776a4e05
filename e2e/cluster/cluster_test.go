package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodexds/nodexds/e2e/cluster"
)

// helperEnv selects a helper role when the test binary re-executes itself
// inside a node or pod: this saves building separate workload programs.
const helperEnv = "NODEXDS_E2E_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "listen":
		os.Exit(helperListen())
	case "apicheck":
		os.Exit(helperAPICheck())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperListen is a pod workload: it accepts TCP connections on
// $POD_IP:$PORT and answers each with its hostname (the pod name).
func helperListen() int {
	l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("POD_IP"), os.Getenv("PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	host, _ := os.Hostname()
	fmt.Println("listening on", l.Addr(), "as", host)
	for {
		conn, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(conn, host)
		conn.Close()
	}
}

// helperAPICheck runs inside a node namespace, as an agent would: it dials
// the API server, lists EndpointSlices with the kubeconfig it was given, and
// asks a pod on another node for its name.
func helperAPICheck() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return fail(err)
	}
	host := strings.TrimPrefix(cfg.Host, "https://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return fail(fmt.Errorf("dial apiserver: %w", err))
	}
	conn.Close()

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	list, err := client.DiscoveryV1().EndpointSlices(os.Getenv("NAMESPACE")).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fail(fmt.Errorf("list endpointslices: %w", err))
	}
	conn, err = net.DialTimeout("tcp", os.Getenv("TARGET"), 5*time.Second)
	if err != nil {
		return fail(fmt.Errorf("dial pod: %w", err))
	}
	defer conn.Close()
	target, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fail(fmt.Errorf("read pod: %w", err))
	}
	hostname, _ := os.Hostname()
	fmt.Printf("hostname=%s endpointslices=%d target=%s\n", hostname, len(list.Items), strings.TrimSpace(target))
	return 0
}

func TestSmoke(t *testing.T) {
	start := time.Now()
	c := cluster.Start(t, cluster.Options{
		Nodes: []cluster.Node{
			{Name: "node-a1", Zone: "zone-a", Region: "region-1"},
			{Name: "node-a2", Zone: "zone-a", Region: "region-1"},
			{Name: "node-b1", Zone: "zone-b", Region: "region-2"},
			{Name: "node-b2", Zone: "zone-b", Region: "region-2"},
		},
		Namespaces: []string{"smoke"},
	})
	t.Logf("cluster started in %s", time.Since(start).Round(time.Millisecond))
	ctx := t.Context()
	client := c.Client()
	const ns = "smoke"

	_, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{
				Name: "tcp", Port: 80, TargetPort: intstr.FromString("echo"),
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	startEcho := func(name, node string) *cluster.Pod {
		return c.StartPod(t, cluster.PodSpec{
			Namespace: ns, Name: name, Node: node,
			Labels: map[string]string{"app": "echo"},
			Ports:  []corev1.ContainerPort{{Name: "echo", ContainerPort: 8080}},
			Argv:   []string{self},
			Env:    []string{helperEnv + "=listen", "PORT=8080"},
		})
	}
	p1 := startEcho("echo-1", "node-a1")
	p2 := startEcho("echo-2", "node-b1")
	t.Logf("pods %s=%s %s=%s", p1.Name, p1.IP, p2.Name, p2.IP)

	// Each pod answers with its own hostname, from the root namespace.
	for _, p := range []*cluster.Pod{p1, p2} {
		if got := readLine(t, p.IP.String()+":8080"); got != p.Name {
			t.Errorf("pod %s answered %q, want its name", p.Name, got)
		}
	}

	// The real EndpointSlice controller lists both, ready, with topology.
	want := map[string]struct{ node, zone string }{
		p1.IP.String(): {"node-a1", "zone-a"},
		p2.IP.String(): {"node-b1", "zone-b"},
	}
	waitEndpoints(t, c, ns, "echo", "both pods ready", func(eps map[string]discoveryv1.Endpoint, port int32) error {
		if port != 8080 {
			return fmt.Errorf("slice port %d, want 8080 (named target port)", port)
		}
		for ip, w := range want {
			ep, ok := eps[ip]
			if !ok {
				return fmt.Errorf("%s not listed", ip)
			}
			if !isTrue(ep.Conditions.Ready) {
				return fmt.Errorf("%s not ready", ip)
			}
			if ep.NodeName == nil || *ep.NodeName != w.node || ep.Zone == nil || *ep.Zone != w.zone {
				return fmt.Errorf("%s: node %v zone %v, want %s %s", ip, deref(ep.NodeName), deref(ep.Zone), w.node, w.zone)
			}
		}
		return nil
	})

	// Deleting a pod leaves it Terminating (no kubelet to finish it): its
	// endpoint stays, terminating and, while still Ready, serving.
	c.DeletePod(t, p1)
	ip1 := p1.IP.String()
	waitEndpoints(t, c, ns, "echo", "echo-1 terminating, serving", func(eps map[string]discoveryv1.Endpoint, _ int32) error {
		ep, ok := eps[ip1]
		if !ok {
			return fmt.Errorf("%s not listed", ip1)
		}
		if !isTrue(ep.Conditions.Terminating) || !isTrue(ep.Conditions.Serving) || isTrue(ep.Conditions.Ready) {
			return fmt.Errorf("%s conditions %s", ip1, conds(ep))
		}
		return nil
	})
	// Readiness failing while terminating: serving turns false.
	c.SetPodReady(t, p1, false)
	waitEndpoints(t, c, ns, "echo", "echo-1 terminating, not serving", func(eps map[string]discoveryv1.Endpoint, _ int32) error {
		ep, ok := eps[ip1]
		if !ok {
			return fmt.Errorf("%s not listed", ip1)
		}
		if !isTrue(ep.Conditions.Terminating) || isTrue(ep.Conditions.Serving) {
			return fmt.Errorf("%s conditions %s", ip1, conds(ep))
		}
		return nil
	})
	// The process exits; the kubelet reports a terminal phase and finishes
	// the deletion: the endpoint goes away, echo-2 is untouched.
	c.FinishPodDeletion(t, p1)
	waitEndpoints(t, c, ns, "echo", "only echo-2", func(eps map[string]discoveryv1.Endpoint, _ int32) error {
		if _, ok := eps[ip1]; ok {
			return fmt.Errorf("%s still listed", ip1)
		}
		if ep, ok := eps[p2.IP.String()]; !ok || !isTrue(ep.Conditions.Ready) {
			return fmt.Errorf("echo-2 missing or not ready")
		}
		return nil
	})

	// A process inside another node's namespace reaches the API server with
	// a ServiceAccount token (as an agent would) and the pod on node-b1.
	_, err = client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "slice-reader"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"},
			Verbs: []string{"get", "list", "watch"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create role: %v", err)
	}
	_, err = client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-slice-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "slice-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "agent"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create rolebinding: %v", err)
	}
	kubeconfig := c.WriteKubeconfig(t, c.ServiceAccountToken(t, ns, "agent"))
	cmd := c.RunInNode("node-b2", self)
	cmd.Env = append(os.Environ(), helperEnv+"=apicheck", "KUBECONFIG="+kubeconfig,
		"NAMESPACE="+ns, "TARGET="+p2.IP.String()+":8080")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("apicheck in node-b2: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "hostname=node-b2 endpointslices=1 target=echo-2"; got != want {
		t.Errorf("apicheck in node-b2: got %q, want %q", got, want)
	}
	t.Logf("smoke test body done %s after start", time.Since(start).Round(time.Millisecond))
}

// waitEndpoints polls the Service's EndpointSlices (by the
// kubernetes.io/service-name label) until check accepts the endpoints,
// keyed by address, and the port of the slices.
func waitEndpoints(t *testing.T, c *cluster.Cluster, ns, svc, what string, check func(map[string]discoveryv1.Endpoint, int32) error) {
	t.Helper()
	start := time.Now()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client().DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
		})
		if err != nil {
			return false, err
		}
		eps := map[string]discoveryv1.Endpoint{}
		var port int32
		for _, s := range list.Items {
			for _, p := range s.Ports {
				if p.Port != nil {
					port = *p.Port
				}
			}
			for _, ep := range s.Endpoints {
				for _, a := range ep.Addresses {
					eps[a] = ep
				}
			}
		}
		last = check(eps, port)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("waiting for EndpointSlices of %s/%s (%s): %v; last: %v", ns, svc, what, err, last)
	}
	t.Logf("EndpointSlices of %s/%s: %s after %s", ns, svc, what, time.Since(start).Round(time.Millisecond))
}

func readLine(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

func isTrue(b *bool) bool { return b != nil && *b }

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func conds(ep discoveryv1.Endpoint) string {
	var parts []string
	for _, c := range []struct {
		name string
		v    *bool
	}{{"ready", ep.Conditions.Ready}, {"serving", ep.Conditions.Serving}, {"terminating", ep.Conditions.Terminating}} {
		v := "<nil>"
		if c.v != nil {
			v = fmt.Sprint(*c.v)
		}
		parts = append(parts, c.name+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
