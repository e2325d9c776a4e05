package main

import (
	"os"

	clientfeatures "k8s.io/client-go/features"
)

// plainInitialLists makes the informers start with a LIST rather than
// client-go's default streaming watch-list (WatchListClient), unless
// KUBE_FEATURE_WatchListClient is set. After a LIST the agent's initial
// state is applied sooner, and the pods of a node wait for it at every agent
// start (figures in docs/BENCHMARKS.md, "LIST, not watch-list"). The
// watch-list spares the API server from building one large response; an
// agent lists once per start, and DaemonSet rollouts start agents a few at a
// time. Operators who prefer the API server's side of that trade set
// KUBE_FEATURE_WatchListClient=true.
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
