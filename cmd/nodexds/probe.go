package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// probeFlags are the flags of nodexds probe.
type probeFlags struct {
	socket  string
	timeout time.Duration
}

func (f *probeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.socket, "socket", "/run/nodexds/probe.sock", "the agent's -probe-socket")
	fs.DurationVar(&f.timeout, "timeout", time.Second, "give up after this long")
}

// probe is `nodexds probe`: an exec probe for the kubelet. It asks the agent
// of this pod, over the unix socket of -probe-socket, so that the answer is
// this pod's even when another agent shares the node's ports (the surge
// overlay); the image has no curl. Exit status 0 means HTTP 200.
func probe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var f probeFlags
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: nodexds probe [flags] /healthz|/readyz")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	path := fs.Arg(0)
	if fs.NArg() != 1 || !strings.HasPrefix(path, "/") {
		fs.Usage()
		return errors.New("probe: want one path, e.g. /readyz")
	}
	client := &http.Client{Timeout: f.timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", f.socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s", path, resp.Status)
	}
	return nil
}
