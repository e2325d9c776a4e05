package main

import (
	"context"
	"strings"
	"testing"
)

// Every flag is checked before the agent touches the network: a bad value is
// reported as itself, not hidden behind a failure to reach the API server
// (the kubeconfig here does not exist) or to bind a port.
func TestBadFlagsAreReportedBeforeAnyNetworkWork(t *testing.T) {
	base := []string{"-node-name=n1", "-source=kube", "-kubeconfig=/nonexistent/kubeconfig", "-xds-listen=256.0.0.1:1"}
	for _, tc := range []struct {
		name, flag, want string
	}{
		{"a drain delay beyond the timeout", "-drain-delay=20s", "-drain-timeout"},
		{"no drain timeout", "-drain-timeout=0", "-drain-timeout"},
		{"a health timeout of zero", "-health-timeout=0", "-health-interval and -health-timeout"},
		{"a negative linger", "-health-linger=-1s", "-health-linger"},
		{"a jitter of one", "-health-jitter=1", "-health-jitter"},
		{"an unknown topology tier", "-default-topology=planet", "-default-topology"},
		{"an unknown visibility", "-visibility=galaxy", "-visibility"},
		{"an unknown admission", "-admit=everyone", "-admit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runServe(context.Background(), append(base, tc.flag))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("serve %s: %v, want an error about %s", tc.flag, err, tc.want)
			}
		})
	}
	t.Run("an unknown source", func(t *testing.T) {
		err := runServe(context.Background(), []string{"-node-name=n1", "-source=etcd", "-xds-listen=256.0.0.1:1"})
		if err == nil || !strings.Contains(err.Error(), "-source") {
			t.Errorf("serve -source=etcd: %v, want an error about -source", err)
		}
	})
}
