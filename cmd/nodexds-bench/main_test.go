package main

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	const status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t   512 kB\nThreads:\t5\n"
	for _, tc := range []struct {
		name   string
		status string
		fields []string
		want   []uint64
		err    bool
	}{
		{"fields are read in the order asked, in bytes", status, []string{"RssAnon", "VmRSS"}, []uint64{512 << 10, 1 << 20}, false},
		{"a missing field is an error, not a zero", status, []string{"VmRSS", "RssFile"}, nil, true},
		{"a malformed number is an error", "VmRSS:\t12x kB\n", []string{"VmRSS"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatus(tc.status, tc.fields...)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error: %v", err, tc.err)
			}
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Errorf("%s = %d, want %d", tc.fields[i], got[i], tc.want[i])
				}
			}
		})
	}
}

// TestChildBuildsEverything runs a whole measurement, small, through each
// source: runChild itself fails unless every Service is served with
// endpoints.
func TestChildBuildsEverything(t *testing.T) {
	for _, src := range []string{"events", "kube"} {
		t.Run(src+" source serves every Service and applies every change", func(t *testing.T) {
			r, err := runChild(childConfig{source: src, services: 150, perService: 10, changes: 40})
			if err != nil {
				t.Fatal(err)
			}
			if r.Subscribed != 150 || r.Changes != 40 {
				t.Errorf("%d Services served, %d changes applied; want 150, 40", r.Subscribed, r.Changes)
			}
			if r.HeapSynced == 0 || r.HeapFull <= r.HeapSynced {
				t.Errorf("live heap synced %d, full %d: the full snapshot must hold more", r.HeapSynced, r.HeapFull)
			}
			if r.Full <= r.Initial || r.RSSPeak < r.RSSFull || r.AnonFull == 0 {
				t.Errorf("inconsistent figures: %+v", r)
			}
		})
	}
}

func TestPlotDrawsEveryLine(t *testing.T) {
	var rs []result
	for _, src := range []string{"events", "kube"} {
		for i, n := range []int{1000, 10000, 50000} {
			rs = append(rs, result{Source: src, Services: n, Initial: time.Duration(i+1) * 100 * time.Millisecond,
				Full: time.Duration(i+1) * time.Second, HeapFull: uint64(n) << 10, RSSPeak: uint64(n) << 11})
		}
	}
	var buf bytes.Buffer
	if err := plot(&buf, rs); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	// Four lines per panel, except the kube source's RSS (the fake API
	// server's objects are in it); its colour is still used for the time.
	for i, c := range palette[:4] {
		if !seen[[3]uint32{uint32(c.R), uint32(c.G), uint32(c.B)}] {
			t.Errorf("colour %d of the lines is not drawn", i)
		}
	}
}

func TestFontCoversLabels(t *testing.T) {
	labels := "MEMORY (MIB) VS SERVICES TIME (S) EVENTS KUBE LIVE HEAP PEAK RSS INITIAL STATE FULL SNAPSHOT 0123456789.K"
	for _, ch := range strings.ToUpper(labels) {
		if _, ok := font[ch]; !ok {
			t.Errorf("no glyph for %q", ch)
		}
	}
}
