// Command nodexds-demo runs a three-node demo on this machine, no cluster
// needed: an agent for node-a on a file source, real echo backends on
// loopback addresses, and a grpc-go xDS client process on node-a.
//
// It is a program of its own, not a command of the agent's binary, because
// its client links gRPC's xDS client (google.golang.org/grpc/xds), which
// the agent does not need and which would add to its binary and to its
// resident memory on every node (docs/BENCHMARKS.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// clientCommand runs this binary as the demo's client process.
const clientCommand = "client"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == clientCommand {
		err = demoClient(ctx, os.Args[2:])
	} else {
		err = demo(ctx, os.Args[1:], os.Stdout)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "nodexds-demo:", err)
		os.Exit(1)
	}
}
