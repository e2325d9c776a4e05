package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	agentxds "github.com/nodexds/nodexds/agent/xds"
	"sigs.k8s.io/yaml"

	"github.com/nodexds/nodexds/agent/bootstrap"
	"github.com/nodexds/nodexds/internal/echo"
)

// runtimePrefixes are the collectors' families (Go runtime, process), which
// keep their conventional names; everything else must be nodexds_.
var runtimePrefixes = []string{"go_", "process_"}

// TestDashboardAndAlertsUseRealMetrics starts the agent binary on a file
// source and scrapes /metrics twice: idle, before any client, NACK, bad
// annotation or bad source file (a panel must show 0 there, not "No data"),
// and busy, after a real grpc-go xDS client, a NACK, a bad annotation, a bad
// source file and health checks went through it. Each time it fails if any
// metric, label or label value the dashboard or the alerts use does not
// exist. Every family must carry HELP and (collectors aside) the nodexds_
// prefix.
func TestDashboardAndAlertsUseRealMetrics(t *testing.T) {
	a := startMetricsAgent(t)
	targetLabels := podMonitorTargetLabels(t)
	queries := append(dashboardQueries(t), alertQueries(t)...)
	if len(queries) < 20 {
		t.Fatalf("found only %d queries in the dashboard and the alerts: the files were not read as expected", len(queries))
	}
	check := func(t *testing.T, families map[string]*dto.MetricFamily) {
		for name, f := range families {
			if !strings.HasPrefix(name, "nodexds_") && !slices.ContainsFunc(runtimePrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
				t.Errorf("metric %s: want the nodexds_ prefix", name)
			}
			if strings.TrimSpace(f.GetHelp()) == "" {
				t.Errorf("metric %s has no HELP text", name)
			}
		}
		for _, q := range queries {
			for _, problem := range checkQuery(q.expr, families, targetLabels) {
				t.Errorf("%s: %s\n  %s", q.where, problem, q.expr)
			}
		}
	}
	t.Run("idle agent", func(t *testing.T) {
		check(t, a.scrape(t))
	})
	t.Run("busy agent", func(t *testing.T) {
		check(t, a.drive(t))
	})
}

// TestPrometheusRuleMatchesRulesFile: the PrometheusRule and the plain rules
// file carry the same groups, so users of either get the same alerts.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	var plain struct {
		Groups []any `json:"groups"`
	}
	var crd struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	readYAML(t, "observability/rules.yaml", &plain)
	readYAML(t, "observability/prometheusrule.yaml", &crd)
	if crd.Kind != "PrometheusRule" || len(plain.Groups) == 0 {
		t.Fatalf("kind %q, %d groups in rules.yaml", crd.Kind, len(plain.Groups))
	}
	if !reflect.DeepEqual(plain.Groups, crd.Spec.Groups) {
		a, _ := json.MarshalIndent(plain.Groups, "", " ")
		b, _ := json.MarshalIndent(crd.Spec.Groups, "", " ")
		t.Errorf("observability/prometheusrule.yaml's groups differ from rules.yaml's:\nrules.yaml:\n%s\nprometheusrule.yaml:\n%s", a, b)
	}
}

// TestEveryAlertHasARunbook: each alert links a paragraph of docs/operate.md
// that exists.
func TestEveryAlertHasARunbook(t *testing.T) {
	doc, err := os.ReadFile("../docs/operate.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range alertRules(t) {
		anchor := "#" + strings.ToLower(r.Alert)
		if !strings.HasSuffix(r.Annotations["runbook_url"], "docs/operate.md"+anchor) {
			t.Errorf("alert %s: runbook_url %q does not point at docs/operate.md%s", r.Alert, r.Annotations["runbook_url"], anchor)
		}
		if !bytes.Contains(doc, []byte("### "+r.Alert+"\n")) {
			t.Errorf("alert %s: docs/operate.md has no \"### %s\" runbook section", r.Alert, r.Alert)
		}
	}
}

// metricsAgent is the agent binary on a file source of one Service (be1,
// its endpoint a real echo backend on node-a).
type metricsAgent struct {
	dir, backend, xdsAddr, admin string
}

// startMetricsAgent starts the agent and waits until it is ready.
func startMetricsAgent(t *testing.T) *metricsAgent {
	bin := agentBinary(t)
	dir := t.TempDir()
	lis, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	be := echo.Serve(lis, "be1-0")
	t.Cleanup(be.Stop)
	writeCluster(t, filepath.Join(dir, "cluster.yaml"), be.Addr, nil)

	for attempt := 1; ; attempt++ {
		xdsPort, adminPort := freePort(t), freePort(t)
		a := &metricsAgent{dir: dir, backend: be.Addr, xdsAddr: "127.0.0.1:" + itoa(xdsPort), admin: "http://127.0.0.1:" + itoa(adminPort)}
		var logs bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, bin, "serve", "--source=file:"+dir, "--node-name=node-a",
			"--xds-listen="+a.xdsAddr, "--admin-listen=127.0.0.1:"+itoa(adminPort),
			"--debug-listen=", // its default port may be another agent's on this machine
			"--file-poll=100ms", "--health-interval=200ms", "--health-timeout=500ms")
		cmd.Env = append(withoutEnv(os.Environ(), "GOMEMLIMIT"), "NODEXDS_MEMORY_LIMIT=536870912")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // the exit is reported through exited
		t.Cleanup(func() {
			cancel()
			<-exited
			if t.Failed() {
				t.Logf("agent log:\n%s", logs.String())
			}
		})
		if readyOrExited(t, a.admin+"/readyz", exited, logs.String) {
			return a
		}
		if attempt == 5 || !portTaken(logs.String()) {
			t.Fatalf("the agent exited before %s answered 200:\n%s", a.admin+"/readyz", logs.String())
		}
		t.Logf("a port picked for the agent was taken before it bound it; starting it again on others:\n%s", logs.String())
	}
}

// scrape returns the agent's metric families, and checks the ones that have
// a known value from the start.
func (a *metricsAgent) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	families := parseMetrics(t, httpGet(t, a.admin+"/metrics"))
	if v := gaugeValue(families, "nodexds_build_info", map[string]string{"version": testVersion}); v != 1 {
		t.Errorf("nodexds_build_info{version=%q} = %v, want 1", testVersion, v)
	}
	if v := gaugeValue(families, "nodexds_source_sync_duration_seconds", nil); !(v > 0 && v < 60) {
		t.Errorf("nodexds_source_sync_duration_seconds = %v, want the seconds the initial sync took", v)
	}
	if v := gaugeValue(families, "go_gc_gomemlimit_bytes", nil); v != 536870912-53687091 {
		t.Errorf("go_gc_gomemlimit_bytes = %v, want 90%% of NODEXDS_MEMORY_LIMIT=536870912", v)
	}
	return families
}

// drive puts every kind of event the dashboard counts through the agent and
// returns its metric families once each has been counted (or the deadline
// passed: the caller then reports what is missing).
func (a *metricsAgent) drive(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	// An annotation the agent cannot use: counted by annotation.
	writeCluster(t, filepath.Join(a.dir, "cluster.yaml"), a.backend, map[string]string{"nodexds.io/timeout": "soon"})

	// A real grpc-go xDS client: LDS, RDS, CDS, EDS pushes and subscriptions,
	// push latency, and health checks of the endpoint it uses.
	bs, err := bootstrap.JSON(bootstrap.Options{Server: a.xdsAddr, NodeID: "deploytest/client", Zone: "zone-a", Region: "region-1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///be1.default:8080", grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := echo.Hello(rctx, cc)
		rcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no RPC through xds:///be1.default:8080 within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A NACK of a response the agent really sent.
	ads := openADS(t, a.xdsAddr)
	resp := ads.request(t, &discoverypb.DiscoveryRequest{TypeUrl: agentxds.ListenerType, ResourceNames: []string{"be1.default:8080"}})
	// A NACK gets no answer; the counter is polled for below.
	if err := ads.stream.Send(&discoverypb.DiscoveryRequest{TypeUrl: agentxds.ListenerType, ResourceNames: []string{"be1.default:8080"},
		ResponseNonce: resp.Nonce, ErrorDetail: &statuspb.Status{Code: 3, Message: "deploy test rejects this"}}); err != nil {
		t.Fatalf("ADS send NACK: %v", err)
	}

	// Every event counted, and the bad annotation read before a file the
	// source cannot read stops it from taking changes.
	a.waitCounted(t, "nodexds_annotation_errors_total", map[string]string{"annotation": "nodexds.io/timeout"})
	if err := os.WriteFile(filepath.Join(a.dir, "broken.yaml"), []byte("kind: [unclosed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitCounted(t, "nodexds_source_errors_total", map[string]string{"source": "file"})
	a.waitCounted(t, "nodexds_xds_nacks_total", map[string]string{"type": "LDS"})
	a.waitCounted(t, "nodexds_health_checks_total", nil)
	return a.scrape(t)
}

// waitCounted polls until the counters of name with labels sum above 0, and
// reports an error if they never do.
func (a *metricsAgent) waitCounted(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if counterValue(parseMetrics(t, httpGet(t, a.admin+"/metrics")), name, labels) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s%v still 0 after 30s", name, labels)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A query and where it was found.
type query struct{ where, expr string }

func dashboardQueries(t *testing.T) []query {
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	b, err := os.ReadFile("observability/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var out []query
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, query{"dashboard panel " + p.Title, tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		// label_values(metric, label) is a selector plus a label.
		if m, l, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(v.Definition, "label_values("), ")"), ","); ok {
			out = append(out, query{"dashboard variable " + v.Name, "group by (" + strings.TrimSpace(l) + ") (" + m + ")"})
		}
	}
	return out
}

type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	Annotations map[string]string `json:"annotations"`
}

func alertRules(t *testing.T) []alertRule {
	var f struct {
		Groups []struct {
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	readYAML(t, "observability/rules.yaml", &f)
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatal("observability/rules.yaml has no rules")
	}
	return out
}

func alertQueries(t *testing.T) []query {
	var out []query
	for _, r := range alertRules(t) {
		out = append(out, query{"alert " + r.Alert, r.Expr})
	}
	return out
}

// referencedMetrics lists every metric name the queries use.
func referencedMetrics(t *testing.T) []string {
	seen := map[string]bool{}
	for _, q := range append(dashboardQueries(t), alertQueries(t)...) {
		for m := range parseQuery(q.expr).metrics {
			seen[m] = true
		}
	}
	delete(seen, "up")
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// podMonitorTargetLabels: labels Prometheus attaches to every scraped series
// (they are on no /metrics page): job and instance always, namespace, pod,
// container and endpoint from a PodMonitor, and whatever its relabelings add.
func podMonitorTargetLabels(t *testing.T) map[string]bool {
	var pm struct {
		Spec struct {
			JobLabel            string `json:"jobLabel"`
			PodMetricsEndpoints []struct {
				Relabelings []struct {
					TargetLabel string `json:"targetLabel"`
				} `json:"relabelings"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	readYAML(t, "observability/podmonitor.yaml", &pm)
	out := map[string]bool{"job": true, "instance": true, "namespace": true, "pod": true, "container": true, "endpoint": true}
	for _, e := range pm.Spec.PodMetricsEndpoints {
		for _, r := range e.Relabelings {
			out[r.TargetLabel] = true
		}
	}
	if pm.Spec.JobLabel == "" {
		t.Errorf("podmonitor.yaml sets no jobLabel: the alerts' job=\"nodexds\" would not match")
	}
	return out
}

// checkQuery lists what a query uses that the agent does not export.
func checkQuery(expr string, families map[string]*dto.MetricFamily, targetLabels map[string]bool) []string {
	refs := parseQuery(expr)
	var problems []string
	labels := map[string]bool{}
	values := map[string]map[string]bool{}
	for k := range targetLabels {
		labels[k] = true
	}
	for m := range refs.metrics {
		if m == "up" { // Prometheus' own per-target series
			continue
		}
		f := familyOf(m, families)
		if f == nil {
			problems = append(problems, "metric "+m+" is not exported by the agent")
			continue
		}
		if strings.HasSuffix(m, "_bucket") && f.GetType() == dto.MetricType_HISTOGRAM {
			labels["le"] = true
		}
		for _, s := range f.Metric {
			for _, lp := range s.Label {
				labels[lp.GetName()] = true
				if values[lp.GetName()] == nil {
					values[lp.GetName()] = map[string]bool{}
				}
				values[lp.GetName()][lp.GetValue()] = true
			}
		}
	}
	for l := range refs.labels {
		if !labels[l] {
			problems = append(problems, "label "+l+" is on none of its metrics")
		}
	}
	for _, m := range refs.equal {
		if targetLabels[m[0]] || !labels[m[0]] {
			continue
		}
		if !values[m[0]][m[1]] {
			problems = append(problems, "label value "+m[0]+"=\""+m[1]+"\" never seen")
		}
	}
	sort.Strings(problems)
	return problems
}

// familyOf finds the family of a series name (histogram series carry
// _bucket, _sum and _count suffixes).
func familyOf(series string, families map[string]*dto.MetricFamily) *dto.MetricFamily {
	if f, ok := families[series]; ok {
		return f
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok {
			if f, ok := families[base]; ok && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
				return f
			}
		}
	}
	return nil
}

// queryRefs are the names a PromQL expression uses.
type queryRefs struct {
	metrics map[string]bool
	labels  map[string]bool // in selectors and in by/without/on/ignoring/group_* lists
	equal   [][2]string     // label="value" matchers
}

// promKeywords are PromQL words that are neither metrics nor labels.
var promKeywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "group": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
}

// labelListWords take a parenthesised list of label names.
var labelListWords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// parseQuery is a small PromQL scanner: enough to find the metric and label
// names of the queries shipped here (selectors, aggregations with by/without,
// vector matching, functions, ranges, numbers, Grafana's $variables).
func parseQuery(expr string) queryRefs {
	refs := queryRefs{metrics: map[string]bool{}, labels: map[string]bool{}}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '{':
			end := strings.IndexByte(expr[i:], '}')
			if end < 0 {
				end = len(expr) - i
			}
			for _, m := range splitMatchers(expr[i+1 : i+end]) {
				refs.labels[m[0]] = true
				if m[2] == "=" {
					refs.equal = append(refs.equal, [2]string{m[0], m[1]})
				}
			}
			i += end + 1
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				end = len(expr) - i
			}
			i += end + 1
		case c == '"' || c == '\'':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				end = len(expr) - i - 1
			}
			i += end + 2
		case c == '$':
			i++
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			switch {
			case labelListWords[word] && k < len(expr) && expr[k] == '(':
				end := strings.IndexByte(expr[k:], ')')
				if end < 0 {
					end = len(expr) - k
				}
				for _, l := range strings.Split(expr[k+1:k+end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						refs.labels[l] = true
					}
				}
				j = k + end + 1
			case labelListWords[word] || promKeywords[word]:
			case k < len(expr) && expr[k] == '(': // a function call
			default:
				refs.metrics[word] = true
			}
			i = j
		default:
			i++
		}
	}
	return refs
}

// splitMatchers splits `a="x", b=~"y"` into {name, value, op} triples.
func splitMatchers(s string) [][3]string {
	var out [][3]string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		for _, op := range []string{"=~", "!~", "!=", "="} {
			if name, value, ok := strings.Cut(part, op); ok {
				out = append(out, [3]string{strings.TrimSpace(name), strings.Trim(strings.TrimSpace(value), `"'`), op})
				break
			}
		}
	}
	return out
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		name, expr       string
		metrics, labels  []string
		equalityMatchers int
	}{
		{"a histogram quantile by type names the bucket series and both labels",
			`histogram_quantile(0.99, sum by (le, type) (rate(nodexds_push_latency_seconds_bucket{node=~"$node"}[$__rate_interval])))`,
			[]string{"nodexds_push_latency_seconds_bucket"}, []string{"le", "node", "type"}, 0},
		{"a ratio of two metrics with a number names both metrics",
			`process_resident_memory_bytes / go_gc_gomemlimit_bytes > 0.95`,
			[]string{"go_gc_gomemlimit_bytes", "process_resident_memory_bytes"}, nil, 0},
		{"an equality matcher and an aggregation keyword before by",
			`count by (version, goversion) (nodexds_build_info{version="v1"}) or vector(0)`,
			[]string{"nodexds_build_info"}, []string{"goversion", "version"}, 1},
		{"vector matching lists are labels, not metrics",
			`a_total * on (instance) group_left (node) b_info < 9e18`,
			[]string{"a_total", "b_info"}, []string{"instance", "node"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := parseQuery(tt.expr)
			if got := sortedKeys(r.metrics); !slices.Equal(got, tt.metrics) {
				t.Errorf("metrics %q, want %q", got, tt.metrics)
			}
			if got := sortedKeys(r.labels); !slices.Equal(got, tt.labels) {
				t.Errorf("labels %q, want %q", got, tt.labels)
			}
			if len(r.equal) != tt.equalityMatchers {
				t.Errorf("%d equality matchers, want %d", len(r.equal), tt.equalityMatchers)
			}
		})
	}
}

// TestCheckQueryReportsWhatIsMissing: the reference check fails for a
// misspelt metric, a label the metric does not have, and a label value never
// exported, and passes for what exists.
func TestCheckQueryReportsWhatIsMissing(t *testing.T) {
	families := parseMetrics(t, `# HELP nodexds_xds_nacks_total Responses rejected by clients, by type.
# TYPE nodexds_xds_nacks_total counter
nodexds_xds_nacks_total{type="LDS"} 1
`)
	target := map[string]bool{"job": true, "node": true}
	tests := []struct {
		name, expr string
		problems   int
	}{
		{"an exported metric by its label and a target label is fine", `sum by (node, type) (rate(nodexds_xds_nacks_total{job="nodexds"}[5m]))`, 0},
		{"a misspelt metric is reported", `rate(nodexds_xds_nack_total[5m])`, 1},
		{"a label the metric lacks is reported", `sum by (client) (nodexds_xds_nacks_total)`, 1},
		{"a label value never exported is reported", `nodexds_xds_nacks_total{type="lds"}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkQuery(tt.expr, families, target); len(got) != tt.problems {
				t.Errorf("problems %q, want %d", got, tt.problems)
			}
		})
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func parseMetrics(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// gaugeValue returns the value of the first series of name whose labels
// include want; NaN-free -1 when there is none.
func gaugeValue(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			if !slices.ContainsFunc(m.Label, func(lp *dto.LabelPair) bool { return lp.GetName() == k && lp.GetValue() == v }) {
				continue next
			}
		}
		return m.GetGauge().GetValue()
	}
	return -1
}

// counterValue sums the counters of name whose labels include want.
func counterValue(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
next:
	for _, m := range families[name].GetMetric() {
		for k, v := range want {
			if !slices.ContainsFunc(m.Label, func(lp *dto.LabelPair) bool { return lp.GetName() == k && lp.GetValue() == v }) {
				continue next
			}
		}
		sum += m.GetCounter().GetValue()
	}
	return sum
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func withoutEnv(env []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
}
