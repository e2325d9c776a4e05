// Command nodexds is the node-local xDS agent for proxyless gRPC.
//
//	nodexds serve       run the agent (in a DaemonSet, or on a file source)
//	nodexds bootstrap   print a gRPC xDS bootstrap for a client on this node
//	nodexds probe       ask this pod's agent for /healthz or /readyz (exec probe)
//	nodexds version     print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nodexds/nodexds/discovery/kubeapi"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/agent/identity"
	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/routestatus"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `nodexds: node-local xDS agent for proxyless gRPC.

Usage:
  nodexds serve [flags]       run the agent
  nodexds bootstrap [flags]   print a gRPC xDS bootstrap for a client on this node
  nodexds probe PATH          ask this pod's agent for /healthz or /readyz (exec probe)
  nodexds version             print the version

Run "nodexds <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(ctx, args)
	case "bootstrap":
		err = printBootstrap(args)
	case "probe":
		err = probe(ctx, args)
	case "demo":
		// The demo links gRPC's xDS client, which the agent leaves out.
		fmt.Fprintln(os.Stderr, "nodexds: the demo is its own program: make demo, or go run ./cmd/nodexds-demo")
		os.Exit(2)
	case "version", "--version", "-version":
		fmt.Println("nodexds", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "nodexds: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "nodexds:", err)
		os.Exit(1)
	}
}

// serveFlags are the agent's flags; tests build the same Options.
type serveFlags struct {
	source, kubeconfig, nodeName    string
	xdsListen, adminListen          string
	debugListen                     string
	defaultNamespace, clusterDomain string
	defaultTopology, logLevel       string
	coalesce, filePoll              time.Duration
	healthChecks                    bool
	maxPicker                       int
	pprof                           bool
	health                          health.Config
	admit, visibility               string
	limits                          xds.Limits
	// Surge rollouts (deploy/overlays/surge, docs/availability.md).
	reusePort                bool
	probeSocket              string
	drainDelay, drainTimeout time.Duration
	// Route status (agent/routestatus).
	statusLease, statusNamespace string
	// Zero trust (agent/trust, agent/servers.go).
	trustDomain string
	handover    time.Duration
	certs       string
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.source, "source", "kube", `where Services come from: "kube" (the API server) or "file:PATH" (YAML file or directory)`)
	fs.StringVar(&f.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig for -source=kube; empty means in-cluster")
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "the node this agent serves (default $NODE_NAME)")
	fs.StringVar(&f.xdsListen, "xds-listen", ":18000", "address to serve ADS on (the hostPort clients dial)")
	fs.StringVar(&f.adminListen, "admin-listen", ":18001", `address for /metrics, /healthz and /readyz; "" disables`)
	fs.StringVar(&f.debugListen, "debug-listen", "127.0.0.1:18002", `address for /debug/services, /debug/clients, CSDS (gRPC) and pprof: they name every client and Service, so loopback by default (reach it with kubectl port-forward); "" disables`)
	fs.BoolVar(&f.pprof, "pprof", false, "also serve net/http/pprof under /debug/pprof/ on the debug port")
	fs.StringVar(&f.defaultNamespace, "default-namespace", "default", "namespace of names that give none (xds:///svc:port)")
	fs.StringVar(&f.clusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain, as in svc.ns.svc.<domain>")
	fs.StringVar(&f.defaultTopology, "default-topology", topology.DefaultTiers.String(), "tiers for Services that set no policy: comma-separated node, zone, region, *")
	fs.DurationVar(&f.coalesce, "coalesce", 20*time.Millisecond, "burst window, per Service: a Service's first change is pushed at once, its later ones within the window together (other Services' changes never wait for it)")
	fs.DurationVar(&f.filePoll, "file-poll", time.Second, "how often -source=file re-reads its files")
	fs.IntVar(&f.maxPicker, "endpoint-picker-max-endpoints", agent.DefaultMaxPickerEndpoints, "Service ports with more endpoints get no endpoint-picker routes (each member costs clients up to two routes, a cluster and a load assignment); 0 or less means the default")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.reusePort, "reuse-port", false, "set SO_REUSEPORT on the ADS listener, so a new agent can listen beside this one on the same node (surge rollout); the ADS port is then opened only once the agent is ready, and a held admin port is taken when its holder exits")
	fs.StringVar(&f.probeSocket, "probe-socket", "", `also serve /healthz and /readyz on this unix socket, for "nodexds probe" (exec probes that must reach this pod); "" disables`)
	fs.DurationVar(&f.drainDelay, "drain-delay", 2*time.Second, "with -reuse-port: on SIGTERM, how long open ADS streams are still served after the listener closes, before GOAWAY (without -reuse-port nothing can replace this agent before it exits, so streams are cut at once, after a GOAWAY)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, the agent exits within this long")
	fs.StringVar(&f.statusLease, "status-lease", "nodexds-route-status", `with -source=kube: the coordination.k8s.io Lease whose holder, one agent of all, writes the status of GRPCRoutes and HTTPRoutes attached to Services; "" disables status writing`)
	fs.StringVar(&f.statusNamespace, "status-lease-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the -status-lease Lease (default $POD_NAMESPACE, the agent's own); empty disables status writing")

	fs.StringVar(&f.trustDomain, "trust-domain", trust.DefaultTrustDomain, "SPIFFE trust domain of the workload identities (spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>), as the certificates' issuer writes them (csi-driver-spiffe's default is cluster.local)")
	fs.StringVar(&f.certs, "certs", "", "the agent's own certificate files (tls.crt, tls.key, ca.crt: a csi-driver-spiffe volume): with them it checks the health of mTLS Services' servers over mTLS, and their Listeners let its SPIFFE ID call the health service; without, those endpoints are not checked")
	fs.DurationVar(&f.handover, "mtls-handover", agent.DefaultHandover, "when a Service's nodexds.io/mtls moves between disabled and permissive or strict, its clients change at once and its servers this long after (gRPC servers cannot accept TLS and plaintext on one port): longer than any agent takes to see the change; clients that redial when their TLS settings change (grpc-js-xds, C-core) move to fresh clusters around the servers' handover")
	fs.StringVar(&f.admit, "admit", "", `who may open ADS streams: "node-pods" (only Pods on this node, by peer IP; the default with -source=kube) or "any" (the default with -source=file:PATH)`)
	fs.StringVar(&f.visibility, "visibility", string(agent.VisibilityCluster), `which Services a client sees: "cluster" (all, as cluster DNS tells any pod) or "namespace" (its own namespace's, and those exporting themselves with the nodexds.io/export-to annotation; needs -admit=node-pods)`)
	l := xds.DefaultLimits
	fs.IntVar(&f.limits.MaxNamesPerType, "max-names-per-type", l.MaxNamesPerType, "resource names one ADS stream may subscribe to per type (beyond: the stream ends RESOURCE_EXHAUSTED)")
	fs.IntVar(&f.limits.MaxNamesPerPeer, "max-names-per-peer", l.MaxNamesPerPeer, "resource names all ADS streams from one IP may subscribe to, all types together")
	fs.IntVar(&f.limits.MaxNames, "max-names", l.MaxNames, "resource names all ADS streams may subscribe to in all (beyond: the stream adding more ends RESOURCE_EXHAUSTED)")
	fs.IntVar(&f.limits.MaxStreamsPerPeer, "max-streams-per-peer", l.MaxStreamsPerPeer, "ADS streams open at once from one IP (and on one connection: its HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)")
	fs.IntVar(&f.limits.MaxStreams, "max-streams", l.MaxStreams, "ADS streams open at once in all")
	fs.IntVar(&f.limits.MaxConnsPerPeer, "max-conns-per-peer", l.MaxConnsPerPeer, "connections open at once from one IP to the ADS port")
	fs.IntVar(&f.limits.MaxConns, "max-conns", l.MaxConns, "connections open at once to the ADS port in all")
	fs.DurationVar(&f.limits.SendTimeout, "send-timeout", l.SendTimeout, "a stream whose client has not read a response for this long is ended")

	d := health.DefaultConfig
	fs.BoolVar(&f.healthChecks, "health-checks", true, "actively check endpoints that this node's clients use, with the gRPC health protocol")
	fs.DurationVar(&f.health.Interval, "health-interval", d.Interval, "time between Check calls (servers without Watch), and idle time before TCP keepalive probes a Watch connection")
	fs.DurationVar(&f.health.LivenessInterval, "health-liveness-interval", d.LivenessInterval, "how often an open Watch stream is confirmed with a Check call, to catch hung servers; 0 disables")
	fs.DurationVar(&f.health.Timeout, "health-timeout", d.Timeout, "deadline of one check, and of a Watch stream's first answer")
	fs.IntVar(&f.health.UnhealthyThreshold, "health-unhealthy-threshold", d.UnhealthyThreshold, "failed results in a row that make an endpoint unhealthy; a status pushed on a Watch stream counts like a Check answer, and one short of the threshold is confirmed with Check calls 0.5 s apart")
	fs.IntVar(&f.health.HealthyThreshold, "health-healthy-threshold", d.HealthyThreshold, "passed results (Watch messages or Check answers) in a row that make an endpoint healthy again")
	fs.Float64Var(&f.health.Jitter, "health-jitter", d.Jitter, "spread of check times, as a fraction of the interval")
	fs.IntVar(&f.health.MaxDials, "health-max-dials", d.MaxDials, "connection attempts to endpoints in flight at once")
	fs.IntVar(&f.health.MaxEndpoints, "health-max-endpoints", d.MaxEndpoints, "budget of endpoints checked at once, shared fairly among the Services in use (each checks its own node's and zone's endpoints first); endpoints beyond it keep the health Kubernetes reports (metric nodexds_health_unchecked_endpoints)")
	fs.DurationVar(&f.health.Linger, "health-linger", d.Linger, "keep checking an endpoint this long after the last client of this node stopped using it (within what the budget leaves), so a client that comes back is served its current health; 0 stops at once")
}

// validTrustDomain: SPIFFE's trust domain characters, at most 255.
func validTrustDomain(td string) bool {
	if td == "" || len(td) > 255 {
		return false
	}
	for _, r := range td {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// newLogger writes JSON logs to w, from level up.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l, ReplaceAttr: durationWithUnit})), nil
}

// durationWithUnit logs durations as Go writes them, with their unit
// ("took":"6ms", as the flags take them); the JSON handler alone writes
// nanoseconds.
func durationWithUnit(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// runServe is `nodexds serve`.
func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, f.logLevel)
	if err != nil {
		return err
	}
	setMemoryLimit(log)
	if f.nodeName == "" {
		return errors.New("-node-name (or $NODE_NAME) is required: the agent prioritizes for its node")
	}
	if f.filePoll <= 0 || f.coalesce < 0 {
		return errors.New("-file-poll must be positive and -coalesce not negative")
	}
	// Every flag is checked before anything touches the network.
	if f.drainTimeout <= 0 || f.drainDelay < 0 || f.drainDelay >= f.drainTimeout {
		return errors.New("-drain-timeout must be positive, -drain-delay not negative and below it")
	}
	if f.source != "kube" && !strings.HasPrefix(f.source, "file:") {
		return fmt.Errorf(`-source=%q: want "kube" or "file:PATH"`, f.source)
	}
	if f.healthChecks {
		if err := validHealth(f.health); err != nil {
			return err
		}
	}
	healthIdentity := ""
	if f.certs != "" {
		id, err := identity.Open(f.certs)
		if err != nil {
			return fmt.Errorf("-certs: %w", err)
		}
		if !strings.HasPrefix(id.ID(), "spiffe://"+f.trustDomain+"/") {
			return fmt.Errorf("-certs: the certificate's SPIFFE ID %s is not of -trust-domain=%s", id.ID(), f.trustDomain)
		}
		if f.healthChecks {
			f.health.TLS, healthIdentity = id.ClientConfig, id.ID()
		}
	}
	tiers, err := topology.ParseTiers(f.defaultTopology)
	if err != nil {
		return fmt.Errorf("-default-topology: %w", err)
	}
	o := serve.Options{
		Config: agent.Config{
			NodeName:           f.nodeName,
			Names:              names.Parser{DefaultNamespace: f.defaultNamespace, ClusterDomain: f.clusterDomain},
			DefaultTiers:       tiers,
			Coalesce:           f.coalesce,
			MaxPickerEndpoints: f.maxPicker,
			TrustDomain:        f.trustDomain,
			Handover:           f.handover,
			HealthIdentity:     healthIdentity,
		},
		Log:             log,
		Pprof:           f.pprof,
		SteadyGCPercent: steadyGOGC(),
	}
	o.Registry = serve.NewRegistry()
	o.Metrics = metrics.New(o.Registry)
	o.Metrics.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	statusMetrics := routestatus.NewMetrics(o.Registry)
	if f.healthChecks {
		prober := health.NewProber(f.health, health.NewMetrics(o.Registry), log)
		defer prober.Close()
		o.Checker = prober
	}
	if o.Visibility, err = agent.ParseVisibility(f.visibility); err != nil {
		return fmt.Errorf("-visibility: %w", err)
	}
	o.Limits = f.limits
	admit := f.admit
	if admit == "" {
		admit = "any"
		if f.source == "kube" {
			admit = "node-pods"
		}
	}
	switch {
	case admit != "node-pods" && admit != "any":
		return fmt.Errorf(`-admit=%q: want "node-pods" or "any"`, admit)
	case admit == "node-pods" && f.source != "kube":
		return errors.New("-admit=node-pods needs -source=kube (it watches this node's Pods)")
	case o.Visibility == agent.VisibilityNamespace && admit != "node-pods":
		return errors.New("-visibility=namespace needs -admit=node-pods (a client's namespace is that of its Pod)")
	case !validTrustDomain(f.trustDomain):
		return fmt.Errorf("-trust-domain=%q: want a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')", f.trustDomain)
	case f.handover <= 0:
		return fmt.Errorf("-mtls-handover=%v: want a positive duration", f.handover)
	}
	o.PodsAdmitted = admit == "node-pods"
	// The source in use is exported at 0 from the start.
	sourceError := func(source string) func(error) {
		errs := o.Metrics.SourceErrors.WithLabelValues(source)
		return func(error) { errs.Inc() }
	}
	switch {
	case f.source == "kube":
		cfg, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
		if err != nil {
			return fmt.Errorf("kubernetes client config: %w", err)
		}
		cfg.UserAgent = "nodexds/" + version
		plainInitialLists()
		// Protobuf for Services, slices and Pods: decoding the initial lists
		// as JSON takes 1.4–1.9 s at 11,000 Services and slices, protobuf
		// 0.3 s (docs/BENCHMARKS.md).
		api, err := kubeapi.New(cfg)
		if err != nil {
			return err
		}
		o.Source = &discovery.KubeSource{API: api, Log: log, OnError: sourceError("kube")}
		if admit == "node-pods" {
			pods := &discovery.PodIndex{API: api, Node: f.nodeName}
			if err := pods.Start(ctx); err != nil {
				return err
			}
			foreign := &discovery.PodsOnNode{API: api}
			o.Admit = agent.NodePods{Pods: pods, Foreign: foreign.Lookup, Node: f.nodeName, Grace: agent.DefaultAdmissionGrace}.Admit
		}
		if err := routeStatus(&o, cfg, f, statusMetrics); err != nil {
			return err
		}
		rec := discovery.NewEventRecorder(api, f.nodeName)
		defer rec.Stop()
		o.Reporter = eventReporter{rec}
	case strings.HasPrefix(f.source, "file:"):
		o.Source = &discovery.FileSource{Path: strings.TrimPrefix(f.source, "file:"), Poll: f.filePoll, Log: log, OnError: sourceError("file")}
	default:
		return fmt.Errorf(`-source=%q: want "kube" or "file:PATH"`, f.source)
	}
	o.DrainTimeout = f.drainTimeout
	if f.reusePort {
		o.DrainDelay = f.drainDelay
		o.ListenXDS = func() (net.Listener, error) { return listenTCP(f.xdsListen, true) }
	} else if o.XDS, err = listenTCP(f.xdsListen, false); err != nil {
		return err
	}
	// With --reuse-port another agent may hold these ports (and the node's
	// loopback) for a while: they are taken when free.
	listen := func(addr string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		if f.reusePort {
			return listenWhenFree(addr, 500*time.Millisecond, log)
		}
		return net.Listen("tcp", addr)
	}
	if o.Admin, err = listen(f.adminListen); err != nil {
		return err
	}
	if f.probeSocket != "" {
		if o.Probe, err = listenUnix(f.probeSocket); err != nil {
			return err
		}
	}
	if o.Debug, err = listen(f.debugListen); err != nil {
		return err
	}
	log.Info("starting nodexds", "version", version, "node", f.nodeName, "source", f.source, "admit", admit, "visibility", o.Visibility)
	return serve.Run(ctx, o)
}

// routeStatus makes the agent write route status while it holds the
// -status-lease Lease; nothing when that is disabled.
func routeStatus(o *serve.Options, cfg *rest.Config, f serveFlags, m *routestatus.Metrics) error {
	if f.statusLease == "" || f.statusNamespace == "" {
		o.Log.Info("route status: not written", "why", "-status-lease or -status-lease-namespace ($POD_NAMESPACE) is empty")
		return nil
	}
	dyn, err := kubeapi.Dynamic(cfg)
	if err != nil {
		return err
	}
	id := f.nodeName
	if pod := os.Getenv("POD_NAME"); pod != "" {
		id += "/" + pod
	}
	w := &routestatus.Writer{
		Client:  dyn,
		Elector: &routestatus.Elector{Client: dyn, Namespace: f.statusNamespace, Name: f.statusLease, Identity: id, Log: o.Log},
		Metrics: m,
		Log:     o.Log,
	}
	o.Synced = func(ctx context.Context, a *agent.Agent) {
		w.Statuses = a.RouteStatuses
		w.Run(ctx)
	}
	return nil
}

func validHealth(c health.Config) error {
	switch {
	case c.Interval <= 0 || c.Timeout <= 0 || c.LivenessInterval < 0 || c.Linger < 0:
		return errors.New("-health-interval and -health-timeout must be positive, -health-liveness-interval and -health-linger not negative")
	case c.UnhealthyThreshold < 1 || c.HealthyThreshold < 1:
		return errors.New("-health-*-threshold must be at least 1")
	case c.Jitter < 0 || c.Jitter >= 1:
		return errors.New("-health-jitter must be in [0, 1)")
	case c.MaxDials < 1 || c.MaxEndpoints < 1:
		return errors.New("-health-max-dials and -health-max-endpoints must be at least 1")
	}
	return nil
}

// eventReporter surfaces what the agent cannot use as Warning Events on the
// objects their authors edit.
type eventReporter struct{ rec *discovery.EventRecorder }

func (r eventReporter) AnnotationError(svc *discovery.Service, e *discovery.AnnotationError) {
	r.rec.Warn(svc.Key, svc.UID, "InvalidAnnotation", e.Error()+"; using the next rule")
}

func (r eventReporter) RouteRefused(route *discovery.Route, p *mesh.Problem) {
	r.rec.WarnRoute(route, p.Reason, p.Message)
}

var _ agent.RouteReporter = eventReporter{}

// bootstrapFlags are the flags of nodexds bootstrap.
type bootstrapFlags struct {
	server, nodeID, zone, region string
	nodeName, fallback, out      string
	namespace                    string
	certs                        string
	certRefresh                  time.Duration
}

func (f *bootstrapFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", "", "agent address host:port (default $HOST_IP:18000)")
	fs.StringVar(&f.nodeID, "node-id", "", "client id shown in the agent's logs (default $POD_NAMESPACE/$POD_NAME, else the hostname)")
	fs.StringVar(&f.zone, "zone", os.Getenv("NODE_ZONE"), "client zone, informational (default $NODE_ZONE)")
	fs.StringVar(&f.region, "region", os.Getenv("NODE_REGION"), "client region, informational (default $NODE_REGION)")
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "the node the client runs on (default $NODE_NAME), so an agent of another node serving as its fallback answers with this node's view")
	fs.StringVar(&f.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the client's namespace (default $POD_NAMESPACE), so that its namespace's Gateway API routes (consumer routes) apply to it when the agent runs with --admit=any")
	fs.StringVar(&f.fallback, "fallback-server", "", "a second xDS server (gRFC A71), used only while -server is unreachable, e.g. nodexds-fallback.nodexds.svc:18000")
	fs.StringVar(&f.certs, "certs", "", "absolute path of the directory of the workload's certificate files tls.crt, tls.key and ca.crt (csi-driver-spiffe's, e.g. /var/run/secrets/spiffe.io): adds the file_watcher certificate provider \"nodexds\" over them for mTLS (xDS credentials) and the server listener template for xDS-enabled servers; empty: no TLS")
	fs.DurationVar(&f.certRefresh, "cert-refresh", bootstrap.DefaultCertRefresh, "how often gRPC re-reads the --certs files, to pick up rotated certificates (at least 1s)")
	fs.StringVar(&f.out, "o", "-", "file to write, - for standard output")
}

func printBootstrap(args []string) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	var f bootstrapFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.server == "" {
		host := os.Getenv("HOST_IP")
		if host == "" {
			return errors.New("-server not given and $HOST_IP not set (use the downward API: status.hostIP)")
		}
		f.server = net.JoinHostPort(host, "18000")
	}
	if f.nodeID == "" {
		if pod := os.Getenv("POD_NAME"); pod != "" {
			f.nodeID = os.Getenv("POD_NAMESPACE") + "/" + pod
		} else if h, err := os.Hostname(); err == nil {
			f.nodeID = h
		}
	}
	doc, err := bootstrap.JSON(bootstrap.Options{Server: f.server, NodeID: f.nodeID, Zone: f.zone, Region: f.region, NodeName: f.nodeName, Namespace: f.namespace, Fallback: f.fallback, Certs: f.certs, CertRefresh: f.certRefresh})
	if err != nil {
		return err
	}
	doc = append(doc, '\n')
	if f.out == "-" {
		_, err = os.Stdout.Write(doc)
		return err
	}
	return os.WriteFile(f.out, doc, 0o644)
}
