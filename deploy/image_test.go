package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	agentxds "github.com/nodexds/nodexds/agent/xds"

	"github.com/nodexds/nodexds/internal/echo"
)

// finalStage is what the Dockerfile's last stage says about the image.
type finalStage struct {
	BinaryPath string   // where COPY puts the agent binary
	User       string   // USER
	Entrypoint []string // ENTRYPOINT (exec form)
	Cmd        []string // CMD (exec form)
	Expose     []string // EXPOSE, as "18000/tcp"
}

// parseFinalStage reads the instructions of the Dockerfile's last FROM stage.
func parseFinalStage(dockerfile string) (finalStage, error) {
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(dockerfile))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "FROM ") {
			last = i
		}
	}
	if last < 0 {
		return finalStage{}, fmt.Errorf("no FROM")
	}
	var st finalStage
	for _, l := range lines[last+1:] {
		instr, args, _ := strings.Cut(l, " ")
		args = strings.TrimSpace(args)
		switch strings.ToUpper(instr) {
		case "COPY":
			f := strings.Fields(args)
			st.BinaryPath = f[len(f)-1]
		case "USER":
			st.User = args
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(args), &v); err != nil {
				return st, fmt.Errorf("%s must be in exec form (a JSON array): %s", instr, args)
			}
			if strings.ToUpper(instr) == "CMD" {
				st.Cmd = v
			} else {
				st.Entrypoint = v
			}
		case "EXPOSE":
			for _, p := range strings.Fields(args) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				st.Expose = append(st.Expose, p)
			}
		}
	}
	if st.BinaryPath == "" || st.User == "" || len(st.Entrypoint) == 0 {
		return st, fmt.Errorf("final stage lacks COPY, USER or ENTRYPOINT: %+v", st)
	}
	return st, nil
}

// containerfile is the final stage rebuilt on scratch around a local binary:
// no base image can be pulled here, and the agent needs nothing from one.
func (st finalStage) containerfile() string {
	q := func(v []string) string { b, _ := json.Marshal(v); return string(b) }
	var b strings.Builder
	fmt.Fprintf(&b, "FROM scratch\nCOPY nodexds %s\nUSER %s\n", st.BinaryPath, st.User)
	for _, p := range st.Expose {
		fmt.Fprintf(&b, "EXPOSE %s\n", p)
	}
	fmt.Fprintf(&b, "ENTRYPOINT %s\n", q(st.Entrypoint))
	if st.Cmd != nil {
		fmt.Fprintf(&b, "CMD %s\n", q(st.Cmd))
	}
	return b.String()
}

// TestImageRunsReadOnlyAsNonRoot builds the agent image with podman from the
// static binary and the Dockerfile's final-stage settings (read from the
// Dockerfile, so they cannot drift), checks the image's configuration, that
// its default command is serve, then runs it read-only as its non-root user
// on a file source and asks /readyz and ADS.
func TestImageRunsReadOnlyAsNonRoot(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("podman is required in CI (apt-get install podman runc): %v", err)
		}
		t.Skip("podman not installed (apt-get install podman runc); the image is not tested")
	}
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseFinalStage(string(df))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(podman, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}

	ctxDir := t.TempDir()
	bin, err := os.ReadFile(agentBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "nodexds"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte(st.containerfile()), 0o644); err != nil {
		t.Fatal(err)
	}
	image := "localhost/nodexds-deploytest:" + strconv.Itoa(os.Getpid())
	run("build", "--quiet", "-t", image, "-f", filepath.Join(ctxDir, "Containerfile"), ctxDir)
	t.Cleanup(func() { exec.Command(podman, "rmi", "-f", image).Run() }) //nolint:errcheck // best effort

	var cfg []struct {
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			ExposedPorts map[string]struct{}
		}
	}
	if err := json.Unmarshal([]byte(run("image", "inspect", image)), &cfg); err != nil || len(cfg) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	c := cfg[0].Config
	var exposed []string
	for p := range c.ExposedPorts {
		exposed = append(exposed, p)
	}
	slices.Sort(exposed)
	wantExposed := slices.Sorted(slices.Values(st.Expose))
	if c.User != st.User || !slices.Equal(c.Entrypoint, st.Entrypoint) || !slices.Equal(c.Cmd, st.Cmd) || !slices.Equal(exposed, wantExposed) {
		t.Errorf("image config user %q entrypoint %q cmd %q ports %q; Dockerfile says %q %q %q %q",
			c.User, c.Entrypoint, c.Cmd, exposed, st.User, st.Entrypoint, st.Cmd, wantExposed)
	}

	// crun cannot run containers on this kind of host (cgroups in hybrid
	// mode); runc can, given explicit rlimits.
	base := []string{"--runtime", "runc", "run", "--network=host", "--read-only",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

	// The default command: serve, which without a node name says so.
	out, err := exec.Command(podman, append(base, "--rm", image)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-node-name (or $NODE_NAME) is required") {
		t.Errorf("running the image with its default command: err %v, output:\n%s\nwant serve's missing node name error", err, out)
	}

	// The agent on a file source, read-only, as the image's user.
	lis, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	be := echo.Serve(lis, "be1-0")
	t.Cleanup(be.Stop)
	cfgDir := t.TempDir()
	writeCluster(t, filepath.Join(cfgDir, "cluster.yaml"), be.Addr, nil)
	if err := os.Chmod(cfgDir, 0o755); err != nil { // readable by the image's user
		t.Fatal(err)
	}
	xdsAddr, adminPort := "127.0.0.1:"+itoa(freePort(t)), freePort(t)
	name := "nodexds-deploytest-" + strconv.Itoa(os.Getpid())
	run(append(base, "-d", "--name", name, "-v", cfgDir+":/config:ro", "-e", "NODE_NAME=node-a", image,
		"serve", "--source=file:/config", "--xds-listen="+xdsAddr, "--admin-listen=127.0.0.1:"+itoa(adminPort),
		"--debug-listen=")...) // its default port may be another agent's on this machine
	t.Cleanup(func() { exec.Command(podman, "rm", "-f", name).Run() }) //nolint:errcheck // best effort
	logs := func() string {
		out, _ := exec.Command(podman, "logs", name).CombinedOutput()
		return string(out)
	}
	// A container that exits shows as /readyz never answering, with its logs.
	waitReady(t, "http://127.0.0.1:"+itoa(adminPort)+"/readyz", nil, logs)

	pid := run("inspect", "--format", "{{.State.Pid}}", name)
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	wantUID, _, _ := strings.Cut(st.User, ":")
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] != wantUID {
			t.Errorf("the agent runs as uid %s, want %s (USER %s)", f[1], wantUID, st.User)
		}
	}
	if ro := run("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name); ro != "true" {
		t.Errorf("root filesystem read-only = %s", ro)
	}

	resp := openADS(t, xdsAddr).request(t, &discoverypb.DiscoveryRequest{TypeUrl: agentxds.ListenerType, ResourceNames: []string{"be1.default:8080"}})
	if len(resp.Resources) != 1 || resp.TypeUrl != agentxds.ListenerType {
		t.Errorf("ADS answer from the container: %d resources of %s, want the listener be1.default:8080", len(resp.Resources), resp.TypeUrl)
	}
}

func TestParseFinalStage(t *testing.T) {
	const df = `# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
USER root
RUN go build \
    -o /out/nodexds .
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nodexds /nodexds
USER 65532:65532
EXPOSE 18000 18001/udp
ENTRYPOINT ["/nodexds"]
CMD ["serve"]
`
	st, err := parseFinalStage(df)
	if err != nil {
		t.Fatal(err)
	}
	want := finalStage{BinaryPath: "/nodexds", User: "65532:65532", Entrypoint: []string{"/nodexds"}, Cmd: []string{"serve"}, Expose: []string{"18000/tcp", "18001/udp"}}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("parsed %+v, want %+v (only the last stage counts)", st, want)
	}
	if _, err := parseFinalStage("FROM scratch\nCMD serve\n"); err == nil {
		t.Errorf("a shell-form CMD was accepted")
	}
}
