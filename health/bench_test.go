package health

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nodexds/nodexds/agent/metrics"
)

// fleetEnv makes the test binary a fleet of health servers (see TestMain), so
// the benchmark's own CPU and memory are the prober's alone.
const fleetEnv = "NODEXDS_HEALTH_FLEET"

func TestMain(m *testing.M) {
	if n, _ := strconv.Atoi(os.Getenv(fleetEnv)); n > 0 {
		runFleet(n)
		return
	}
	os.Exit(m.Run())
}

// runFleet serves n health services on loopback, prints their addresses, then
// flips statuses on command ("flip <i> <SERVING|NOT_SERVING>") from stdin.
func runFleet(n int) {
	servers := make([]*health.Server, n)
	out := bufio.NewWriter(os.Stdout)
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		g := grpc.NewServer()
		servers[i] = health.NewServer()
		healthpb.RegisterHealthServer(g, servers[i])
		go g.Serve(lis)
		fmt.Fprintln(out, lis.Addr())
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "flip" {
			i, _ := strconv.Atoi(f[1])
			servers[i].SetServingStatus("", healthpb.HealthCheckResponse_ServingStatus(healthpb.HealthCheckResponse_ServingStatus_value[f[2]]))
		}
	}
}

type fleet struct {
	addrs []netip.AddrPort
	cmds  io.Writer
}

func startFleet(b *testing.B, n int) *fleet {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", fleetEnv, n))
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	f := &fleet{cmds: stdin}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "ready" {
		f.addrs = append(f.addrs, netip.MustParseAddrPort(sc.Text()))
	}
	if len(f.addrs) != n {
		b.Fatalf("fleet started %d of %d servers", len(f.addrs), n)
	}
	return f
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMiB() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkWatch5000 watches 5,000 endpoints (in another process) with the
// default configuration and reports the prober's steady-state CPU (percent of
// one core), memory, and how long a pushed NOT_SERVING takes to reach the
// agent (flip command → cluster marked changed). One iteration is one flip.
func BenchmarkWatch5000(b *testing.B) {
	n := 5000
	if s := os.Getenv("NODEXDS_BENCH_ENDPOINTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	f := startFleet(b, n)
	m := metrics.New(prometheus.NewRegistry())
	cfg := DefaultConfig
	if s := os.Getenv("NODEXDS_BENCH_INTERVAL"); s != "" {
		cfg.Interval, _ = time.ParseDuration(s)
	}
	p := NewProber(cfg, m, slog.New(slog.DiscardHandler))
	defer p.Close()
	targets := make([]Target, n)
	for i, a := range f.addrs {
		targets[i] = Target{Addr: a}
	}
	rampStart := time.Now()
	p.Track("bench", targets)
	for healthy := 0; healthy < n; {
		time.Sleep(50 * time.Millisecond)
		healthy = 0
		for _, t := range targets {
			if p.Status(t) == Healthy {
				healthy++
			}
		}
		if time.Since(rampStart) > 2*time.Minute {
			b.Fatalf("only %d of %d healthy after 2 minutes", healthy, n)
		}
	}
	ramp := time.Since(rampStart)

	// Steady state: two liveness intervals with nothing changing.
	runtime.GC()
	// Long enough to include every periodic check at least twice.
	window := min(max(2*cfg.Interval, 2*cfg.LivenessInterval, 10*time.Second), time.Minute)
	cpu0, t0 := cpuTime(), time.Now()
	time.Sleep(window)
	cpu := float64(cpuTime()-cpu0) / float64(time.Since(t0)) * 100
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	// Each endpoint goes NOT_SERVING, then SERVING again, one at a time.
	select {
	case <-p.Changed():
	default:
	}
	p.TakeChanged()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		st := []string{"NOT_SERVING", "SERVING"}[i%2]
		start := time.Now()
		fmt.Fprintf(f.cmds, "flip %d %s\n", (i/2)%n, st)
		<-p.Changed()
		lat = append(lat, time.Since(start))
		p.TakeChanged()
	}
	b.StopTimer()
	sortDurations(lat)
	b.ReportMetric(cpu, "%cpu-steady")
	b.ReportMetric(rssMiB(), "MiB-rss")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB-heap")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	b.ReportMetric(ramp.Seconds(), "s-to-all-healthy")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-flip-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-flip-µs")
}

func sortDurations(d []time.Duration) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j] < d[j-1]; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}
