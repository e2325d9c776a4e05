// Package echo is the small gRPC service the demo and the tests run as
// backends: it answers "Hello from <name>", and serves the standard health
// service so health checking can be exercised against it.
//
// It uses google.protobuf.StringValue for both messages, so clients in any
// language can call it without generated code.
package echo

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Method is the full name of the one RPC.
const Method = "/nodexds.echo.Echo/Hello"

// Server is a running echo backend.
type Server struct {
	Name    string
	Addr    string
	Health  *health.Server // flip with SetServingStatus("", ...)
	grpc    GRPCServer
	failing atomic.Bool
}

// GRPCServer is what an echo server runs on: a *grpc.Server, or an
// xDS-enabled one (*xds.GRPCServer).
type GRPCServer interface {
	grpc.ServiceRegistrar
	Serve(net.Listener) error
	Stop()
}

// SetFailing makes Hello fail with INTERNAL (or succeed again), as a broken
// backend would: what outlier detection is for.
func (s *Server) SetFailing(failing bool) { s.failing.Store(failing) }

// Option changes how Serve sets up a server.
type Option func(*options)

type options struct{ noHealth bool }

// WithoutHealth leaves out the health service, like servers that never
// registered it.
func WithoutHealth() Option { return func(o *options) { o.noHealth = true } }

// Serve starts an echo server named name on lis.
func Serve(lis net.Listener, name string, opts ...Option) *Server {
	return ServeOn(grpc.NewServer(), lis, name, opts...)
}

// ServeOn starts an echo server named name on lis, served by srv.
func ServeOn(srv GRPCServer, lis net.Listener, name string, opts ...Option) *Server {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{Name: name, Addr: lis.Addr().String(), Health: health.NewServer(), grpc: srv}
	s.grpc.RegisterService(&grpc.ServiceDesc{
		ServiceName: "nodexds.echo.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Hello",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				if s.failing.Load() {
					return nil, status.Errorf(codes.Internal, "%s is failing", name)
				}
				return wrapperspb.String("Hello from " + name), nil
			},
		}},
	}, struct{}{})
	if !o.noHealth {
		healthpb.RegisterHealthServer(s.grpc, s.Health)
	}
	go s.grpc.Serve(lis) //nolint:errcheck // returns when stopped
	return s
}

// ServeAlso serves lis too: one server standing in for many endpoints (a
// listener each), for tests with thousands of them.
func (s *Server) ServeAlso(lis net.Listener) { go s.grpc.Serve(lis) } //nolint:errcheck // returns when stopped

// Stop stops the server at once, as if its process died.
func (s *Server) Stop() { s.grpc.Stop() }

// Hello calls the echo service and returns the backend's name.
func Hello(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, Method, wrapperspb.String("hi"), out, opts...); err != nil {
		return "", err
	}
	const prefix = "Hello from "
	if len(out.Value) < len(prefix) {
		return out.Value, nil
	}
	return out.Value[len(prefix):], nil
}

// Probe sends one RPC every interval until ctx is done, and writes one line
// per RPC to out: "ok <backend> <latency>" or "err <code> <message>". It is the
// client the demo and the end-to-end tests run in their own processes, wired
// to the agent only through the standard bootstrap environment variables.
func Probe(ctx context.Context, cc grpc.ClientConnInterface, interval, timeout time.Duration, out io.Writer) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, timeout)
		name, err := Hello(rctx, cc)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s := status.Convert(err)
			fmt.Fprintf(out, "err %s %q\n", s.Code(), s.Message())
		} else {
			fmt.Fprintf(out, "ok %s %d\n", name, time.Since(start).Microseconds())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
