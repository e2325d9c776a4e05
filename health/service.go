package health

import (
	"errors"

	"github.com/nodexds/nodexds/discovery"
)

// Service annotations read by this package.
const (
	AnnotationCheck   = discovery.AnnotationPrefix + "health-check"
	AnnotationService = discovery.AnnotationPrefix + "health-service"
)

// ServiceConfig is how a Service's endpoints are checked.
type ServiceConfig struct {
	// Enabled is false for Services that opted out with health-check: "off".
	Enabled bool
	// Name is the health service asked about; "" means the whole server.
	Name string
}

// ConfigFor reads a Service's health annotations. A value it cannot use is
// returned as an error and the default (checked, whole server) applies.
func ConfigFor(svc *discovery.Service) (ServiceConfig, []*discovery.AnnotationError) {
	c := ServiceConfig{Enabled: true, Name: svc.Annotations[AnnotationService]}
	var errs []*discovery.AnnotationError
	switch v := svc.Annotations[AnnotationCheck]; v {
	case "", "on":
	case "off":
		c.Enabled = false
	default:
		errs = append(errs, &discovery.AnnotationError{Key: AnnotationCheck, Value: v, Err: errors.New(`want "on" or "off"`)})
	}
	return c, errs
}

// FailOpen says whether statuses must be ignored because every one is
// Unhealthy: ejecting all of a Service's endpoints turns a broken health
// check into an outage, so they are served as Unknown instead (like Envoy's
// panic threshold). An empty list is not failing.
func FailOpen(statuses []Status) bool {
	for _, s := range statuses {
		if s != Unhealthy {
			return false
		}
	}
	return len(statuses) > 0
}
