package health

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nodexds/nodexds/internal/metricstest"
	"github.com/nodexds/nodexds/internal/poll"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const (
	serving    = healthpb.HealthCheckResponse_SERVING
	notServing = healthpb.HealthCheckResponse_NOT_SERVING
)

// testConfig acts on what a server says in tens of milliseconds, without
// jitter so that the order of checks is the one the test expects. Its
// Timeout is long: a healthy server has seconds to answer, so that a busy
// machine under the race detector does not make it look dead; tests of what
// only a timeout can tell set a shorter one.
var testConfig = Config{
	Interval: 100 * time.Millisecond, LivenessInterval: time.Hour, Timeout: 5 * time.Second,
	UnhealthyThreshold: 2, HealthyThreshold: 1, MaxDials: 8, MaxEndpoints: 100,
}

// testProber is a Prober with its own registry, closed when the test ends.
type testProber struct {
	*Prober
	reg *prometheus.Registry
}

func startProber(t testing.TB, cfg Config) *testProber {
	t.Helper()
	reg := prometheus.NewRegistry()
	p := NewProber(cfg, NewMetrics(reg), slog.New(slog.DiscardHandler))
	t.Cleanup(p.Close)
	return &testProber{Prober: p, reg: reg}
}

// metric is the sum of the series of name whose label values include
// labelValues.
func (p *testProber) metric(t testing.TB, name string, labelValues ...string) float64 {
	t.Helper()
	v, err := metricstest.Sum(p.reg, name, labelValues...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitFor waits until cond holds; see poll.Until.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, cond)
}

// waitStatus waits until the prober reports want for target.
func waitStatus(t testing.TB, p *testProber, target Target, want Status) {
	t.Helper()
	waitFor(t, target.Addr.String()+" is "+want.String(), func() bool { return p.Status(target) == want })
}

// healthServer is a real grpc-go server on loopback serving grpc-go's own
// health service (google.golang.org/grpc/health), or variants of it.
type healthServer struct {
	*health.Server
	Target Target
	grpc   *grpc.Server
	lis    *countingListener
	hang   chan struct{} // closed: Check calls hang
	mu     sync.Mutex
	hung   bool
}

type serverOption func(*serverOptions)

type serverOptions struct {
	noWatch, noHealth, scripted bool
	addr                        string
	tls                         *tls.Config
}

// withoutWatch serves Check only: Watch is UNIMPLEMENTED, as in servers
// that implement the health service by hand.
func withoutWatch() serverOption { return func(o *serverOptions) { o.noWatch = true } }

// withoutHealth serves no health service at all.
func withoutHealth() serverOption { return func(o *serverOptions) { o.noHealth = true } }

// withTLS serves TLS only, with cfg.
func withTLS(cfg *tls.Config) serverOption { return func(o *serverOptions) { o.tls = cfg } }

// at listens on addr (e.g. "127.0.0.2:0").
func at(addr string) serverOption { return func(o *serverOptions) { o.addr = addr } }

func startHealthServer(t testing.TB, opts ...serverOption) *healthServer {
	t.Helper()
	o := serverOptions{addr: "127.0.0.1:0"}
	for _, f := range opts {
		f(&o)
	}
	lis, err := net.Listen("tcp", o.addr)
	if err != nil {
		t.Fatal(err)
	}
	var sopts []grpc.ServerOption
	if o.tls != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	s := &healthServer{Server: health.NewServer(), grpc: grpc.NewServer(sopts...), lis: &countingListener{Listener: lis}, hang: make(chan struct{})}
	s.Target = Target{Addr: netip.MustParseAddrPort(lis.Addr().String())}
	switch {
	case o.noHealth:
	case o.noWatch:
		healthpb.RegisterHealthServer(s.grpc, checkOnly{s})
	default:
		healthpb.RegisterHealthServer(s.grpc, hangable{s})
	}
	go s.grpc.Serve(s.lis)
	t.Cleanup(s.grpc.Stop)
	return s
}

// Hang makes Check calls hang from now on, as a server whose handlers are
// stuck; open Watch streams stay open and silent.
func (s *healthServer) Hang() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hung {
		s.hung = true
		close(s.hang)
	}
}

func (s *healthServer) check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	select {
	case <-s.hang:
		<-ctx.Done()
		return nil, ctx.Err()
	default:
	}
	return s.Server.Check(ctx, req)
}

type hangable struct{ s *healthServer }

func (h hangable) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return h.s.check(ctx, req)
}

func (h hangable) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	return h.s.Server.Watch(req, stream)
}

func (h hangable) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return h.s.Server.List(ctx, req)
}

type checkOnly struct{ s *healthServer }

func (c checkOnly) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return c.s.check(ctx, req)
}

func (checkOnly) Watch(*healthpb.HealthCheckRequest, healthpb.Health_WatchServer) error {
	return status.Error(codes.Unimplemented, "no Watch here")
}

func (checkOnly) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return nil, status.Error(codes.Unimplemented, "no List here")
}

// countingListener counts the connections accepted and still open.
type countingListener struct {
	net.Listener
	mu             sync.Mutex
	accepted, open int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.accepted++
	l.open++
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) counts() (accepted, open int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted, l.open
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.mu.Lock(); c.l.open--; c.l.mu.Unlock() })
	return c.Conn.Close()
}

// scriptedServer is a real gRPC health server whose Watch pushes and Check
// answers the test sets apart, so a test can tell which one a result came
// from.
type scriptedServer struct {
	healthpb.UnimplementedHealthServer
	Target Target
	pushes chan healthpb.HealthCheckResponse_ServingStatus
	mu     sync.Mutex
	answer healthpb.HealthCheckResponse_ServingStatus
}

func startScriptedServer(t testing.TB, first, answer healthpb.HealthCheckResponse_ServingStatus) *scriptedServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{Target: Target{Addr: netip.MustParseAddrPort(lis.Addr().String())}, pushes: make(chan healthpb.HealthCheckResponse_ServingStatus, 16), answer: answer}
	s.pushes <- first
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, s)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return s
}

// Push sends st on the open Watch stream.
func (s *scriptedServer) Push(st healthpb.HealthCheckResponse_ServingStatus) { s.pushes <- st }

// Answer sets what Check calls answer.
func (s *scriptedServer) Answer(st healthpb.HealthCheckResponse_ServingStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = st
}

func (s *scriptedServer) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &healthpb.HealthCheckResponse{Status: s.answer}, nil
}

func (s *scriptedServer) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	for {
		select {
		case st := <-s.pushes:
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// startSilentServer accepts TCP connections and never answers: a hung
// process, or a black-holed route.
func startSilentServer(t testing.TB) Target {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	return Target{Addr: netip.MustParseAddrPort(lis.Addr().String())}
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
