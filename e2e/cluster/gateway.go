package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GatewayAPIKinds are the Gateway API resources (plural) whose
// standard-channel CRDs InstallGatewayAPI applies: what nodexds reads.
var GatewayAPIKinds = []string{"grpcroutes", "httproutes", "referencegrants"}

// establishTimeout bounds the wait for the CRDs to be served.
const establishTimeout = time.Minute

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallGatewayAPI applies the standard-channel CRDs of GatewayAPIKinds
// from the module sigs.k8s.io/gateway-api at the version e2e/go.mod requires
// (config/crd/standard/gateway.networking.k8s.io_<kind>.yaml, from the Go
// module cache, downloaded through the module proxy if needed), server-side
// (the HTTPRoute CRD is over client-side apply's annotation limit), and
// returns once the API server reports each Established. It returns that
// module version.
func (c *Cluster) InstallGatewayAPI(t testing.TB) string {
	t.Helper()
	dir, version, err := gatewayAPIModule()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	for _, kind := range GatewayAPIKinds {
		b, err := os.ReadFile(filepath.Join(dir, "config", "crd", "standard", gwv1.GroupName+"_"+kind+".yaml"))
		if err != nil {
			t.Fatalf("e2e: Gateway API %s CRD: %v", version, err)
		}
		c.Apply(t, string(b))
	}
	crds := c.Dynamic(t).Resource(crdResource)
	for _, kind := range GatewayAPIKinds {
		name := kind + "." + gwv1.GroupName
		var last string
		for deadline := time.Now().Add(establishTimeout); ; time.Sleep(100 * time.Millisecond) {
			crd, err := crds.Get(t.Context(), name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
			} else if last = crdCondition(crd.Object, "Established"); last == "True" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("e2e: CRD %s not Established within %s (last: %s)", name, establishTimeout, last)
			}
		}
	}
	t.Logf("e2e: Gateway API %s CRDs %v established", version, GatewayAPIKinds)
	return version
}

// crdCondition returns the status of a CRD's condition, or why it has none.
func crdCondition(obj map[string]any, typ string) string {
	status, _ := obj["status"].(map[string]any)
	conds, _ := status["conditions"].([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			return fmt.Sprintf("%v", m["status"])
		}
	}
	return "no " + typ + " condition yet"
}

// gatewayAPIModule returns the directory and version of the Gateway API
// module in the e2e module's build list, downloading it if needed.
func gatewayAPIModule() (dir, version string, err error) {
	out, err := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/gateway-api").Output()
	var m struct{ Dir, Version, Error string }
	if jerr := json.Unmarshal(out, &m); jerr != nil || m.Error != "" || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download -json sigs.k8s.io/gateway-api: %v %s (%v)", err, m.Error, jerr)
	}
	return m.Dir, m.Version, nil
}
