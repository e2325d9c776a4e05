// Package metrics holds the agent's Prometheus collectors. A Metrics value is
// passed to each stage that records; nothing here is global, so tests use
// their own registry.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// ClientStacks are the values of nodexds_xds_nacks_total's stack label: the
// client stacks the ADS server tells apart by user agent, and "other".
var ClientStacks = []string{"grpc-go", "grpc-js", "c-core", "grpc-java", "other"}

// UnplacedReasons are the values of
// nodexds_server_listeners_unplaced_total's reason label.
var UnplacedReasons = []string{"malformed", "other_address", "other_node", "unknown_pod"}

// Metrics are the agent's collectors.
type Metrics struct {
	ConnectedClients prometheus.Gauge
	Subscriptions    *prometheus.GaugeVec   // type
	Pushes           *prometheus.CounterVec // type
	PushLatency      *prometheus.HistogramVec
	NACKs            *prometheus.CounterVec // type, stack
	DiscoveryEvents  *prometheus.CounterVec // kind, op
	Rebuilds         prometheus.Counter
	Builds           *prometheus.CounterVec // type
	AnnotationErrors *prometheus.CounterVec // annotation
	SourceErrors     *prometheus.CounterVec // source
	UnresolvedNames  prometheus.Counter
	LimitHits        *prometheus.CounterVec // limit
	Refused          *prometheus.CounterVec // code
	// ClientWorkarounds counts resources built in a variant for clients with
	// a known bug, by workaround.
	ClientWorkarounds *prometheus.CounterVec

	// HealthFailOpen is the agent's decision (health's own collectors are
	// in health.Metrics).
	HealthFailOpen prometheus.Gauge

	// Routes counts Gateway API routes by state: usable, or refused (asking
	// for what proxyless clients cannot carry out).
	Routes *prometheus.GaugeVec

	// ServerListeners counts the Listeners of xDS-enabled servers (gRFC
	// A36) the agent serves, by what their connections get; ServersUnplaced
	// the server listener names it could not place, by reason.
	ServerListeners *prometheus.GaugeVec
	ServersUnplaced *prometheus.CounterVec

	BuildInfo          *prometheus.GaugeVec // version, goversion; cmd/nodexds sets it
	SourceSyncDuration prometheus.Gauge
}

// New creates the collectors and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ConnectedClients: gauge("nodexds_connected_clients", "ADS streams currently open."),
		Subscriptions:    gaugeVec("nodexds_subscribed_resources", "Distinct resources at least one client subscribes to, by type.", "type"),
		Pushes:           counterVec("nodexds_xds_pushes_total", "xDS responses sent, by type.", "type"),
		PushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodexds_push_latency_seconds",
			Help:    "Time from a change being observed to the response carrying it being sent, by type.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"type"}),
		NACKs:              counterVec("nodexds_xds_nacks_total", "Responses rejected by clients, by type and client stack (grpc-go, grpc-js, c-core, grpc-java, other).", "type", "stack"),
		DiscoveryEvents:    counterVec("nodexds_discovery_events_total", "Objects received from sources, by kind and operation.", "kind", "op"),
		Rebuilds:           counter("nodexds_service_rebuilds_total", "Service port resource sets rebuilt."),
		Builds:             counterVec("nodexds_resource_builds_total", "xDS resources built (whether or not they changed), by type: a change rebuilds only the types it can alter.", "type"),
		AnnotationErrors:   counterVec("nodexds_annotation_errors_total", "Service annotations that could not be used, by annotation.", "annotation"),
		SourceErrors:       counterVec("nodexds_source_errors_total", "Objects or files a source could not read, by source.", "source"),
		UnresolvedNames:    counter("nodexds_unresolved_names_total", "Resource names clients asked for that can never be served (malformed, or not a name the agent hands out)."),
		LimitHits:          counterVec("nodexds_limit_hits_total", "Client requests refused or streams ended for reaching one of the agent's limits, by limit.", "limit"),
		ClientWorkarounds:  counterVec("nodexds_client_workarounds_total", "Resources built in a variant for clients with a known bug (e.g. ring_hash_as_round_robin for gRPC C-core 1.51, which crashes on ring_hash), by workaround.", "workaround"),
		Refused:            counterVec("nodexds_admission_refused_total", "ADS streams refused by admission (a peer that is not a pod on this node), by gRPC status code.", "code"),
		Routes:             gaugeVec("nodexds_gateway_routes", "Gateway API routes (GRPCRoute, HTTPRoute) the agent knows, by state: usable, or refused for asking what proxyless gRPC clients cannot carry out (filters, query parameter matches, retries, regular expressions they would refuse).", "state"),
		ServerListeners:    gaugeVec("nodexds_server_listeners", "Listeners of xDS-enabled gRPC servers on this node the agent serves, by what their connections get: tls (mTLS), plaintext, or denied (a strict Service's server whose bootstrap has no certificates: every call refused).", "transport"),
		ServersUnplaced:    counterVec("nodexds_server_listeners_unplaced_total", "Server listener names the agent could not place, so the server got no Listener: malformed, another pod's address, a server of another node, or a peer that is no known pod of this node.", "reason"),
		HealthFailOpen:     gauge("nodexds_health_fail_open_clusters", "Clusters whose endpoints all fail checks, served as UNKNOWN rather than ejected."),
		BuildInfo:          gaugeVec("nodexds_build_info", "Always 1; the labels say which build is running.", "version", "goversion"),
		SourceSyncDuration: gauge("nodexds_source_sync_duration_seconds", "Time from start until the source's initial state was applied (ADS is served from then on); 0 while it has not been."),
	}
	// Known label values start at 0, so dashboards and alerts find the
	// series before the first hit (the agent adds the annotations and
	// discovery kinds it knows; cmd/nodexds the source in use).
	m.Refused.WithLabelValues("permission_denied")
	m.ClientWorkarounds.WithLabelValues("ring_hash_as_round_robin")
	for _, t := range []string{"tls", "plaintext", "denied"} {
		m.ServerListeners.WithLabelValues(t)
	}
	for _, r := range UnplacedReasons {
		m.ServersUnplaced.WithLabelValues(r)
	}
	for _, typ := range []string{"LDS", "RDS", "CDS", "EDS"} {
		m.Pushes.WithLabelValues(typ)
		m.PushLatency.WithLabelValues(typ)
		m.Subscriptions.WithLabelValues(typ)
		m.Builds.WithLabelValues(typ)
		for _, stack := range ClientStacks {
			m.NACKs.WithLabelValues(typ, stack)
		}
	}
	for _, l := range []string{"names_per_type", "names_per_peer", "streams", "streams_per_peer", "conns", "conns_per_peer", "send_timeout"} {
		m.LimitHits.WithLabelValues(l)
	}
	reg.MustRegister(m.BuildInfo, m.SourceSyncDuration)
	reg.MustRegister(m.ConnectedClients, m.Subscriptions, m.Pushes, m.PushLatency, m.NACKs,
		m.DiscoveryEvents, m.Routes, m.Rebuilds, m.Builds, m.AnnotationErrors, m.SourceErrors, m.UnresolvedNames, m.LimitHits, m.Refused, m.ClientWorkarounds,
		m.HealthFailOpen, m.ServerListeners, m.ServersUnplaced)
	return m
}

// counter, gauge, counterVec and gaugeVec make a collector from what sets
// one apart: its name, help and label names.

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}
