package conformance

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestFixturesAreVerbatim compares the copies with the module they come
// from, when the Go module cache has it (the go command can fetch it).
func TestFixturesAreVerbatim(t *testing.T) {
	out, err := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/gateway-api/conformance@"+Version).Output()
	if err != nil {
		t.Skipf("conformance module not available here: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Skipf("go mod download printed no Dir: %s", out)
	}
	entries, err := Mesh.ReadDir("mesh")
	if err != nil || len(entries) == 0 {
		t.Fatalf("no fixtures embedded: %v", err)
	}
	check := func(ours []byte, theirs string) {
		want, err := os.ReadFile(theirs)
		if err != nil {
			t.Fatal(err)
		}
		if string(ours) != string(want) {
			t.Errorf("%s differs from the copy here", theirs)
		}
	}
	for _, e := range entries {
		ours, _ := Mesh.ReadFile("mesh/" + e.Name())
		check(ours, filepath.Join(mod.Dir, "tests", "mesh", e.Name()))
	}
	check(Manifests, filepath.Join(mod.Dir, "mesh", "manifests.yaml"))
}
