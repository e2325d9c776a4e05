package xds

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/internal/poll"
)

// fanOutEnv carries the client child's spec (fanOutSpec, as JSON).
const fanOutEnv = "NODEXDS_FANOUT_CLIENTS"

// fanOutName is the one Service every stream subscribes to, under each type.
const fanOutName = "svc0.ns0.svc.cluster.local:8080"

type fanOutSpec struct {
	Addr string
	N    int
}

// BenchmarkFanOut is what each client of a node costs the agent, and how
// fast one change reaches them all: n idle ADS streams, each on its own
// connection from its own loopback address (n pods of one node), subscribe
// to one Service (its listener, route, cluster and load assignment) on a
// server with the agent's gRPC options. Each iteration changes the load
// assignment once; the time is from the change's Publish until the last
// stream's response is handed to gRPC (Send returned): the agent's own
// fan-out, not the clients' decoding; CPU-ms/op is the server's CPU time
// over the same span, which a busy machine does not inflate. The clients run
// in a child process (at SCHED_IDLE), so the memory reported is the
// server's alone: RSS (VmRSS, what the kubelet
// counts, read without forcing a GC) and heap+stacks in use after a GC, each
// grown from before the clients connected, divided by n.
func BenchmarkFanOut(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("clients bind 127.0.0.0/8 addresses other than 127.0.0.1 (Linux only)")
	}
	for _, n := range []int{100, 800} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchFanOut(b, n) })
	}
}

// fanOutRound is one change in flight: its sends so far, and when the last
// one returned.
type fanOutRound struct {
	want  int64
	sends atomic.Int64
	end   time.Time
	done  chan struct{}
}

func benchFanOut(b *testing.B, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := NewCache()
	go resolveFanOut(ctx, cache)
	srv := NewServer(cache, metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler), Options{})
	var round atomic.Pointer[fanOutRound]
	srv.sent = func(typ string) {
		r := round.Load()
		if typ == EndpointType && r != nil && r.sends.Add(1) == r.want {
			r.end = time.Now()
			close(r.done)
		}
	}
	g := srv.Transport(1 << 20)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	lis := srv.Listener(raw)
	go g.Serve(lis)
	defer g.Stop()

	// A first, smaller crowd comes and goes, so that what the process
	// sets up once (gRPC's, the runtime's) is not counted per stream.
	warm := startFanOutClients(b, fanOutSpec{Addr: raw.Addr().String(), N: min(n, 50)})
	warm.wait(b, "READY")
	warm.stop()
	poll.Until(b, "the first crowd's streams are closed", func() bool { return len(srv.Clients()) == 0 })

	runtime.GC()
	debug.FreeOSMemory()
	rss0, heap0 := rssBytes(), heapAndStacks()

	clients := startFanOutClients(b, fanOutSpec{Addr: raw.Addr().String(), N: n})
	clients.wait(b, "READY")
	waitACKed(b, srv, n, 1)
	rss1 := rssBytes()
	runtime.GC()
	heap1 := heapAndStacks()
	if dir := os.Getenv("NODEXDS_FANOUT_PROFILE"); dir != "" {
		writeProfiles(b, dir, n)
	}

	var took []time.Duration
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := &fanOutRound{want: int64(n), done: make(chan struct{})}
		round.Store(r)
		cpu0 := cpuTime()
		start := time.Now()
		cache.Set(EndpointType, fanOutName, fanOutEndpoints(i+1), Scope{}, start)
		// The workers the Publish starts inherit the label: a CPU profile
		// (-cpuprofile, -tagfocus=fanout) tells their work from the rest.
		pprof.Do(context.Background(), pprof.Labels("fanout", "send"), func(context.Context) { cache.Publish() })
		<-r.done
		took = append(took, r.end.Sub(start))
		cpu += cpuTime() - cpu0
		// Off the clock: every client has the change and the server has
		// handled its ACK, so the next change starts from idle streams.
		b.StopTimer()
		clients.wait(b, "GOT "+strconv.Itoa(i+1))
		waitACKed(b, srv, n, i+2)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2])/1e6, "ms-p50")
	b.ReportMetric(float64(took[len(took)-1])/1e6, "ms-max")
	b.ReportMetric(float64(cpu)/1e6/float64(len(took)), "CPU-ms/op")
	b.ReportMetric(float64(rss1-rss0)/float64(n)/1024, "KiB-RSS/stream")
	b.ReportMetric(float64(heap1-heap0)/float64(n)/1024, "KiB-heap/stream")
}

// resolveFanOut plays the agent: it Sets each name subscribed.
func resolveFanOut(ctx context.Context, cache *Cache) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-cache.Interests():
			for _, in := range cache.TakeInterests() {
				if in.Wanted {
					cache.Set(in.Type, in.Name, fanOutResource(in.Type, in.Name), Scope{}, time.Now())
				}
			}
			cache.Publish()
		}
	}
}

func fanOutResource(typ, name string) proto.Message {
	switch typ {
	case ListenerType:
		return &listenerv3.Listener{Name: name}
	case RouteType:
		return &routev3.RouteConfiguration{Name: name}
	case ClusterType:
		return resources.Cluster(name, resources.DefaultLB)
	}
	return fanOutEndpoints(0)
}

// fanOutEndpoints is the Service's load assignment at generation gen: ten
// endpoints in one locality, one of them moved by gen.
func fanOutEndpoints(gen int) *endpointv3.ClusterLoadAssignment {
	loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: "r1", Zone: "z1"}}
	for i := range 10 {
		addr := netip.AddrFrom4([4]byte{10, 0, byte(gen >> 8), byte(gen + i)}).String()
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50051}},
			}}},
		}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: fanOutName, Endpoints: []*endpointv3.LocalityLbEndpoints{loc}}
}

// waitACKed waits until every stream has ACKed acks load assignment
// responses.
func waitACKed(b *testing.B, srv *Server, n, acks int) {
	b.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		cs := srv.Clients()
		ok := len(cs) == n
		for _, c := range cs {
			i := slices.IndexFunc(c.Types, func(t TypeStatus) bool { return t.TypeURL == EndpointType })
			ok = ok && i >= 0 && c.Types[i].ACKs >= uint64(acks)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d streams, not all of which ACKed %d load assignments in 30 s", len(cs), acks)
		}
	}
}

// writeProfiles writes the idle streams' heap and goroutine profiles, and a
// heap dump (debug.WriteHeapDump: it holds each goroutine's stack bounds and
// frames, which say what a stream's stacks cost).
func writeProfiles(b *testing.B, dir string, n int) {
	for _, p := range []string{"heap", "goroutine"} {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("fanout-%d-%s.pprof", n, p)))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(p).WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("fanout-%d.heapdump", n)))
	if err != nil {
		b.Fatal(err)
	}
	debug.WriteHeapDump(f.Fd())
	f.Close()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.Logf("%d goroutines for %d streams; heap in use %d KiB, stacks %d KiB", runtime.NumGoroutine(), n, m.HeapInuse>>10, m.StackInuse>>10)
}

// cpuTime is the CPU time this process has used (user and system): the
// server's, since the clients run in a child.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is this process's VmRSS.
func rssBytes() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func heapAndStacks() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// fanOutClients is the child process holding the clients; it says READY
// once every stream has its four resources, and "GOT k" once every stream
// has had k load assignments after the first.
type fanOutClients struct {
	lines chan string
	stop  func()
}

func startFanOutClients(b *testing.B, spec fanOutSpec) *fanOutClients {
	b.Helper()
	js, _ := json.Marshal(spec)
	args := []string{os.Args[0], "-test.run=^TestFanOutClients$"}
	// The clients run at SCHED_IDLE where chrt(1) can set it: on the cores
	// the server leaves idle, so that the fan-out measured is the server's
	// own, not a race with its clients' decoding.
	if chrt, err := exec.LookPath("chrt"); err == nil {
		args = append([]string{chrt, "--idle", "0"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), fanOutEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &fanOutClients{lines: make(chan string, 1024), stop: sync.OnceFunc(func() { stdin.Close(); cmd.Wait() })}
	b.Cleanup(c.stop)
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c
}

func (c *fanOutClients) wait(b *testing.B, want string) {
	b.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				b.Fatalf("the clients ended before saying %q", want)
			}
			if l == want {
				return
			}
		case <-timeout:
			b.Fatalf("the clients did not say %q in 60 s", want)
		}
	}
}

// TestFanOutClients is BenchmarkFanOut's client process; it does nothing in
// a normal run.
func TestFanOutClients(t *testing.T) {
	v := os.Getenv(fanOutEnv)
	if v == "" {
		t.Skip("runs only as the client child of BenchmarkFanOut")
	}
	var spec fanOutSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	eds := make([]int, spec.N) // load assignments each stream has had
	reported := 0
	ready := make(chan struct{})
	var opened sync.WaitGroup
	report := func() {
		// Called with mu held.
		least := slices.Min(eds)
		if least >= 1 && reported == 0 {
			select {
			case <-ready:
			default:
				close(ready)
			}
		}
		for ; reported < least-1; reported++ {
			fmt.Printf("GOT %d\n", reported+1)
		}
	}
	sem := make(chan struct{}, 16)
	for i := range spec.N {
		sem <- struct{}{}
		opened.Go(func() {
			defer func() { <-sem }()
			local := netip.AddrFrom4([4]byte{127, 10 + byte(i/250), byte(i % 250), 1})
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
			cc, err := grpc.NewClient("passthrough:///"+spec.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
			if err != nil {
				panic(err)
			}
			s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
			if err != nil {
				panic(err)
			}
			node := &corev3.Node{Id: "fanout-" + strconv.Itoa(i), UserAgentName: "gRPC Go"}
			for _, typ := range listOrder {
				if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: []string{fanOutName}}); err != nil {
					panic(err)
				}
			}
			go func() {
				for {
					r, err := s.Recv()
					if err != nil {
						return
					}
					s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, ResourceNames: []string{fanOutName},
						VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce})
					if r.TypeUrl == EndpointType {
						mu.Lock()
						eds[i]++
						report()
						mu.Unlock()
					}
				}
			}()
		})
	}
	opened.Wait()
	<-ready
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin) // until the benchmark is done
}
