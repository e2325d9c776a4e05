package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Binary names, as build-bins.sh writes them.
const (
	binEtcd      = "etcd"
	binAPIServer = "kube-apiserver"
	binKCM       = "kube-controller-manager"
	binKubectl   = "kubectl"
)

// EnvBinDir names an environment variable that, when set, points at a
// directory holding prebuilt etcd, kube-apiserver, kube-controller-manager
// and kubectl; build-bins.sh is then not consulted.
const EnvBinDir = "NODEXDS_BIN_DIR"

// findBinaries returns the directory holding the control-plane binaries
// and kubectl:
// Options.BinDir, else $NODEXDS_BIN_DIR, else the version-keyed cache
// directory of e2e/build-bins.sh, running the script when a binary is
// missing there.
func findBinaries(t testing.TB, explicit string) string {
	t.Helper()
	dir := explicit
	if dir == "" {
		dir = os.Getenv(EnvBinDir)
	}
	if dir != "" {
		if missing := missingBinaries(dir); len(missing) > 0 {
			t.Fatalf("e2e: %s lacks %s", dir, strings.Join(missing, ", "))
		}
		return dir
	}

	script, err := buildScript()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	out, err := exec.Command(script, "--print-dir").Output()
	if err != nil {
		t.Fatalf("e2e: %s --print-dir: %v", script, err)
	}
	dir = strings.TrimSpace(string(out))
	missing := missingBinaries(dir)
	if len(missing) == 0 {
		return dir
	}
	t.Logf("e2e: %s missing in %s; running %s (cold: ~15 min on 2 cores, so use go test -timeout 30m, or run the script beforehand)",
		strings.Join(missing, ", "), dir, script)

	start := time.Now()
	var stdout bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stdout = &stdout
	// Progress goes straight to the terminal: t.Log would hold it until
	// the end of a build that can take a quarter of an hour.
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("e2e: %s: %v", script, err)
	}
	t.Logf("e2e: built control-plane binaries in %s", time.Since(start).Round(time.Second))
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir = lines[len(lines)-1]
	if missing := missingBinaries(dir); len(missing) > 0 {
		t.Fatalf("e2e: %s still lacks %s after building", dir, strings.Join(missing, ", "))
	}
	return dir
}

func missingBinaries(dir string) []string {
	var missing []string
	for _, b := range []string{binEtcd, binAPIServer, binKCM, binKubectl} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

// buildScript locates e2e/build-bins.sh: next to this package's source when
// the test binary was built from a checkout (the common case), else by
// walking up from the working directory (go test runs in the package dir).
func buildScript() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "build-bins.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locate build-bins.sh: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		for _, p := range []string{filepath.Join(dir, "build-bins.sh"), filepath.Join(dir, "e2e", "build-bins.sh")} {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", errors.New("cannot find e2e/build-bins.sh; set " + EnvBinDir + " to a directory with the binaries")
}
