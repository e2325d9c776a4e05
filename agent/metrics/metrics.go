// Package metrics holds the agent's Prometheus collectors. A Metrics value is
// passed to each stage that records; nothing here is global, so tests use
// their own registry.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's collectors.
type Metrics struct {
	ConnectedClients prometheus.Gauge
	Subscriptions    *prometheus.GaugeVec   // type
	Pushes           *prometheus.CounterVec // type
	PushLatency      *prometheus.HistogramVec
	NACKs            *prometheus.CounterVec // type
	DiscoveryEvents  *prometheus.CounterVec // kind, op
	Rebuilds         prometheus.Counter
	AnnotationErrors *prometheus.CounterVec // annotation
	SourceErrors     *prometheus.CounterVec // source
	UnresolvedNames  prometheus.Counter

	// HealthFailOpen is the agent's decision (health's own collectors are
	// in health.Metrics).
	HealthFailOpen prometheus.Gauge
}

// New creates the collectors and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ConnectedClients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodexds_connected_clients", Help: "ADS streams currently open.",
		}),
		Subscriptions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodexds_subscribed_resources", Help: "Distinct resources at least one client subscribes to, by type.",
		}, []string{"type"}),
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_xds_pushes_total", Help: "xDS responses sent, by type.",
		}, []string{"type"}),
		PushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodexds_push_latency_seconds",
			Help:    "Time from a change being observed to the response carrying it being sent, by type.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"type"}),
		NACKs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_xds_nacks_total", Help: "Responses rejected by clients, by type.",
		}, []string{"type"}),
		DiscoveryEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_discovery_events_total", Help: "Objects received from sources, by kind and operation.",
		}, []string{"kind", "op"}),
		Rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodexds_service_rebuilds_total", Help: "Service port resource sets rebuilt.",
		}),
		AnnotationErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_annotation_errors_total", Help: "Service annotations that could not be used, by annotation.",
		}, []string{"annotation"}),
		SourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodexds_source_errors_total", Help: "Objects or files a source could not read, by source.",
		}, []string{"source"}),
		UnresolvedNames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodexds_unresolved_names_total", Help: "Resource names clients asked for that can never be served (malformed, or not a name the agent hands out).",
		}),
		HealthFailOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodexds_health_fail_open_clusters", Help: "Clusters whose endpoints all fail checks, served as UNKNOWN rather than ejected.",
		}),
	}
	reg.MustRegister(m.ConnectedClients, m.Subscriptions, m.Pushes, m.PushLatency, m.NACKs,
		m.DiscoveryEvents, m.Rebuilds, m.AnnotationErrors, m.SourceErrors, m.UnresolvedNames,
		m.HealthFailOpen)
	return m
}
