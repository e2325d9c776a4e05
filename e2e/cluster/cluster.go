package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// EnvLogDir names an environment variable that, when set, makes the harness
// keep every component's log under $NODEXDS_E2E_LOGDIR/<test>-<run>/ instead
// of a temporary directory. Logs are printed (tails) on failure either way.
const EnvLogDir = "NODEXDS_E2E_LOGDIR"

// Options configures Start.
type Options struct {
	// Nodes are the simulated nodes: each gets a network namespace, an IP
	// and a Node object.
	Nodes []Node
	// Namespaces to create, each with its "default" ServiceAccount. The
	// "default" namespace always gets one.
	Namespaces []string
	// BinDir overrides where etcd, kube-apiserver,
	// kube-controller-manager and kubectl are found (default:
	// $NODEXDS_BIN_DIR, else e2e/build-bins.sh's cache directory, building
	// when needed).
	BinDir string
	// ExtraAPIServerArgs and ExtraControllerManagerArgs are appended to the
	// components' command lines (later flags win).
	ExtraAPIServerArgs         []string
	ExtraControllerManagerArgs []string
}

// Node describes a simulated node.
type Node struct {
	Name   string
	Zone   string // topology.kubernetes.io/zone
	Region string // topology.kubernetes.io/region
	// Labels are extra node labels.
	Labels map[string]string
}

// Cluster is a running control plane plus simulated nodes. It is torn down
// by the cleanups Start registers; there is no Stop method.
type Cluster struct {
	url        string
	ca         []byte
	adminToken string
	restConfig *rest.Config
	client     *kubernetes.Clientset
	net        *network
	dir        string // pki, kubeconfigs, etcd data
	logDir     string
	binDir     string
	// adminKubeconfig authenticates as the harness's system:masters user.
	adminKubeconfig string
	apiserver       apiServer
}

// Start brings up etcd, kube-apiserver and kube-controller-manager (only the
// EndpointSlice and EndpointSlice-mirroring controllers), the node network
// and the Node objects, and returns when the API server is ready. It skips
// the test when it cannot create network namespaces (needs root).
//
// Everything is torn down by t.Cleanup, also when Start itself fails.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	names := make([]string, 0, len(opts.Nodes))
	nodes := map[string]Node{}
	for _, n := range opts.Nodes {
		if n.Name == "" {
			t.Fatal("e2e: node with empty name")
		}
		if _, dup := nodes[n.Name]; dup {
			t.Fatalf("e2e: duplicate node %q", n.Name)
		}
		nodes[n.Name] = n
		names = append(names, n.Name)
	}

	// Network first: it decides whether this environment can run the
	// tests at all, before a possibly long binary build.
	netw := setupNetwork(t, names)
	binDir := findBinaries(t, opts.BinDir)

	c := &Cluster{net: netw, dir: t.TempDir(), binDir: binDir}
	c.logDir = c.makeLogDir(t)

	pki, err := generatePKI(c.dir,
		[]net.IP{netw.bridgeIP.AsSlice(), net.IPv4(127, 0, 0, 1),
			// The "kubernetes" Service's ClusterIP, as in a real cluster.
			netip.MustParsePrefix(serviceCIDR).Addr().Next().AsSlice()},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	c.ca = pki.caPEM
	c.adminToken = randomHex(t, 32)
	tokenFile := filepath.Join(c.dir, "tokens.csv")
	// The harness is a member of system:masters, which RBAC always allows.
	if err := os.WriteFile(tokenFile, []byte(c.adminToken+`,nodexds-e2e-admin,nodexds-e2e-admin,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatalf("e2e: write token file: %v", err)
	}

	etcdURL := c.startEtcd(t, binDir)
	c.startAPIServer(t, binDir, etcdURL, pki, tokenFile, opts.ExtraAPIServerArgs)

	c.restConfig = c.configForToken(c.adminToken)
	c.client, err = kubernetes.NewForConfig(c.restConfig)
	if err != nil {
		t.Fatalf("e2e: client: %v", err)
	}
	c.adminKubeconfig = c.WriteKubeconfig(t, c.adminToken)
	c.startControllerManager(t, binDir, c.adminKubeconfig, opts.ExtraControllerManagerArgs)

	for _, name := range names {
		c.createNode(t, nodes[name])
	}
	// The API server creates "default" in a post-start hook; with no
	// ServiceAccount controller its ServiceAccount is up to us.
	c.CreateNamespace(t, metav1.NamespaceDefault)
	for _, ns := range opts.Namespaces {
		c.CreateNamespace(t, ns)
	}
	c.dumpLogsOnFailure(t)
	t.Logf("e2e: cluster up: apiserver %s, %d nodes on bridge %s (%s), logs in %s",
		c.url, len(names), netw.bridge, netw.subnet, c.logDir)
	return c
}

// makeLogDir picks where component, pod and StartInNode logs go: under
// $NODEXDS_E2E_LOGDIR when set (kept), else in the test's temp dir.
func (c *Cluster) makeLogDir(t testing.TB) string {
	dir := filepath.Join(c.dir, "logs")
	if base := os.Getenv(EnvLogDir); base != "" {
		safe := regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_")
		dir = filepath.Join(base, safe+"-"+c.net.runID)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("e2e: log dir: %v", err)
	}
	return dir
}

// dumpLogsOnFailure prints the tail of every log when the test has failed.
// It is registered once the control plane is up, so (cleanups being LIFO)
// it runs before the components are stopped: the tails show the state at
// the failure rather than shutdown noise. A failure while starting a
// component already reports that component's log.
func (c *Cluster) dumpLogsOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		entries, _ := os.ReadDir(c.logDir)
		for _, e := range entries {
			t.Logf("e2e: ---- last lines of %s ----\n%s", e.Name(), fileTail(filepath.Join(c.logDir, e.Name()), 25))
		}
		if os.Getenv(EnvLogDir) == "" {
			t.Logf("e2e: full logs are deleted with the test's temp dir; set %s=/some/dir to keep them", EnvLogDir)
		} else {
			t.Logf("e2e: full logs in %s", c.logDir)
		}
	})
}

// readyFunc reports nil once a component serves.
type readyFunc func(ctx context.Context) error

// startComponent launches a control-plane process and waits for ready.
// launch is called once per attempt and picks fresh ports: a port found free
// can be taken by another program before the component binds it, so a
// start that fails with "address already in use" is retried.
func (c *Cluster) startComponent(t testing.TB, name string, timeout time.Duration, launch func() (*exec.Cmd, readyFunc)) *Process {
	t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		cmd, ready := launch()
		p := startForTest(t, name, filepath.Join(c.logDir, name+".log"), cmd, 10*time.Second)
		err := waitFor(t.Context(), timeout, 200*time.Millisecond, p, ready)
		if err == nil {
			return p
		}
		if exited, _ := p.Exited(); exited && attempt < attempts &&
			strings.Contains(p.LogTail(50), "address already in use") {
			t.Logf("e2e: %s lost a port race, retrying", name)
			continue
		}
		t.Fatalf("e2e: %s not ready: %v\n%s", name, err, p.LogTail(40))
	}
}

// waitFor polls check until it succeeds, the timeout passes or p (if not
// nil) exits.
func waitFor(ctx context.Context, timeout, interval time.Duration, p *Process, check readyFunc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var done <-chan struct{}
	if p != nil {
		done = p.Done()
	}
	var last error
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = check(attemptCtx)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-done:
			_, werr := p.Exited()
			return fmt.Errorf("%s exited (%v) before ready; last check: %w", p.Name, werr, last)
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s: %w", timeout, last)
		case <-time.After(interval):
		}
	}
}

func (c *Cluster) startEtcd(t testing.TB, binDir string) string {
	t.Helper()
	var clientURL string
	c.startComponent(t, "etcd", 30*time.Second, func() (*exec.Cmd, readyFunc) {
		clientPort, peerPort := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
		clientURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
		dataDir, err := os.MkdirTemp(c.dir, "etcd-data-")
		if err != nil {
			t.Fatalf("e2e: etcd data dir: %v", err)
		}
		cmd := exec.Command(filepath.Join(binDir, binEtcd),
			"--name=e2e",
			"--data-dir="+dataDir,
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=e2e="+peerURL,
			// Durability is irrelevant for a throwaway store; fsync
			// dominates its latency on slow disks.
			"--unsafe-no-fsync",
			"--log-level=warn",
		)
		u := clientURL
		return cmd, func(ctx context.Context) error {
			body, err := httpGet(ctx, http.DefaultClient, u+"/health", "")
			if err != nil {
				return err
			}
			if !strings.Contains(body, `"health":"true"`) {
				return fmt.Errorf("etcd /health: %s", body)
			}
			return nil
		}
	})
	return clientURL
}

func (c *Cluster) startAPIServer(t testing.TB, binDir, etcdURL string, pki *pkiFiles, tokenFile string, extra []string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	bind := c.net.bridgeIP.String()

	p := c.startComponent(t, binAPIServer, 90*time.Second, func() (*exec.Cmd, readyFunc) {
		port := freePort(t, bind)
		c.url = "https://" + net.JoinHostPort(bind, strconv.Itoa(port))
		args := []string{
			"--etcd-servers=" + etcdURL,
			// The bridge address is reachable both from the root
			// namespace (the test) and from every node namespace (agents,
			// clients); 127.0.0.1 would not be, and 0.0.0.0 would also
			// expose the test cluster on the host's real interfaces.
			"--bind-address=" + bind,
			"--advertise-address=" + bind,
			"--secure-port=" + strconv.Itoa(port),
			"--tls-cert-file=" + pki.servingCert,
			"--tls-private-key-file=" + pki.servingKey,
			"--cert-dir=" + filepath.Join(c.dir, "apiserver-certs"),
			"--token-auth-file=" + tokenFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + pki.saPublic,
			"--service-account-signing-key-file=" + pki.saPrivate,
			"--service-cluster-ip-range=" + serviceCIDR,
			// No reconciler: the "kubernetes" Service gets no endpoints,
			// which nothing here needs, and no lease bookkeeping runs.
			"--endpoint-reconciler-type=none",
			"--profiling=false",
			"--v=1",
		}
		cmd := exec.Command(filepath.Join(binDir, binAPIServer), append(args, extra...)...)
		u := c.url
		ready := func(ctx context.Context) error {
			body, err := httpGet(ctx, httpClient, u+"/readyz", c.adminToken)
			if err != nil {
				return err
			}
			if strings.TrimSpace(body) != "ok" {
				return fmt.Errorf("/readyz: %s", body)
			}
			return nil
		}
		// Kept for StartAPIServer, which restarts with these exact flags.
		c.apiserver.argv, c.apiserver.ready = cmd.Args, ready
		return cmd, ready
	})
	c.apiserver.proc = p
	// startComponent's cleanup stops the first process; a restarted one
	// (StartAPIServer) is stopped here, at the same point of the teardown
	// order, so pods created before the restart can still be deleted.
	t.Cleanup(func() {
		if cur := c.apiserver.current(); cur != p {
			if err := cur.Stop(10 * time.Second); err != nil {
				t.Errorf("e2e: teardown: %v", err)
			}
		}
	})
}

func (c *Cluster) startControllerManager(t testing.TB, binDir, kubeconfig string, extra []string) {
	t.Helper()
	// The controller manager serves healthz with a self-signed certificate
	// generated into --cert-dir; only its liveness matters here.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	c.startComponent(t, binKCM, 60*time.Second, func() (*exec.Cmd, readyFunc) {
		port := freePort(t, "127.0.0.1")
		args := []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			// Only the controllers that turn Services and Pods into
			// EndpointSlices: no scheduler, kubelet or node lifecycle
			// controller exists to drive anything else.
			"--controllers=endpointslice-controller,endpointslice-mirroring-controller",
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(c.dir, "kcm-certs"),
			"--v=2",
		}
		cmd := exec.Command(filepath.Join(binDir, binKCM), append(args, extra...)...)
		u := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz?verbose"
		return cmd, func(ctx context.Context) error {
			body, err := httpGet(ctx, insecure, u, "")
			if err != nil {
				return err
			}
			// The per-controller checks appear once the controllers
			// have been started, not merely when the server listens.
			if !strings.Contains(body, "endpointslice-controller ok") {
				return fmt.Errorf("controllers not started yet: %s", body)
			}
			return nil
		}
	})
}

// httpGet returns the body of a 200 response.
func httpGet(ctx context.Context, client *http.Client, url, bearer string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("request %s: %w", url, err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if err != nil {
		return "", fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// freePort returns a TCP port that was free on host a moment ago.
func freePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("e2e: find free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("e2e: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// URL is the API server's URL, https://<bridge IP>:<port>, reachable from
// the root namespace and from every node namespace.
func (c *Cluster) URL() string { return c.url }

// CABundle is the PEM CA bundle that verifies the API server.
func (c *Cluster) CABundle() []byte { return append([]byte(nil), c.ca...) }

// Client is a clientset authenticated as a system:masters member.
func (c *Cluster) Client() *kubernetes.Clientset { return c.client }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// AdminToken is the static bearer token of the harness's system:masters user.
func (c *Cluster) AdminToken() string { return c.adminToken }

// BridgeIP is the root namespace's address on the node network.
func (c *Cluster) BridgeIP() netip.Addr { return c.net.bridgeIP }

// NodeIP returns a node's IP (its InternalIP).
func (c *Cluster) NodeIP(node string) netip.Addr {
	nn, err := c.net.node(node)
	if err != nil {
		panic("e2e: " + err.Error())
	}
	return nn.ip
}

// NodeNetns returns the name of a node's network namespace (for
// `ip netns exec`).
func (c *Cluster) NodeNetns(node string) string {
	nn, err := c.net.node(node)
	if err != nil {
		panic("e2e: " + err.Error())
	}
	return nn.netns
}

// LogDir is where component, pod and StartInNode logs are written.
func (c *Cluster) LogDir() string { return c.logDir }

func (c *Cluster) configForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            c.url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CABundle()},
		// Tests create objects in bursts; client-side throttling would
		// only add unexplained latency.
		QPS:   200,
		Burst: 400,
	}
}

// Kubeconfig returns a kubeconfig for the API server authenticating with
// the given bearer token.
func (c *Cluster) Kubeconfig(token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.url, CertificateAuthorityData: c.CABundle()}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	cfg.CurrentContext = "e2e"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("encode kubeconfig: %w", err)
	}
	return b, nil
}

// WriteKubeconfig writes Kubeconfig(token) to a new file in the cluster's
// directory and returns its path.
func (c *Cluster) WriteKubeconfig(t testing.TB, token string) string {
	t.Helper()
	b, err := c.Kubeconfig(token)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	f, err := os.CreateTemp(c.dir, "kubeconfig-")
	if err != nil {
		t.Fatalf("e2e: kubeconfig: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatalf("e2e: write kubeconfig: %v", err)
	}
	return f.Name()
}

// ServiceAccountToken mints a token for namespace/name through the
// TokenRequest API (valid one hour, default audience), creating the
// ServiceAccount if it does not exist. RBAC for it is the caller's business.
func (c *Cluster) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx := t.Context()
	if err := c.ensureServiceAccount(ctx, namespace, name); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	expiry := int64(3600)
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("e2e: token for %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// CreateServiceAccount creates ServiceAccount namespace/name, unless it
// exists: what a pod needs before PodSpec.ServiceAccount may name it.
func (c *Cluster) CreateServiceAccount(t testing.TB, namespace, name string) {
	t.Helper()
	if err := c.ensureServiceAccount(t.Context(), namespace, name); err != nil {
		t.Fatalf("e2e: %v", err)
	}
}

func (c *Cluster) ensureServiceAccount(ctx context.Context, namespace, name string) error {
	_, err := c.client.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create serviceaccount %s/%s: %w", namespace, name, err)
	}
	return nil
}

// CreateNamespace creates a namespace (if needed) and its "default"
// ServiceAccount, which the ServiceAccount admission plugin requires before
// it admits Pods and which only the (absent) ServiceAccount controller would
// otherwise create. Namespaces are never deleted: without the namespace
// controller a deleted namespace would stay Terminating forever; they go
// away with the cluster.
func (c *Cluster) CreateNamespace(t testing.TB, name string) {
	t.Helper()
	ctx := t.Context()
	_, err := c.client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("e2e: create namespace %s: %v", name, err)
	}
	if err := c.ensureServiceAccount(ctx, name, "default"); err != nil {
		t.Fatalf("e2e: %v", err)
	}
}

// createNode registers a Node the way a kubelet would: labels, pod CIDR,
// addresses and a Ready condition. Nodes accept status on create. Nothing
// ever marks them NotReady: the node lifecycle controller is not running.
func (c *Cluster) createNode(t testing.TB, n Node) {
	t.Helper()
	nn, err := c.net.node(n.Name)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	labels := map[string]string{
		corev1.LabelHostname:       n.Name,
		corev1.LabelOSStable:       "linux",
		corev1.LabelArchStable:     "amd64",
		corev1.LabelTopologyZone:   n.Zone,
		corev1.LabelTopologyRegion: n.Region,
	}
	if n.Zone == "" {
		delete(labels, corev1.LabelTopologyZone)
	}
	if n.Region == "" {
		delete(labels, corev1.LabelTopologyRegion)
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels},
		Spec: corev1.NodeSpec{
			PodCIDR:  nn.podCIDR.String(),
			PodCIDRs: []string{nn.podCIDR.String()},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Phase:       corev1.NodeRunning,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: nn.ip.String()},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			Conditions: []corev1.NodeCondition{{
				Type:               corev1.NodeReady,
				Status:             corev1.ConditionTrue,
				Reason:             "KubeletReady",
				Message:            "simulated by the nodexds e2e harness",
				LastHeartbeatTime:  now,
				LastTransitionTime: now,
			}},
			NodeInfo: corev1.NodeSystemInfo{
				OperatingSystem: "linux",
				Architecture:    "amd64",
				KubeletVersion:  "v1.37.2",
			},
		},
	}
	if _, err := c.client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("e2e: create node %s: %v", n.Name, err)
	}
}

// RunInNode returns an unstarted command that runs argv inside the node's
// network namespace, with its own UTS namespace whose hostname is the node
// name (as on a real node). The command gets its own process group and is
// SIGKILLed if the test binary dies; the caller starts, stops and waits for
// it (see StartInNode for a managed variant). It panics on an unknown node.
func (c *Cluster) RunInNode(node string, argv ...string) *exec.Cmd {
	nn, err := c.net.node(node)
	if err != nil {
		panic("e2e: " + err.Error())
	}
	return netnsCmd(nn.netns, node, argv)
}

// netnsCmd returns a command running argv in netns, in a fresh UTS
// namespace with the given hostname, with the harness's process attributes.
// `ip netns exec`, unshare (without --fork) and sh's exec all replace
// themselves, so the command's pid ends up being argv's process.
func netnsCmd(netns, hostname string, argv []string) *exec.Cmd {
	args := []string{"netns", "exec", netns,
		"unshare", "--uts", "--",
		"sh", "-c", `hostname "$0" && exec "$@"`, hostname}
	cmd := exec.Command("ip", append(args, argv...)...)
	prepareCmd(cmd)
	return cmd
}

// StartInNode starts argv inside a node (see RunInNode) with its output in
// LogDir()/<name>.log, and stops it (SIGTERM, then SIGKILL after 5 s) in
// t.Cleanup. env is added to the test's environment.
func (c *Cluster) StartInNode(t testing.TB, node, name string, env []string, argv ...string) *Process {
	t.Helper()
	if _, err := c.net.node(node); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	cmd := c.RunInNode(node, argv...)
	cmd.Env = append(os.Environ(), env...)
	return startForTest(t, name, filepath.Join(c.logDir, name+".log"), cmd, 5*time.Second)
}
