// Health checking as clients see it: the status each endpoint is served
// with, and failing open when a cluster's endpoints all fail.

package agent

// setFailOpen records whether a cluster is failing open, for status and the
// metric.
func (a *Agent) setFailOpen(cluster string, failOpen bool) {
	if failOpen {
		a.failOpen[cluster] = true
	} else {
		delete(a.failOpen, cluster)
	}
	a.metrics.HealthFailOpen.Set(float64(len(a.failOpen)))
}

// trackChecks hands a load assignment's endpoints to the checker, and
// records whether its cluster fails open. It reports whether tracking
// changed what the checker knows of those endpoints (a check stopped for the
// budget): what the build read is then out of date.
func (a *Agent) trackChecks(cluster string, c *checks) bool {
	stale := a.checker.Track(cluster, c.targets)
	if c.failOpen != a.failOpen[cluster] {
		if c.failOpen {
			a.log.Warn("every endpoint fails its health checks: serving them all rather than none", "cluster", cluster, "endpoints", len(c.targets))
		} else {
			a.log.Info("health checks pass again: no longer failing open", "cluster", cluster)
		}
		a.setFailOpen(cluster, c.failOpen)
	}
	return stale
}
