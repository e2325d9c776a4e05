// Package e2e is nodexds' end-to-end suite: agents deployed with deploy/'s
// RBAC on every simulated node of a real control plane (package cluster),
// real backends and real proxyless gRPC clients of three independent stacks
// (grpc-go: nodexds-echo probe; grpc-js-xds: jsclient/probe.js; gRPC C-core
// through Python's grpcio: pyclient/probe.py), asserting on which pods
// answer every RPC. See README.md for what each test proves.
package e2e

import (
	"crypto/sha256"
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

	// The C-core stack: Python with Debian's python3-grpcio, the probe,
	// and the directory of its stubs generated from pyclient/echo.proto.
	// CCoreMissing says why the stack cannot run here ("" when it can).
	Python, PyProbe, PyStubs string
	CCoreVersion             string // grpcio's version, e.g. "1.51.1"
	CCoreMissing             string
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
	b.PyProbe = filepath.Join(repo, "e2e", "pyclient", "probe.py")
	b.PyStubs = filepath.Join(binDir, "pystubs")
	b.Python, b.CCoreVersion, b.CCoreMissing = setUpCCore(filepath.Dir(b.PyProbe), b.PyStubs)
	fmt.Fprintf(os.Stderr, "e2e: built nodexds and nodexds-echo in %s\n", built.Round(time.Millisecond))
	return b, nil
}

// ccorePackages are the Debian packages the C-core stack needs (.ci/run
// installs them).
const ccorePackages = "python3-grpcio python3-protobuf protobuf-compiler-grpc"

// setUpCCore finds a Python that imports grpc (Debian's /usr/bin/python3
// first: python3-grpcio is installed for it, not for a python3 that may come
// first in PATH) and generates the probe's stubs into stubs with protoc and
// grpc_python_plugin. It returns why the stack cannot run, or "".
func setUpCCore(pyDir, stubs string) (python, version, missing string) {
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		out, err := exec.Command(c, "-c", "import grpc, google.protobuf; print(grpc.__version__)").Output()
		if err == nil {
			python, version = c, strings.TrimSpace(string(out))
			break
		}
	}
	if python == "" {
		return "", "", fmt.Sprintf("no python3 here imports grpc and google.protobuf (tried %s): apt-get install %s",
			strings.Join(candidates, ", "), ccorePackages)
	}
	plugin, err := exec.LookPath("grpc_python_plugin")
	if err != nil {
		return "", "", fmt.Sprintf("grpc_python_plugin not found: apt-get install %s", ccorePackages)
	}
	if err := os.MkdirAll(stubs, 0o755); err != nil {
		return "", "", err.Error()
	}
	// wrappers.proto comes with protoc (/usr/include on Debian).
	cmd := exec.Command("protoc", "-I", ".", "-I", "/usr/include", "--python_out="+stubs, "--grpc_out="+stubs,
		"--plugin=protoc-gen-grpc="+plugin, "echo.proto")
	cmd.Dir = pyDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Sprintf("protoc for the C-core probe's stubs: %v\n%s(apt-get install %s)", err, out, ccorePackages)
	}
	return python, version, ""
}

var (
	go155Once sync.Once
	go155Bin  string
	go155Err  error
)

// goProbe155 returns the grpc-go v1.55 probe (grpcgo155/), building it once
// into the binary cache build-bins.sh uses, under a name keyed by its
// sources: a cold build takes about a minute, a cached one nothing.
func goProbe155(t testing.TB) string {
	t.Helper()
	go155Once.Do(func() { go155Bin, go155Err = buildGoProbe155() })
	if go155Err != nil {
		t.Fatalf("e2e: grpc-go v1.55 probe: %v", go155Err)
	}
	return go155Bin
}

func buildGoProbe155() (string, error) {
	src, err := filepath.Abs("grpcgo155")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	cache := os.Getenv("NODEXDS_BIN_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "nodexds", "bin")
	}
	dir := filepath.Join(cache, fmt.Sprintf("grpcgo155-%x", h.Sum(nil)[:6]))
	bin := filepath.Join(dir, "grpcgo155")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Built beside its final name and renamed: an interrupted build never
	// leaves a binary a later run would take for finished.
	start := time.Now()
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %v\n%s", src, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "e2e: built the grpc-go v1.55 probe in %s\n", time.Since(start).Round(time.Millisecond))
	return bin, nil
}
