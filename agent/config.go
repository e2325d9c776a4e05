// What a Service's annotations decide, and reporting those that cannot be used.

package agent

import (
	"slices"

	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/health"
)

// Annotations are the Service annotations the agent reads: the values of
// nodexds_annotation_errors_total's annotation label.
var Annotations = []string{
	topology.AnnotationTopology,
	topology.AnnotationMinTierEndpoints,
	health.AnnotationCheck,
	health.AnnotationService,
	AnnotationExportTo,
	resources.AnnotationLBPolicy,
	resources.AnnotationHashHeader,
	resources.AnnotationRingMinSize,
	resources.AnnotationRingMaxSize,
	resources.AnnotationOutlier,
	resources.AnnotationMaxRequests,
	resources.AnnotationTimeout,
	resources.AnnotationRetryOn,
	resources.AnnotationRetryAttempts,
	resources.AnnotationRetryBackoff,
	resources.AnnotationEndpointHeader,
	resources.AnnotationPickerFallback,
	trust.AnnotationMTLS,
	trust.AnnotationAllowFrom,
	trust.AnnotationServerIdentities,
}

// serviceConfig is everything a Service's annotations decide.
type serviceConfig struct {
	of     *discovery.Service // the Service it was read from
	policy topology.Policy
	health health.ServiceConfig
	lb     resources.LBConfig
	scope  xds.Scope
	trust  trust.Policy
	// checkIdentity is what the agent's health checks accept of a server
	// of an mTLS Service (health.Target.Identity); "" when plaintext.
	checkIdentity string
	// errs are the annotations that could not be used; exportErrs those of
	// the export list, reported apart.
	errs, exportErrs []*discovery.AnnotationError
}

// readConfig reads a Service's annotations.
//
// nsAnnotations are its namespace's (defaults for the mTLS policy);
// tlsChecks says the agent can check the health of mTLS servers, whose
// identities are of trustDomain.
func readConfig(svc *discovery.Service, nsAnnotations map[string]string, tiers topology.Tiers, vis Visibility, tlsChecks bool, trustDomain string) *serviceConfig {
	policy, errs := topology.PolicyFor(svc, tiers)
	hc, herrs := health.ConfigFor(svc)
	lb, lerrs := resources.LBConfigFor(svc)
	tp, terrs := trust.PolicyFor(svc.Key.Namespace, svc.Annotations, nsAnnotations)
	if tp.Mode.TLS() && !tlsChecks {
		// The agent has no identity of its own to present: its plaintext
		// checks would fail against a TLS server and eject every endpoint.
		// Kubernetes' readiness decides instead.
		hc.Enabled = false
	}
	c := &serviceConfig{of: svc, policy: policy, health: hc, lb: lb, trust: tp, errs: slices.Concat(errs, herrs, lerrs, terrs)}
	if tp.Mode.TLS() {
		c.checkIdentity = trust.SpellMatches(tp.ServerMatches(trustDomain))
	}
	var err *discovery.AnnotationError
	if c.scope, err = scopeFor(svc, vis); err != nil {
		c.exportErrs = []*discovery.AnnotationError{err}
	}
	return c
}

// config returns a Service's configuration, read once per change of the
// Service however many resources are built from it; what cannot be used is
// reported then.
func (a *Agent) config(svc *discovery.Service) *serviceConfig {
	if c := a.configs[svc.Key]; c != nil && c.of == svc {
		return c // the store hands out a new Service for every change
	}
	c := readConfig(svc, a.namespaceAnnotations(svc.Key.Namespace), a.cfg.DefaultTiers, a.cfg.Visibility, a.cfg.HealthIdentity != "", a.cfg.TrustDomain)
	if ch, ok := a.unread[svc.Key]; ok {
		delete(a.unread, svc.Key)
		a.movedTLS(svc.Key, ch.tls, c.trust.Mode.TLS(), ch.at)
	}
	a.report(svc.Key.String(), svc, c.errs)
	a.report(svc.Key.String()+"/export", svc, c.exportErrs)
	a.configs[svc.Key] = c
	return c
}

// report logs, counts and reports errors about a Service once per distinct
// set, under key (several builds of one Service report the same set).
func (a *Agent) report(key string, svc *discovery.Service, errs []*discovery.AnnotationError) {
	var sig string
	for _, e := range errs {
		sig += e.Error() + "\n"
	}
	if a.reported[key] == sig {
		return
	}
	if sig == "" {
		delete(a.reported, key)
		return
	}
	a.reported[key] = sig
	for _, e := range errs {
		a.metrics.AnnotationErrors.WithLabelValues(e.Key).Inc()
		a.log.Warn("ignoring service annotation", "service", svc.Key.String(), "annotation", e.Key, "value", e.Value, "error", e.Err)
		a.reporter.AnnotationError(svc, e)
	}
}

// namespaceAnnotations are a namespace's nodexds.io/ annotations, nil when
// it has none or is unknown.
func (a *Agent) namespaceAnnotations(ns string) map[string]string {
	if n, ok := a.store.Namespace(ns); ok {
		return n.Annotations
	}
	return nil
}
