package health

// allocate decides which targets are checked when at most budget may be.
//
// The budget is shared max-min fairly: clusters take one target at a time in
// turn, so a cluster gets more than another only when the other needs no
// more, and one huge cluster can never starve the rest. Each cluster takes
// its targets in the order given, which is its priority order (this node,
// then its zone, ...): what clients route to is checked first. A target
// listed by several clusters costs the budget once and counts for each.
//
// clusters must be in a fixed order (the caller sorts them by name): when the
// budget runs out mid-turn, the clusters earlier in that order have taken one
// more. The result is nil when nothing is checked.
func allocate(budget int, clusters [][]Target) map[Target]bool {
	var checked map[Target]bool
	next := make([]int, len(clusters)) // each cluster's first target not yet decided
	active := make([]int, 0, len(clusters))
	for i, ts := range clusters {
		if len(ts) > 0 {
			active = append(active, i)
		}
	}
	for used := 0; len(active) > 0 && used < budget; {
		keep := active[:0]
		for _, i := range active {
			ts := clusters[i]
			for next[i] < len(ts) && checked[ts[next[i]]] {
				next[i]++ // checked for another cluster already: free
			}
			if next[i] == len(ts) {
				continue
			}
			if used == budget {
				break
			}
			if checked == nil {
				checked = make(map[Target]bool, min(budget, 1024))
			}
			checked[ts[next[i]]] = true
			next[i]++
			used++
			keep = append(keep, i)
		}
		active = keep
	}
	return checked
}
