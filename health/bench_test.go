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
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

// BenchmarkWatch watches N endpoints (default 1,000; NODEXDS_BENCH_ENDPOINTS)
// served by another process, with the default configuration, and reports what
// checking them costs this process: heap and stacks per checked endpoint
// (B/endpoint, after GC), goroutines per endpoint, RSS, steady-state CPU
// (percent of one core), and how long a pushed NOT_SERVING or SERVING takes
// to reach the agent (flip command → cluster marked changed; a NOT_SERVING
// includes the confirming Check of the default threshold of 2). One
// iteration is one flip.
func BenchmarkWatch(b *testing.B) {
	n := 1000
	if s := os.Getenv("NODEXDS_BENCH_ENDPOINTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	f := startFleet(b, n)
	cfg := DefaultConfig
	cfg.MaxEndpoints = n
	if s := os.Getenv("NODEXDS_BENCH_INTERVAL"); s != "" {
		cfg.Interval, _ = time.ParseDuration(s)
	}
	// Long enough to include every periodic check at least twice.
	window := min(max(2*cfg.Interval, 2*cfg.LivenessInterval, 10*time.Second), time.Minute)
	if s := os.Getenv("NODEXDS_BENCH_WINDOW"); s != "" {
		window, _ = time.ParseDuration(s)
	}
	p := NewProber(cfg, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	defer p.Close()
	targets := make([]Target, n)
	for i, a := range f.addrs {
		targets[i] = Target{Addr: a}
	}
	before, rss0, g0 := memInUse(), rssMiB(), runtime.NumGoroutine()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
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

	// Steady state: nothing changing, liveness checks running.
	cpu0, t0 := cpuTime(), time.Now()
	time.Sleep(window)
	cpu := float64(cpuTime()-cpu0) / float64(time.Since(t0)) * 100
	perEndpoint := float64(memInUse()-before) / float64(n)
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	stack := float64(ms1.StackInuse-ms0.StackInuse) / float64(n)
	if os.Getenv("NODEXDS_BENCH_HEAPPROFILE") != "" {
		fh, _ := os.Create(os.Getenv("NODEXDS_BENCH_HEAPPROFILE"))
		pprof.WriteHeapProfile(fh)
		fh.Close()
	}
	goroutines := float64(runtime.NumGoroutine()-g0) / float64(n)
	rss := rssMiB()

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
	slices.Sort(lat)
	b.ReportMetric(perEndpoint, "B/endpoint")
	b.ReportMetric(stack, "B-stack/endpoint")
	b.ReportMetric(goroutines, "goroutines/endpoint")
	b.ReportMetric(rss, "MiB-rss")
	b.ReportMetric((rss-rss0)*1024/float64(n), "KiB-rss/endpoint")
	b.ReportMetric(cpu, "%cpu-steady")
	b.ReportMetric(ramp.Seconds(), "s-to-all-healthy")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-flip-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-flip-µs")
}

// memInUse is the heap and goroutine stacks in use after a GC.
func memInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}
