// Package e2e is nodexds' end-to-end suite: agents deployed with deploy/'s
// RBAC on every simulated node of a real control plane (package cluster),
// real backends and real proxyless gRPC clients of two independent stacks
// (grpc-go: nodexds-echo probe; grpc-js-xds: jsclient/probe.js), asserting
// on which pods answer every RPC. See README.md for what each test proves.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir receives the project's binaries, built once per run (projectBins).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nodexds-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	printSummary(os.Stdout)
	os.Exit(code)
}

// Bins are the project's programs the suite runs.
type Bins struct {
	Nodexds string // nodexds (serve, bootstrap)
	Echo    string // nodexds-echo (serve, probe)
	Node    string // node, for the JS probe
	JSProbe string // e2e/jsclient/probe.js
	Repo    string // repository root (deploy/ lives there)
}

var (
	binsOnce sync.Once
	bins     Bins
	binsErr  error
)

// projectBins builds nodexds and nodexds-echo from the working tree (once
// per test binary) and makes sure the JS probe's node_modules exist. It is
// called after cluster.Start, so a run that cannot create namespaces skips
// before paying for a build.
func projectBins(t testing.TB) Bins {
	t.Helper()
	binsOnce.Do(func() { bins, binsErr = buildProject() })
	if binsErr != nil {
		t.Fatalf("e2e: %v", binsErr)
	}
	return bins
}

// repoRoot is the repository's root: go test runs in the package
// directory, e2e/.
func repoRoot() (string, error) {
	repo, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	if b, err := os.ReadFile(filepath.Join(repo, "go.mod")); err != nil || !strings.Contains(string(b), "module github.com/nodexds/nodexds\n") {
		return "", fmt.Errorf("%s is not the nodexds repository root (run go test from e2e/)", repo)
	}
	return repo, nil
}

func buildProject() (Bins, error) {
	repo, err := repoRoot()
	if err != nil {
		return Bins{}, err
	}
	b := Bins{
		Nodexds: filepath.Join(binDir, "nodexds"),
		Echo:    filepath.Join(binDir, "nodexds-echo"),
		JSProbe: filepath.Join(repo, "e2e", "jsclient", "probe.js"),
		Repo:    repo,
	}

	start := time.Now()
	// One go build for both: -o with a directory writes each main package
	// under its own name.
	cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/nodexds", "./cmd/nodexds-echo")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return Bins{}, fmt.Errorf("go build ./cmd/nodexds ./cmd/nodexds-echo in %s: %v\n%s", repo, err, out)
	}
	built := time.Since(start)

	if b.Node, err = exec.LookPath("node"); err != nil {
		return Bins{}, fmt.Errorf("the JS client stack needs Node.js 20+ (node not found in PATH): %v", err)
	}
	jsDir := filepath.Dir(b.JSProbe)
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "@grpc", "grpc-js-xds")); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = jsDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return Bins{}, fmt.Errorf("npm ci in %s: %v\n%s", jsDir, err, out)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: built nodexds and nodexds-echo in %s\n", built.Round(time.Millisecond))
	return b, nil
}
