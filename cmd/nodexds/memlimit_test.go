package main

import (
	"math"
	"testing"
)

func TestSoftMemoryLimit(t *testing.T) {
	const mi = 1 << 20
	tests := []struct {
		name, env, cgroup string
		want              int64
		wantFrom          string
		wantErr           bool
	}{
		{name: "the downward API's 512Mi leaves a tenth of headroom", env: "536870912", want: 536870912 - 53687091, wantFrom: "$NODEXDS_MEMORY_LIMIT"},
		{name: "the downward API wins over the cgroup", env: "1048576000", cgroup: "2097152000\n", want: 943718400, wantFrom: "$NODEXDS_MEMORY_LIMIT"},
		{name: "without the variable the cgroup limit is used", cgroup: "268435456\n", want: 256*mi - 26843545, wantFrom: "/sys/fs/cgroup/memory.max"},
		{name: "an unlimited cgroup sets no limit", cgroup: "max\n"},
		{name: "no variable and no cgroup file sets no limit"},
		{name: "a huge limit does not overflow", env: "9223372036854775807", want: math.MaxInt64 - math.MaxInt64/10, wantFrom: "$NODEXDS_MEMORY_LIMIT"},
		{name: "a quantity with a unit is refused, not misread", env: "512Mi", wantErr: true},
		{name: "zero is refused", env: "0", wantErr: true},
		{name: "a negative cgroup value is refused", cgroup: "-1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, from, err := softMemoryLimit(tt.env, tt.cgroup)
			if (err != nil) != tt.wantErr {
				t.Fatalf("softMemoryLimit(%q, %q) error = %v, want error %v", tt.env, tt.cgroup, err, tt.wantErr)
			}
			if got != tt.want || from != tt.wantFrom {
				t.Errorf("softMemoryLimit(%q, %q) = %d from %q, want %d from %q", tt.env, tt.cgroup, got, from, tt.want, tt.wantFrom)
			}
		})
	}
}
