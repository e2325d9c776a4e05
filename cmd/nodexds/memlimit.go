package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitEnv carries the container's memory limit in bytes; the
// DaemonSet fills it from the downward API (resourceFieldRef limits.memory).
const memoryLimitEnv = "NODEXDS_MEMORY_LIMIT"

// cgroupMemoryMax is cgroup v2's limit for this container, read when the
// environment variable is absent (e.g. under plain docker or podman).
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// softMemoryLimit returns the Go runtime's soft memory limit for a container
// limit taken from env (bytes, as the downward API writes it) or, when env is
// empty, from the content of cgroup v2's memory.max. It is 90% of the limit:
// the GC works harder as the heap nears the soft limit, and the tenth left
// over absorbs what grows faster than the GC reacts (bursts of requests,
// stacks), so the kernel's OOM killer is the last resort, not the first.
// from names where the limit came from; 0 and "" mean no limit is known
// (both empty, or memory.max is "max").
func softMemoryLimit(env, cgroupMax string) (limit int64, from string, err error) {
	raw, from := strings.TrimSpace(env), "$"+memoryLimitEnv
	if raw == "" {
		raw, from = strings.TrimSpace(cgroupMax), cgroupMemoryMax
		if raw == "" || raw == "max" {
			return 0, "", nil
		}
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n <= 0 {
		return 0, "", fmt.Errorf("%s=%q: want a positive number of bytes", from, raw)
	}
	return n - n/10, from, nil // n*9/10 could overflow
}

// setMemoryLimit applies softMemoryLimit unless GOMEMLIMIT is set (the
// runtime has then applied it already). A limit it cannot read is logged
// and the agent runs without one, as it would without this code.
func setMemoryLimit(log *slog.Logger) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit", "from", "$GOMEMLIMIT", "value", v)
		return
	}
	cg, err := os.ReadFile(cgroupMemoryMax)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("cannot read the cgroup memory limit", "err", err)
	}
	limit, from, err := softMemoryLimit(os.Getenv(memoryLimitEnv), string(cg))
	switch {
	case err != nil:
		log.Warn("no Go memory limit set", "err", err)
	case limit == 0:
		log.Info("no memory limit known; Go memory limit not set")
	default:
		debug.SetMemoryLimit(limit)
		log.Info("memory limit", "from", from, "go_soft_limit_bytes", limit)
	}
}

// steadyGOGC is the agent's GOGC once its initial state is applied, unless
// GOGC is set: 50, so the heap may grow to 1.5× what is live rather than 2×.
// That keeps the agent of a large cluster within its memory target under
// churn, for a GC cycle twice as often, each as long: little CPU at the rate
// of change a cluster sees (figures in docs/BENCHMARKS.md, "GOGC 50 once
// synced"). The start keeps the default: the initial lists are mostly
// garbage, and collecting it twice as often would slow them.
func steadyGOGC() int {
	if os.Getenv("GOGC") != "" {
		return 0
	}
	return 50
}
