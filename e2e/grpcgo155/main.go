// Command grpcgo155 is the grpc-go probe built against an older grpc-go
// (v1.55.0, pinned in this module's go.mod) to check that nodexds' resources
// suit clients that are not current. It is `nodexds-echo probe` without the
// main module (whose go.mod would raise grpc-go to its own version):
//
//	GRPC_XDS_BOOTSTRAP_CONFIG='{...}' grpcgo155 [-interval 20ms] [-timeout 1s] \
//	    [-header name:value]... xds:///be1:8080
//
// It prints one line per RPC, as internal/echo.Probe does:
//
//	ok <backend-name> <latency-microseconds>
//	err <GoCodeName> "<message>"
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ",") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	interval := flag.Duration("interval", 50*time.Millisecond, "time between RPCs")
	timeout := flag.Duration("timeout", time.Second, "per-RPC deadline")
	var hs headers
	flag.Var(&hs, "header", "name:value sent with every RPC (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 || *interval <= 0 {
		fmt.Fprintln(os.Stderr, "usage: grpcgo155 [-interval d] [-timeout d] [-header name:value]... xds:///NAME")
		os.Exit(2)
	}
	var md []string
	for _, h := range hs {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			fmt.Fprintf(os.Stderr, "grpcgo155: -header %q: want name:value\n", h)
			os.Exit(2)
		}
		md = append(md, strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cc, err := grpc.Dial(flag.Arg(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcgo155:", err)
		os.Exit(1)
	}
	defer cc.Close()
	fmt.Fprintln(os.Stderr, "grpcgo155: grpc-go", grpc.Version)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}

	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, *timeout)
		out := new(wrapperspb.StringValue)
		err := cc.Invoke(rctx, "/nodexds.echo.Echo/Hello", wrapperspb.String("hi"), out)
		cancel()
		if ctx.Err() != nil {
			return // stopped: the RPC in flight is not reported
		}
		if err != nil {
			s := status.Convert(err)
			fmt.Printf("err %s %q\n", s.Code(), s.Message())
		} else {
			fmt.Printf("ok %s %d\n", strings.TrimPrefix(out.Value, "Hello from "), time.Since(start).Microseconds())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
