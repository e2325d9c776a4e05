// Command nodexds-bench measures how the agent's memory and cold start grow
// with the number of Services: for each size it builds the model from
// synthetic Services through the real pipeline (a discovery source → the
// agent → the xDS cache, every Service subscribed: the first full snapshot)
// and reports live heap, resident memory and times, then churns endpoints.
//
// Each measurement runs in a fresh child process (this binary, re-executed),
// so resident memory is not inherited from a previous, larger size, and
// GOGC/GOMEMLIMIT apply from the process's start as they do in a pod.
//
//	go run ./cmd/nodexds-bench -sizes 1000,10000,50000 -png docs/scale.png
//	go run ./cmd/nodexds-bench -sizes 11000 -gogc 50,100,200
//
// Sources: "events" hands the agent model values directly (the agent's own
// cost); "kube" is discovery.KubeSource over client-go's fake clientset
// holding the API objects, so the figures include the informer caches the
// agent holds in a cluster (the fake's own copy of the objects is measured
// before the start and subtracted from the heap, but is in the RSS).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "nodexds-bench:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	sizes                     []int
	sources, gogcs, memlimit  string
	runs, perService, changes int
	png, cpuprofile           string
	saveTo, replot            string
	child                     bool
}

func run(args []string, out io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if o.child {
		if len(o.sizes) != 1 {
			return fmt.Errorf("-child takes one size")
		}
		r, err := runChild(childConfig{source: o.sources, services: o.sizes[0], perService: o.perService, changes: o.changes, cpuprofile: o.cpuprofile})
		if err != nil {
			return err
		}
		return writeResult(out, r)
	}
	if o.cpuprofile != "" && (len(o.sizes) != 1 || o.runs != 1 || strings.Contains(o.sources, ",") || strings.Contains(o.gogcs, ",")) {
		return fmt.Errorf("-cpuprofile needs one size, one source, one GOGC and -runs 1")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var all []result
	if o.replot != "" {
		b, err := os.ReadFile(o.replot)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &all); err != nil {
			return fmt.Errorf("%s: %w", o.replot, err)
		}
		return report(out, all, o.perService, o.memlimit, o.png)
	}
	for _, src := range strings.Split(o.sources, ",") {
		for _, g := range strings.Split(o.gogcs, ",") {
			for _, n := range o.sizes {
				for range o.runs {
					r, err := measure(self, src, g, n, o)
					if err != nil {
						return err
					}
					all = append(all, r)
				}
			}
		}
	}
	if o.saveTo != "" {
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.saveTo, b, 0o644); err != nil {
			return err
		}
	}
	return report(out, all, o.perService, o.memlimit, o.png)
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("nodexds-bench", flag.ContinueOnError)
	sizes := fs.String("sizes", "1000,10000,50000", "numbers of Services, comma-separated")
	fs.StringVar(&o.sources, "sources", "events,kube", `sources to measure: "events" (model values handed to the agent) and/or "kube" (KubeSource over a fake clientset)`)
	fs.StringVar(&o.gogcs, "gogc", "100", "GOGC values for the children, comma-separated")
	fs.StringVar(&o.memlimit, "gomemlimit", "460MiB", `GOMEMLIMIT for the children (what the agent sets under the chart's 512Mi limit); "" for none`)
	fs.IntVar(&o.runs, "runs", 3, "runs per configuration (figures are reported as min–max)")
	fs.IntVar(&o.perService, "endpoints", 10, "endpoints per Service")
	fs.IntVar(&o.changes, "changes", 2000, "EndpointSlice updates applied one at a time after the full snapshot")
	fs.StringVar(&o.png, "png", "", "write a plot of memory and time against Services here (default GOGC, per source)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the build (start to full snapshot) to this file; one size, one run")
	fs.StringVar(&o.saveTo, "json", "", "also write every run's figures to this file, as JSON")
	fs.StringVar(&o.replot, "from", "", "measure nothing: print the tables and draw -png from a file written by -json")
	fs.BoolVar(&o.child, "child", false, "internal: measure one configuration in this process")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.sizes, err = ints(*sizes); err != nil {
		return o, fmt.Errorf("-sizes: %w", err)
	}
	return o, nil
}

// measure runs one child, this binary re-executed with -child, and returns
// its result.
func measure(self, src, gogc string, n int, o options) (result, error) {
	cmd := exec.Command(self, "-child", "-sources", src, "-sizes", strconv.Itoa(n),
		"-endpoints", strconv.Itoa(o.perService), "-changes", strconv.Itoa(o.changes), "-cpuprofile", o.cpuprofile)
	limit := o.memlimit
	if limit == "" {
		limit = "off"
	}
	cmd.Env = append(os.Environ(), "GOGC="+gogc, "GOMEMLIMIT="+limit)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("%s, %d Services, GOGC=%s: %w", src, n, gogc, err)
	}
	var r result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("child's result: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%s GOGC=%s %d: initial %v, full %v, heap %s, rss %s, peak %s\n",
		src, gogc, n, r.Initial.Round(time.Millisecond), r.Full.Round(time.Millisecond),
		mb(r.HeapFull), mb(r.RSSFull), mb(r.RSSPeak))
	return r, nil
}

// report prints the tables and, if png is set, plots the default GOGC's runs.
func report(out io.Writer, all []result, perService int, memlimit, png string) error {
	if len(all) == 0 {
		return fmt.Errorf("no results")
	}
	printTables(out, all, perService, memlimit)
	if png == "" {
		return nil
	}
	var series []result
	for _, r := range all {
		if r.GOGC == "100" || r.GOGC == "" {
			series = append(series, r)
		}
	}
	f, err := os.Create(png)
	if err != nil {
		return err
	}
	if err := plot(f, series); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printTables writes markdown tables of min–max over the runs of each
// configuration.
func printTables(w io.Writer, all []result, perService int, memlimit string) {
	type cfg struct {
		src, gogc string
		n         int
	}
	groups := map[cfg][]result{}
	var order []cfg
	for _, r := range all {
		c := cfg{r.Source, r.GOGC, r.Services}
		if groups[c] == nil {
			order = append(order, c)
		}
		groups[c] = append(groups[c], r)
	}
	fmt.Fprintf(w, "%d endpoints per Service, GOMEMLIMIT=%s; min–max over %d run(s)\n\n", perService, memlimit, len(groups[order[0]]))
	row := func(c cfg, cols ...string) {
		fmt.Fprintf(w, "| %s | %s | %d | %s |\n", c.src, c.gogc, c.n, strings.Join(cols, " | "))
	}
	fmt.Fprintln(w, "| source | GOGC | Services | initial state applied: wall (CPU) | first full snapshot: wall (CPU) | GCs | GC pauses | one change: p50 / p99 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, c := range order {
		rs := groups[c]
		sec := func(f func(result) time.Duration) string {
			return span(rs, func(r result) float64 { return f(r).Seconds() }, "%.2f", " s")
		}
		ms := func(f func(result) time.Duration) string {
			return span(rs, func(r result) float64 { return float64(f(r)) / 1e6 }, "%.2f", " ms")
		}
		row(c,
			sec(func(r result) time.Duration { return r.Initial })+" ("+sec(func(r result) time.Duration { return r.CPUInitial })+")",
			sec(func(r result) time.Duration { return r.Full })+" ("+sec(func(r result) time.Duration { return r.CPUFull })+")",
			span(rs, func(r result) float64 { return float64(r.GCs) }, "%.0f", ""),
			ms(func(r result) time.Duration { return r.GCPause }),
			ms(func(r result) time.Duration { return r.ChangeP50 })+" / "+ms(func(r result) time.Duration { return r.ChangeP99 }))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| source | GOGC | Services | live heap: synced / full / churned | RSS (anon) synced | RSS (anon) full | RSS (anon) churned | peak RSS | RSS (anon) at start |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, c := range order {
		rs := groups[c]
		mem := func(f func(result) uint64) string {
			return span(rs, func(r result) float64 { return float64(f(r)) / (1 << 20) }, "%.0f", " MiB")
		}
		both := func(t, a func(result) uint64) string { return mem(t) + " (" + mem(a) + ")" }
		row(c,
			mem(func(r result) uint64 { return r.HeapSynced })+" / "+mem(func(r result) uint64 { return r.HeapFull })+" / "+mem(func(r result) uint64 { return r.HeapChurn }),
			both(func(r result) uint64 { return r.RSSSynced }, func(r result) uint64 { return r.AnonSynced }),
			both(func(r result) uint64 { return r.RSSFull }, func(r result) uint64 { return r.AnonFull }),
			both(func(r result) uint64 { return r.RSSChurn }, func(r result) uint64 { return r.AnonChurn }),
			mem(func(r result) uint64 { return r.RSSPeak }),
			both(func(r result) uint64 { return r.RSSBase }, func(r result) uint64 { return r.AnonBase }))
	}
}

// span formats the range of f over rs: "3" or "3–5".
func span(rs []result, f func(result) float64, format, unit string) string {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	lo, hi := slices.Min(vs), slices.Max(vs)
	a, b := fmt.Sprintf(format, lo), fmt.Sprintf(format, hi)
	if a == b {
		return a + unit
	}
	return a + "–" + b + unit
}

func mb(b uint64) string { return fmt.Sprintf("%.0fMiB", float64(b)/(1<<20)) }

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
