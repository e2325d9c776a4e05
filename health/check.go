package health

import (
	"context"
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
	cfg := &c.p.cfg
	select {
	case c.p.dials <- struct{}{}:
	case <-ctx.Done():
		return true
	}
	dialing := true
	release := func() {
		if dialing {
			dialing = false
			<-c.p.dials
		}
	}
	defer release()
	mode := "check"
	if c.watch {
		mode = "watch"
	}
	g, err := c.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		c.result(mode, false)
		return false
	}
	defer g.conn.Close()
	// Stopping a probe closes its connection, which ends a blocked read.
	defer context.AfterFunc(ctx, func() { g.conn.Close() })()

	var watchID, checkID uint32
	var firstBy, checkBy, checkAt time.Time // zero: not due
	var checkResp *healthpb.HealthCheckResponse
	if c.watch {
		if watchID, err = g.start(methodWatch, c.req, 0); err != nil {
			c.result(mode, false)
			return false
		}
		firstBy = time.Now().Add(cfg.Timeout)
	} else {
		checkAt = time.Now()
	}
	for {
		ev, err := g.next(earliest(firstBy, checkBy, checkAt))
		now := time.Now()
		switch {
		case ctx.Err() != nil:
			return true
		case errors.Is(err, errDue):
			switch {
			case due(firstBy, now):
				c.result("watch", false) // no status within the timeout
				return false
			case due(checkBy, now):
				c.result("check", false) // a hung server, or a black-holed link
				return false
			case due(checkAt, now):
				checkAt = time.Time{}
				if checkID, err = g.start(methodCheck, c.req, cfg.Timeout); err != nil {
					c.result("check", false)
					return false
				}
				checkBy, checkResp = now.Add(cfg.Timeout), nil
			}
			continue
		case errors.Is(err, errGoAway):
			return false // not a failure: the server is closing gracefully; reconnect
		case err != nil:
			c.result(mode, false)
			return false
		}
		release() // the server answers
		switch ev.id {
		case watchID:
			if ev.end {
				watchID, firstBy = 0, time.Time{}
				if ev.code == codes.Unimplemented {
					c.watch, mode = false, "check" // Check on this connection instead
					if checkID == 0 {
						checkAt = now
					}
					continue
				}
				c.result("watch", false)
				return false
			}
			firstBy = time.Time{}
			c.result("watch", isServing(ev.msg))
		case checkID:
			if !ev.end {
				checkResp = new(healthpb.HealthCheckResponse)
				if proto.Unmarshal(ev.msg, checkResp) != nil {
					checkResp = nil
				}
				continue
			}
			checkID, checkBy = 0, time.Time{}
			switch {
			case ev.code == codes.OK && checkResp != nil:
				c.result("check", checkResp.GetStatus() == healthpb.HealthCheckResponse_SERVING)
			case ev.code == codes.Unimplemented && watchID == 0:
				c.unimplemented()
				return true
			case ev.code == codes.Unimplemented:
				// A server that Watches but cannot Check: liveness is not
				// to be had from it.
			default:
				c.result("check", false)
			}
		default:
			continue
		}
		// Schedule the next Check: soon while a result awaits confirmation,
		// else every Interval without Watch, or every LivenessInterval with it.
		if checkID != 0 {
			continue
		}
		switch {
		case c.unsettled():
			checkAt = now.Add(c.jitter(cfg.ConfirmInterval()))
		case !checkAt.IsZero():
		case watchID == 0:
			checkAt = now.Add(c.jitter(cfg.Interval))
		case cfg.LivenessInterval > 0:
			checkAt = now.Add(c.jitter(cfg.LivenessInterval))
		}
	}
}

// connect dials the endpoint and starts HTTP/2. A function of its own, so
// that the dialer's frame is off the stack while the connection waits.
func (c *checker) connect(ctx context.Context) (*grpcConn, error) {
	cfg := &c.p.cfg
	d := net.Dialer{Timeout: cfg.Timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     cfg.Interval,
		Interval: cfg.Timeout,
		Count:    cfg.UnhealthyThreshold,
	}}
	conn, err := d.DialContext(ctx, "tcp", c.pr.target.Addr.String())
	if err != nil {
		return nil, err
	}
	g, err := newGRPCConn(conn, c.pr.target.Addr.String(), cfg.Timeout)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return g, nil
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
	cfg := c.p.cfg
	first := !c.observed
	c.observed = true
	if ok {
		c.p.metrics.Checks.WithLabelValues(mode, "ok").Inc()
		c.failures, c.successes = 0, min(c.successes+1, cfg.HealthyThreshold)
		if first {
			c.successes = cfg.HealthyThreshold
		}
		if c.successes >= cfg.HealthyThreshold {
			c.setStatus(Healthy)
		}
		return
	}
	c.p.metrics.Checks.WithLabelValues(mode, "fail").Inc()
	c.successes, c.failures = 0, min(c.failures+1, cfg.UnhealthyThreshold)
	if first {
		c.failures = cfg.UnhealthyThreshold
	}
	if c.failures >= cfg.UnhealthyThreshold {
		c.setStatus(Unhealthy)
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
