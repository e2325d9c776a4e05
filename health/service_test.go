package health

import (
	"testing"

	"github.com/nodexds/nodexds/discovery"
)

func TestConfigFor(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        ServiceConfig
		wantErr     bool
	}{
		{"no annotations: whole server is checked", nil, ServiceConfig{Enabled: true}, false},
		{"named health service", map[string]string{AnnotationService: "grpc.Echo"}, ServiceConfig{Enabled: true, Name: "grpc.Echo"}, false},
		{"opted out", map[string]string{AnnotationCheck: "off"}, ServiceConfig{Enabled: false}, false},
		{"a typo keeps checking on and is reported", map[string]string{AnnotationCheck: "of"}, ServiceConfig{Enabled: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ConfigFor(&discovery.Service{Annotations: tc.annotations})
			if got != tc.want || (len(errs) > 0) != tc.wantErr {
				t.Errorf("ConfigFor = %+v, %v; want %+v, error %t", got, errs, tc.want, tc.wantErr)
			}
		})
	}
}

func TestFailOpen(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []Status
		want     bool
	}{
		{"no endpoints", nil, false},
		{"one healthy among unhealthy", []Status{Unhealthy, Healthy, Unhealthy}, false},
		{"unknown counts as usable", []Status{Unhealthy, Unknown}, false},
		{"all unhealthy", []Status{Unhealthy, Unhealthy}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FailOpen(tc.statuses); got != tc.want {
				t.Errorf("FailOpen(%v) = %t, want %t", tc.statuses, got, tc.want)
			}
		})
	}
}
