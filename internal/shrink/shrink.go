// Package shrink keeps maps that once grew large from holding that size.
package shrink

// minSize is the size below which a map is not worth rebuilding.
const minSize = 1024

// Map returns m, or a copy of it once it holds a quarter of the entries it
// held at its largest (*peak, which it keeps). Go maps never give back the
// space of deleted entries: without this, a map that once indexed a flood of
// junk names would keep that size for the agent's lifetime. Call it after
// every insert and delete; the copy's cost is paid by the deletes before it.
func Map[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if len(m) > *peak {
		*peak = len(m)
		return m
	}
	if *peak < minSize || len(m) > *peak/4 {
		return m
	}
	out := make(map[K]V, len(m)) // not maps.Clone: it keeps m's capacity
	for k, v := range m {
		out[k] = v
	}
	*peak = len(m)
	return out
}

// Emptied returns an empty map for m, which has just been drained: m itself
// (cleared) when it is small, a new one when it grew large.
func Emptied[K comparable, V any](m map[K]V) map[K]V {
	if len(m) >= minSize {
		return make(map[K]V)
	}
	clear(m)
	return m
}
