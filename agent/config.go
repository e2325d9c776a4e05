// What a Service's annotations decide, and reporting those that cannot be used.

package agent

import (
	"slices"

	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/topology"
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
}

// serviceConfig is everything a Service's annotations decide.
type serviceConfig struct {
	policy topology.Policy
	health health.ServiceConfig
	lb     resources.LBConfig
}

// readConfig reads a Service's annotations, and returns the ones it cannot use.
func (a *Agent) readConfig(svc *discovery.Service) (serviceConfig, []*discovery.AnnotationError) {
	policy, errs := topology.PolicyFor(svc, a.cfg.DefaultTiers)
	hc, herrs := health.ConfigFor(svc)
	lb, lerrs := resources.LBConfigFor(svc)
	return serviceConfig{policy: policy, health: hc, lb: lb}, slices.Concat(errs, herrs, lerrs)
}

// config is readConfig, reporting the annotations it cannot use.
func (a *Agent) config(svc *discovery.Service) serviceConfig {
	cfg, errs := a.readConfig(svc)
	a.report(svc.Key.String(), svc, errs)
	return cfg
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
