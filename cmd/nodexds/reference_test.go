package main

import (
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/metrics"
	"github.com/nodexds/nodexds/agent/routestatus"
	"github.com/nodexds/nodexds/agent/serve"
	"github.com/nodexds/nodexds/health"
)

// referenceDoc is where every flag, annotation and metric is documented.
const referenceDoc = "../../docs/reference.md"

// section returns the part of doc under the heading whose text is title,
// up to the next heading of the same or a higher level; "" if there is none.
func section(doc, title string) string {
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		hashes, text, ok := strings.Cut(l, " ")
		if !ok || strings.Trim(hashes, "#") != "" || text != title {
			continue
		}
		var out []string
		for _, l := range lines[i+1:] {
			if h, _, ok := strings.Cut(l, " "); ok && strings.Trim(h, "#") == "" && len(h) <= len(hashes) {
				break
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	return ""
}

func readReference(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(referenceDoc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// documentedFlag matches a flag in a code span: `--name`, `-name`.
var documentedFlag = regexp.MustCompile("`--?([a-z][a-z0-9-]*)`")

// tableFlags lists the flags named in the first column of sec's tables.
func tableFlags(sec string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(sec, "\n") {
		cells := strings.Split(l, "|")
		if !strings.HasPrefix(l, "|") || len(cells) < 3 {
			continue
		}
		for _, m := range documentedFlag.FindAllStringSubmatch(cells[1], -1) {
			out[m[1]] = true
		}
	}
	return out
}

// TestReferenceDocumentsEveryFlag: every flag of nodexds serve, bootstrap
// and probe, as the commands define them, has a row in its command's table in
// docs/reference.md, and every flag a table lists exists.
func TestReferenceDocumentsEveryFlag(t *testing.T) {
	doc := readReference(t)
	for _, c := range []struct {
		command  string
		register func(*flag.FlagSet)
	}{
		{"serve", new(serveFlags).register},
		{"bootstrap", new(bootstrapFlags).register},
		{"probe", new(probeFlags).register},
	} {
		title := "`nodexds " + c.command + "`"
		sec := section(doc, title)
		if sec == "" {
			t.Errorf("%s has no section %q", referenceDoc, title)
			continue
		}
		fs := flag.NewFlagSet(c.command, flag.ContinueOnError)
		c.register(fs)
		documented := tableFlags(sec)
		n := 0
		fs.VisitAll(func(f *flag.Flag) {
			n++
			if !documented[f.Name] {
				t.Errorf("%s, section %s: flag --%s is not documented (%s)", referenceDoc, title, f.Name, f.Usage)
			}
		})
		if n == 0 {
			t.Errorf("nodexds %s registers no flags: the test is not looking at the real flag set", c.command)
		}
		for name := range documented {
			if fs.Lookup(name) == nil {
				t.Errorf("%s, section %s: documents --%s, which nodexds %s does not have", referenceDoc, title, name, c.command)
			}
		}
	}
}

// TestReferenceDocumentsEveryAnnotation: the annotations documented are
// exactly those the agent reads (and exports nodexds_annotation_errors_total
// for).
func TestReferenceDocumentsEveryAnnotation(t *testing.T) {
	sec := section(readReference(t), "Service annotations")
	if sec == "" {
		t.Fatalf("%s has no section \"Service annotations\"", referenceDoc)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(nodexds\\.io/[a-z-]+)").FindAllStringSubmatch(sec, -1) {
		documented[m[1]] = true
	}
	for _, a := range agent.Annotations {
		if !documented[a] {
			t.Errorf("%s, Service annotations: %s is not documented", referenceDoc, a)
		}
	}
	for a := range documented {
		if !slices.Contains(agent.Annotations, a) {
			t.Errorf("%s, Service annotations: documents %s, which is not in agent.Annotations", referenceDoc, a)
		}
	}
}

// TestReferenceDocumentsEveryMetric: every nodexds_ metric registered the way
// serve registers them is in the Metrics section, and every one the section
// names exists.
func TestReferenceDocumentsEveryMetric(t *testing.T) {
	sec := section(readReference(t), "Metrics")
	if sec == "" {
		t.Fatalf("%s has no section \"Metrics\"", referenceDoc)
	}
	reg := serve.NewRegistry()
	metrics.New(reg)
	health.NewMetrics(reg)
	routestatus.NewMetrics(reg)
	descs := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(descs)
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	exported := map[string]bool{}
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil && strings.HasPrefix(m[1], "nodexds_") {
			exported[m[1]] = true
		}
	}
	if len(exported) < 20 {
		t.Fatalf("only %d nodexds_ metrics registered: the test is not reading the descriptors as expected", len(exported))
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(nodexds_[a-z_]+)`").FindAllStringSubmatch(sec, -1) {
		documented[m[1]] = true
	}
	for name := range exported {
		if !documented[name] {
			t.Errorf("%s, Metrics: %s is not documented", referenceDoc, name)
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("%s, Metrics: documents %s, which the agent does not export", referenceDoc, name)
		}
	}
}
