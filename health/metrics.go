package health

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the health stage's collectors. The agent registers them with
// the same registry as its own; health does not reach up into agent.
type Metrics struct {
	Checks        *prometheus.CounterVec // mode (watch, check), result (ok, fail)
	Transitions   *prometheus.CounterVec // to (healthy, unhealthy)
	Unimplemented prometheus.Counter
	// Checked and Unchecked split the endpoints clients use: checked ones
	// fit the budget (-health-max-endpoints); unchecked ones keep the health
	// Kubernetes reports.
	Checked, Unchecked prometheus.Gauge
	// Lingering counts the checked endpoints that no client uses any more,
	// kept checked for Config.Linger.
	Lingering prometheus.Gauge
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_health_checks_total", Help: "Health results: Watch messages and Check calls, by mode and result.",
		}, []string{"mode", "result"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_health_transitions_total", Help: "Endpoint health changes, by new status.",
		}, []string{"to"}),
		Unimplemented: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodexds_health_unimplemented_total", Help: "Endpoints without the gRPC health service, treated as healthy.",
		}),
		Checked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodexds_health_checked_endpoints", Help: "Endpoints being health-checked (within the -health-max-endpoints budget).",
		}),
		Unchecked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodexds_health_unchecked_endpoints", Help: "Endpoints clients use that are beyond the health budget: not checked, served with the health Kubernetes reports.",
		}),
		Lingering: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodexds_health_lingering_endpoints", Help: "Checked endpoints no client of this node uses any more, kept checked for -health-linger within what the budget leaves.",
		}),
	}
	// Known label values start at 0, so dashboards find the series before
	// the first check (checker.result and Prober.set count under these).
	for _, mode := range []string{"watch", "check"} {
		m.Checks.WithLabelValues(mode, "ok")
		m.Checks.WithLabelValues(mode, "fail")
	}
	for _, s := range []Status{Healthy, Unhealthy} {
		m.Transitions.WithLabelValues(strings.ToLower(s.String()))
	}
	reg.MustRegister(m.Checks, m.Transitions, m.Unimplemented, m.Checked, m.Unchecked, m.Lingering)
	return m
}
