package xds

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent/metrics"
)

// slowClient is a stream's gRPC side whose client takes a response only when
// told to: a Send waits for that, or for the connection to close.
type slowClient struct {
	discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	takes  chan struct{} // each value lets one Send through
	closed chan struct{}
	once   sync.Once
}

func newSlowClient() *slowClient {
	return &slowClient{takes: make(chan struct{}), closed: make(chan struct{})}
}

func (c *slowClient) Send(*discoveryv3.DiscoveryResponse) error {
	select {
	case <-c.takes:
		return nil
	case <-c.closed:
		return io.EOF
	}
}

// Close is the connection's: what stuckSend closes.
func (c *slowClient) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// conn is the client's connection, as the stream sees it.
func (c *slowClient) conn() connInfo { return connInfo{Conn: closeOnly{c}} }

type closeOnly struct{ c *slowClient }

func (closeOnly) Read([]byte) (int, error)         { return 0, io.EOF }
func (closeOnly) Write(b []byte) (int, error)      { return len(b), nil }
func (c closeOnly) Close() error                   { return c.c.Close() }
func (closeOnly) LocalAddr() net.Addr              { return nil }
func (closeOnly) RemoteAddr() net.Addr             { return nil }
func (closeOnly) SetDeadline(time.Time) error      { return nil }
func (closeOnly) SetReadDeadline(time.Time) error  { return nil }
func (closeOnly) SetWriteDeadline(time.Time) error { return nil }

// sendingStream is a stream of a new Server that sends to c.
func sendingStream(timeout time.Duration, c *slowClient) (*stream, *metrics.Metrics) {
	m := metrics.New(prometheus.NewRegistry())
	srv := NewServer(NewCache(), m, slog.New(slog.DiscardHandler), Options{Limits: Limits{SendTimeout: timeout}})
	st := &stream{id: 1, srv: srv, grpc: c, conn: c.conn(),
		log: clientLog{log: srv.log, stream: newLimiter(5, 10*time.Second), global: srv.logs}}
	return st, m
}

func endpointResponse() outgoing {
	return outgoing{resp: &discoveryv3.DiscoveryResponse{TypeUrl: EndpointType, Nonce: "1"}}
}

// A Send the client does not take within SendTimeout ends with its
// connection, at SendTimeout and not before, counted once.
func TestASendNotTakenInTimeClosesTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSlowClient()
		st, m := sendingStream(30*time.Second, c)
		start := time.Now()
		if err := st.send(endpointResponse()); err == nil {
			t.Fatal("a Send the client never took succeeded")
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("the Send ended after %v, want the send timeout, 30s", d)
		}
		select {
		case <-c.closed:
		default:
			t.Error("the connection is open")
		}
		if n := testutil.ToFloat64(m.LimitHits.WithLabelValues("send_timeout")); n != 1 {
			t.Errorf("send_timeout counted %v times, want 1", n)
		}
	})
}

// The timeout counts from each Send: a client that takes every response
// within it keeps its connection, however long the responses take in all,
// until one Send outlives it.
func TestTheSendTimeoutCountsFromEachSend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSlowClient()
		st, m := sendingStream(30*time.Second, c)
		go func() {
			for range 3 {
				time.Sleep(29 * time.Second)
				c.takes <- struct{}{}
			}
		}()
		for i := range 3 {
			if err := st.send(endpointResponse()); err != nil {
				t.Fatalf("send %d, taken after 29s: %v", i+1, err)
			}
		}
		start := time.Now()
		if err := st.send(endpointResponse()); err == nil {
			t.Fatal("a fourth Send, never taken, succeeded")
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("the fourth Send ended after %v, want 30s", d)
		}
		if n := testutil.ToFloat64(m.LimitHits.WithLabelValues("send_timeout")); n != 1 {
			t.Errorf("send_timeout counted %v times, want 1 (the fourth Send's)", n)
		}
		if n := testutil.ToFloat64(m.Pushes.WithLabelValues("EDS")); n != 3 {
			t.Errorf("%v pushes counted, want the 3 taken", n)
		}
	})
}
