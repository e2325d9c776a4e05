package main

import (
	"os"

	clientfeatures "k8s.io/client-go/features"
)

// plainInitialLists makes the informers start with a LIST rather than
// client-go's default streaming watch-list (WatchListClient), unless
// KUBE_FEATURE_WatchListClient is set. Measured on a real API server at
// 11,000 Services and slices (BenchmarkScaleColdStart, docs/BENCHMARKS.md),
// the agent's initial state is applied in 0.53–0.74 s after a LIST and in
// 1.06–1.51 s after a watch-list. The watch-list spares the API server from
// building one large response; an agent lists once per start, and
// DaemonSet rollouts start agents a few at a time. Operators who prefer the
// API server's side of that trade set KUBE_FEATURE_WatchListClient=true.
func plainInitialLists() {
	if _, set := os.LookupEnv("KUBE_FEATURE_WatchListClient"); set {
		return
	}
	clientfeatures.ReplaceFeatureGates(noWatchList{clientfeatures.FeatureGates()})
}

type noWatchList struct{ clientfeatures.Gates }

func (g noWatchList) Enabled(k clientfeatures.Feature) bool {
	return k != clientfeatures.WatchListClient && g.Gates.Enabled(k)
}
