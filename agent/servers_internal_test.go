package agent

import (
	"testing"
	"time"
)

func TestHandover(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const after = 10 * time.Second
	for _, tc := range []struct {
		name     string
		st       serverState
		want     bool
		at       time.Time
		wantTLS  bool
		wantDue  time.Time
		wantHeld bool // since stays set
	}{
		{"first build: what the policy wants, at once", serverState{}, true, t0, true, time.Time{}, false},
		{"no change", serverState{built: true, tls: true}, true, t0, true, time.Time{}, false},
		{"plaintext to TLS waits for the clients", serverState{built: true}, true, t0, false, t0.Add(after), true},
		{"still waiting", serverState{built: true, since: t0}, true, t0.Add(after - time.Millisecond), false, t0.Add(after), true},
		{"handed over", serverState{built: true, since: t0}, true, t0.Add(after), true, time.Time{}, false},
		{"TLS to plaintext waits too", serverState{built: true, tls: true}, false, t0, true, t0.Add(after), true},
		{"changed back before the handover: nothing to do", serverState{built: true, since: t0}, false, t0.Add(time.Second), false, time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			tls, due := handover(&st, tc.want, tc.at, after)
			if tls != tc.wantTLS || !due.Equal(tc.wantDue) || !st.since.IsZero() != tc.wantHeld {
				t.Errorf("handover = %v, due %v, since %v; want %v, due %v, held %v", tls, due, st.since, tc.wantTLS, tc.wantDue, tc.wantHeld)
			}
		})
	}
}
