package health

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

const (
	methodWatch = "/grpc.health.v1.Health/Watch"
	methodCheck = "/grpc.health.v1.Health/Check"
)

// checker is one endpoint's checking: one goroutine, one connection at a
// time. Only that goroutine touches its fields.
type checker struct {
	p                   *Prober
	pr                  *probe
	req                 []byte
	watch               bool   // false once the server said Watch is unimplemented
	status              Status // what this checker last set
	observed            bool   // a result has been counted
	failures, successes int
}

// run checks one endpoint until ctx is cancelled.
func (p *Prober) run(ctx context.Context, pr *probe) {
	req, _ := proto.Marshal(&healthpb.HealthCheckRequest{Service: pr.target.Service}) // cannot fail: a string field
	c := &checker{p: p, pr: pr, req: req, watch: true}
	for {
		if c.session(ctx) || ctx.Err() != nil {
			return
		}
		t := time.NewTimer(c.jitter(c.retryDelay()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session connects, checks until the connection fails or must be replaced,
// and reports whether checking is over for good.
func (c *checker) session(ctx context.Context) (done bool) {
	select {
	case c.p.dials <- struct{}{}:
	case <-ctx.Done():
		return true
	}
	s := stream{dials: c.p.dials, dialing: true, mode: "check"}
	defer s.release()
	if c.watch {
		s.mode = "watch"
	}
	g, err := c.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		c.result(s.mode, false)
		return false
	}
	defer g.conn.Close()
	// Stopping a probe closes its connection, which ends a blocked read.
	defer context.AfterFunc(ctx, func() { g.conn.Close() })()
	return c.check(ctx, g, &s)
}

// stream is the state of one connection's calls.
type stream struct {
	dials                     chan struct{} // the Prober's dial semaphore
	dialing                   bool          // a place in dials is held
	mode                      string        // "watch" or "check": what a failed connection counts as
	watchID, checkID          uint32
	firstBy, checkBy, checkAt time.Time // zero: not due
	checkResp                 *healthpb.HealthCheckResponse
}

// release gives back the place among the dials in flight, once.
func (s *stream) release() {
	if s.dialing {
		s.dialing = false
		<-s.dials
	}
}

// verdict is what a connection's event leaves to do.
type verdict uint8

const (
	keepOn    verdict = iota // read on
	answered                 // a call answered: schedule the next Check
	reconnect                // this connection is done; connect again later
	finished                 // checking is over for good
)

// check runs the Watch and the Checks on a new connection; see session.
func (c *checker) check(ctx context.Context, g *grpcConn, s *stream) (done bool) {
	if !c.begin(g, s) {
		c.result(s.mode, false)
		return false
	}
	for {
		ev, err := g.next(earliest(s.firstBy, s.checkBy, s.checkAt))
		now := time.Now()
		var v verdict
		switch {
		case ctx.Err() != nil:
			return true
		case errors.Is(err, errDue):
			v = c.deadline(g, s, now)
		case errors.Is(err, errGoAway):
			return false // not a failure: the server is closing gracefully; reconnect
		case err != nil:
			c.result(s.mode, false)
			return false
		default:
			s.release() // the server answers
			switch ev.id {
			case s.watchID:
				v = c.watchEvent(s, &ev, now)
			case s.checkID:
				v = c.checkEvent(s, &ev)
			}
		}
		switch v {
		case answered:
			c.scheduleCheck(s, now)
		case reconnect:
			return false
		case finished:
			return true
		}
	}
}

// begin starts the Watch or, without Watch, makes a Check due now. False
// means the connection failed.
func (c *checker) begin(g *grpcConn, s *stream) bool {
	if !c.watch {
		s.checkAt = time.Now()
		return true
	}
	id, err := g.start(methodWatch, c.req, 0)
	if err != nil {
		return false
	}
	s.watchID, s.firstBy = id, time.Now().Add(c.p.cfg.Timeout)
	return true
}

// deadline acts on the time that has come: a Watch or a Check unanswered in
// time fails the connection; a Check due is sent.
func (c *checker) deadline(g *grpcConn, s *stream, now time.Time) verdict {
	switch {
	case due(s.firstBy, now):
		c.result("watch", false) // no status within the timeout
		return reconnect
	case due(s.checkBy, now):
		c.result("check", false) // a hung server, or a black-holed link
		return reconnect
	case due(s.checkAt, now):
		s.checkAt = time.Time{}
		id, err := g.start(methodCheck, c.req, c.p.cfg.Timeout)
		if err != nil {
			c.result("check", false)
			return reconnect
		}
		s.checkID, s.checkBy, s.checkResp = id, now.Add(c.p.cfg.Timeout), nil
	}
	return keepOn
}

// watchEvent counts a Watch status. A server without Watch is checked with
// Check on the same connection from now on.
func (c *checker) watchEvent(s *stream, ev *event, now time.Time) verdict {
	if !ev.end {
		s.firstBy = time.Time{}
		c.result("watch", isServing(ev.msg))
		return answered
	}
	s.watchID, s.firstBy = 0, time.Time{}
	if ev.code != codes.Unimplemented {
		c.result("watch", false)
		return reconnect
	}
	c.watch, s.mode = false, "check"
	if s.checkID == 0 {
		s.checkAt = now
	}
	return keepOn
}

// checkEvent keeps a Check's response until the call ends, then counts it.
func (c *checker) checkEvent(s *stream, ev *event) verdict {
	if !ev.end {
		s.checkResp = new(healthpb.HealthCheckResponse)
		if proto.Unmarshal(ev.msg, s.checkResp) != nil {
			s.checkResp = nil
		}
		return keepOn
	}
	s.checkID, s.checkBy = 0, time.Time{}
	switch {
	case ev.code == codes.OK && s.checkResp != nil:
		c.result("check", s.checkResp.GetStatus() == healthpb.HealthCheckResponse_SERVING)
	case ev.code == codes.Unimplemented && s.watchID == 0:
		c.unimplemented()
		return finished
	case ev.code == codes.Unimplemented:
		// A server that Watches but cannot Check: liveness is not to be
		// had from it.
	default:
		c.result("check", false)
	}
	return answered
}

// scheduleCheck schedules the next Check: soon while a result awaits
// confirmation, else every Interval without Watch, or every
// LivenessInterval with it.
func (c *checker) scheduleCheck(s *stream, now time.Time) {
	if s.checkID != 0 {
		return
	}
	cfg := &c.p.cfg
	switch {
	case c.unsettled():
		s.checkAt = now.Add(c.jitter(cfg.ConfirmInterval()))
	case !s.checkAt.IsZero():
	case s.watchID == 0:
		s.checkAt = now.Add(c.jitter(cfg.Interval))
	case cfg.LivenessInterval > 0:
		s.checkAt = now.Add(c.jitter(cfg.LivenessInterval))
	}
}

// connect dials the endpoint and starts HTTP/2. A function of its own, so
// that the dialer's frame is off the stack while the connection waits.
func (c *checker) connect(ctx context.Context) (*grpcConn, error) {
	cfg := &c.p.cfg
	t := c.pr.target
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	if t.Identity != "" && cfg.TLS != nil {
		var plain bool
		if conn, plain, err = c.secure(ctx, conn); plain {
			// A server between plaintext and TLS (its Service changed, its
			// Listener not yet): what it says of its health still counts.
			conn, err = c.dial(ctx)
		}
		if err != nil {
			return nil, err
		}
	}
	g, err := newGRPCConn(conn, t.Addr.String(), cfg.Timeout)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return g, nil
}

func (c *checker) dial(ctx context.Context) (net.Conn, error) {
	cfg := &c.p.cfg
	d := net.Dialer{Timeout: cfg.Timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     cfg.Interval,
		Interval: cfg.Timeout,
		Count:    cfg.UnhealthyThreshold,
	}}
	return d.DialContext(ctx, "tcp", c.pr.target.Addr.String())
}

// secure makes conn TLS. plain reports that the server answered the TLS
// handshake with something that is not TLS: gRPC servers start with their
// HTTP/2 settings, so a plaintext server is told apart from one that
// refused the handshake. conn is closed unless it is returned.
func (c *checker) secure(ctx context.Context, conn net.Conn) (_ net.Conn, plain bool, err error) {
	cfg := &c.p.cfg
	tc, err := cfg.TLS(c.pr.target.Identity)
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	s := tls.Client(conn, tc)
	if err := s.HandshakeContext(ctx); err != nil {
		conn.Close()
		var rh tls.RecordHeaderError
		return nil, errors.As(err, &rh), err
	}
	return s, false, nil
}

func isServing(msg []byte) bool {
	var r healthpb.HealthCheckResponse
	return proto.Unmarshal(msg, &r) == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// unimplemented settles an endpoint that has no health service: it is
// treated as healthy and no longer checked (Kubernetes readiness still
// applies). Logged once per endpoint.
func (c *checker) unimplemented() {
	c.p.metrics.Unimplemented.Inc()
	c.p.log.Warn("health: endpoint has no gRPC health service; treating it as healthy (set nodexds.io/health-check: \"off\" to skip it)",
		"addr", c.pr.target.Addr.String())
	c.setStatus(Healthy)
}

// result counts one result toward the thresholds. The first result is taken
// at face value: thresholds guard transitions from a known status, and a
// new endpoint's is Unknown. Holding a NOT_SERVING endpoint to the threshold
// would serve it as usable to every new client meanwhile.
func (c *checker) result(mode string, ok bool) {
	first := !c.observed
	c.observed = true
	outcome, count, other, threshold, status := "fail", &c.failures, &c.successes, c.p.cfg.UnhealthyThreshold, Unhealthy
	if ok {
		outcome, count, other, threshold, status = "ok", &c.successes, &c.failures, c.p.cfg.HealthyThreshold, Healthy
	}
	c.p.metrics.Checks.WithLabelValues(mode, outcome).Inc()
	*other, *count = 0, min(*count+1, threshold)
	if first {
		*count = threshold
	}
	if *count >= threshold {
		c.setStatus(status)
	}
}

func (c *checker) setStatus(s Status) {
	if c.status != s {
		c.status = s
		c.p.set(c.pr, s)
	}
}

// unsettled says a result has not reached its threshold yet.
func (c *checker) unsettled() bool {
	return c.failures > 0 && c.status != Unhealthy || c.successes > 0 && c.status != Healthy
}

// retryDelay is the wait before connecting again.
func (c *checker) retryDelay() time.Duration {
	if c.status == Unhealthy && !c.unsettled() {
		return c.p.cfg.Interval
	}
	// Confirm a failure soon; an endpoint whose connection ended without one
	// (GOAWAY) is watched again soon too.
	return c.p.cfg.ConfirmInterval()
}

func (c *checker) jitter(d time.Duration) time.Duration {
	j := c.p.cfg.Jitter
	if j <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
}

// earliest returns the earliest non-zero time, or zero.
func earliest(ts ...time.Time) time.Time {
	var e time.Time
	for _, t := range ts {
		if !t.IsZero() && (e.IsZero() || t.Before(e)) {
			e = t
		}
	}
	return e
}

func due(t, now time.Time) bool { return !t.IsZero() && !now.Before(t) }
