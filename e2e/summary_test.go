package e2e

import (
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
)

// The run's summary, printed by TestMain after every test: one row per
// client, and the figures (latencies) scenarios measured. It is printed
// also without -v, so a plain `go test` still shows what happened.
var summary struct {
	mu      sync.Mutex
	rows    []*summaryRow // in the order clients started
	figures []string
}

type summaryRow struct {
	test, client     string
	rpcs, ok, failed int
	pods             int
}

// summaryRowFor adds a client's row, filled in by its recordProbe.
func summaryRowFor(p *Probe) *summaryRow {
	client := string(p.Stack)
	if p.Name != client {
		client += " " + p.Name
	}
	row := &summaryRow{test: p.test, client: client + " on " + p.Node}
	summary.mu.Lock()
	summary.rows = append(summary.rows, row)
	summary.mu.Unlock()
	return row
}

func recordProbe(p *Probe) {
	rpcs := p.RPCs(0)
	summary.mu.Lock()
	defer summary.mu.Unlock()
	row := p.summary
	row.rpcs = len(rpcs)
	pods := map[string]bool{}
	for _, r := range rpcs {
		if r.OK() {
			row.ok++
			pods[r.Pod] = true
		} else {
			row.failed++
		}
	}
	row.pods = len(pods)
}

// recordFigure adds a line to the summary's figures.
func recordFigure(format string, args ...any) {
	summary.mu.Lock()
	summary.figures = append(summary.figures, fmt.Sprintf(format, args...))
	summary.mu.Unlock()
}

func printSummary(w io.Writer) {
	summary.mu.Lock()
	defer summary.mu.Unlock()
	if len(summary.rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\ne2e summary: RPCs per client (failed includes those a strict policy must fail and a client's start-up)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "test\tclient\tRPCs\tok\tfailed\tpods\t")
	for _, r := range summary.rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t\n", r.test, r.client, r.rpcs, r.ok, r.failed, r.pods)
	}
	tw.Flush()
	for _, f := range summary.figures {
		fmt.Fprintln(w, f)
	}
}
