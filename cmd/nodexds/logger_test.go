package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// TestLogsGiveDurationsTheirUnit: a duration is logged as "6ms", never as
// the nanoseconds the JSON handler writes by itself, also inside a group.
func TestLogsGiveDurationsTheirUnit(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info")
	if err != nil {
		t.Fatal(err)
	}
	log.With("stream", 1).WithGroup("drain").Info("drained", "took", 6*time.Millisecond, "goaway_in", 2*time.Second, "objects", 3)
	var line struct {
		Drain map[string]any `json:"drain"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := map[string]any{"took": "6ms", "goaway_in": "2s", "objects": 3.0}
	for k, v := range want {
		if line.Drain[k] != v {
			t.Errorf("%s logged as %#v, want %#v (line %s)", k, line.Drain[k], v, bytes.TrimSpace(buf.Bytes()))
		}
	}
}
