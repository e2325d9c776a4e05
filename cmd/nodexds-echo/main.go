// Command nodexds-echo is the demo and test workload: a backend that answers
// "Hello from <name>" and serves the gRPC health service, and a client that
// probes an xds:/// target and prints one line per RPC.
//
//	nodexds-echo serve -listen 10.1.2.3:50051 -name be1-abc
//	GRPC_XDS_BOOTSTRAP=... nodexds-echo serve -xds -listen 0.0.0.0:50051
//	GRPC_XDS_BOOTSTRAP=... nodexds-echo probe [-interval 50ms] [-xds-creds] xds:///be1:8080
//
// With -xds the server is xDS-enabled (gRFC A36: it asks the bootstrap's
// server for its Listener, and serves once it has one) and uses xDS
// credentials (A29: mTLS as the Listener says, plaintext otherwise); with
// -xds-creds the probe's channel uses xDS credentials too.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds" // also the xds:/// resolver and balancers

	"github.com/nodexds/nodexds/internal/echo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nodexds-echo serve|probe [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "probe":
		err = probe(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodexds-echo:", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":50051", "address to listen on")
	name := fs.String("name", os.Getenv("POD_NAME"), "name to answer with (default $POD_NAME)")
	notServing := fs.Bool("not-serving", false, "start with health status NOT_SERVING")
	xdsServer := fs.Bool("xds", false, "be an xDS-enabled server with xDS credentials (bootstrap from $GRPC_XDS_BOOTSTRAP)")
	fs.Parse(args)
	if *name == "" {
		*name, _ = os.Hostname()
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var s *echo.Server
	if *xdsServer {
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return err
		}
		srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			fmt.Fprintf(os.Stderr, "nodexds-echo: %s %s on %s (%v)\n", *name, a.Mode, addr, a.Err)
		}))
		if err != nil {
			return err
		}
		s = echo.ServeOn(srv, lis, *name)
	} else {
		s = echo.Serve(lis, *name)
	}
	if *notServing {
		s.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	// SIGUSR1 / SIGUSR2 flip health to NOT_SERVING / SERVING, so tests can
	// make a backend unhealthy while its process and Pod stay up; SIGHUP
	// toggles failing every RPC with INTERNAL (for outlier detection).
	flips := make(chan os.Signal, 1)
	signal.Notify(flips, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	failing := false
	fmt.Fprintf(os.Stderr, "nodexds-echo: %s serving on %s\n", *name, lis.Addr())
	for {
		select {
		case <-ctx.Done():
			s.Stop()
			return nil
		case sig := <-flips:
			if sig == syscall.SIGHUP {
				failing = !failing
				s.SetFailing(failing)
				fmt.Fprintf(os.Stderr, "nodexds-echo: %s failing=%t\n", *name, failing)
				continue
			}
			st := healthpb.HealthCheckResponse_SERVING
			if sig == syscall.SIGUSR1 {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			s.Health.SetServingStatus("", st)
			fmt.Fprintf(os.Stderr, "nodexds-echo: %s health %s\n", *name, st)
		}
	}
}

func probe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	interval := fs.Duration("interval", 50*time.Millisecond, "time between RPCs")
	timeout := fs.Duration("timeout", time.Second, "per-RPC deadline")
	var headers headerFlags
	fs.Var(&headers, "header", "request header name:value sent with every RPC (repeatable)")
	useXDSCreds := fs.Bool("xds-creds", false, "use xDS credentials (mTLS when the agent's cluster says so, plaintext otherwise)")
	fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: nodexds-echo probe [flags] xds:///NAME")
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if *useXDSCreds {
		var err error
		if creds, err = xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()}); err != nil {
			return err
		}
	}
	cc, err := grpc.NewClient(fs.Arg(0), grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	echo.Probe(metadata.NewOutgoingContext(ctx, metadata.MD(headers)), cc, *interval, *timeout, os.Stdout)
	return nil
}

// headerFlags collects -header name:value flags.
type headerFlags metadata.MD

func (h *headerFlags) String() string { return fmt.Sprint(map[string][]string(*h)) }

func (h *headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || name == "" {
		return fmt.Errorf("want name:value, got %q", v)
	}
	if *h == nil {
		*h = headerFlags{}
	}
	(*h)[strings.ToLower(name)] = append((*h)[strings.ToLower(name)], value)
	return nil
}
