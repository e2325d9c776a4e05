package shrink

import (
	"maps"
	"runtime"
	"strconv"
	"testing"
)

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A map that held 200,000 names and is down to ten must give its space back;
// the same map without Map keeps it (the control shows the test can fail).
func TestMapGivesSpaceBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shrink bool
	}{
		{"with Map, a drained map gives its space back", true},
		{"without Map, a drained map keeps its space (control)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := heapInuse()
			m, peak := map[string]int{}, 0
			for i := range 200_000 {
				m[strconv.Itoa(i)] = i
				if tc.shrink {
					m = Map(m, &peak)
				}
			}
			for i := 10; i < 200_000; i++ {
				delete(m, strconv.Itoa(i))
				if tc.shrink {
					m = Map(m, &peak)
				}
			}
			grew := int64(heapInuse()) - int64(before)
			if len(m) != 10 || m["9"] != 9 {
				t.Fatalf("map lost entries: %v", m)
			}
			if kept := grew > 2<<20; kept == tc.shrink {
				t.Errorf("heap %+d bytes after draining the map (shrink %v)", grew, tc.shrink)
			}
			runtime.KeepAlive(m)
		})
	}
}

func TestMapCopiesOnlyBelowAQuarter(t *testing.T) {
	m, peak := map[int]int{}, 0
	for i := range 4000 {
		m[i] = i
		m = Map(m, &peak)
	}
	orig := m
	for i := range 2999 { // 1001 left: above a quarter of 4000
		delete(m, i)
		m = Map(m, &peak)
	}
	orig[-1] = -1
	if _, same := m[-1]; !same {
		t.Fatal("copied while above a quarter of the peak")
	}
	delete(m, -1)
	delete(m, 2999)
	m = Map(m, &peak) // 1000 left
	orig[-2] = -2
	if _, same := m[-2]; same || len(m) != 1000 || peak != 1000 {
		t.Fatalf("not copied at a quarter of the peak (len %d, peak %d)", len(m), peak)
	}
	if !maps.Equal(m, maps.Collect(func(yield func(int, int) bool) {
		for i := 3000; i < 4000; i++ {
			yield(i, i)
		}
	})) {
		t.Fatal("the copy differs")
	}
}

func TestEmptied(t *testing.T) {
	small := map[int]int{1: 1}
	if e := Emptied(small); len(e) != 0 || len(small) != 0 {
		t.Fatal("a small map is cleared in place")
	}
	big := map[int]int{}
	for i := range 2000 {
		big[i] = i
	}
	if e := Emptied(big); len(e) != 0 || len(big) != 2000 {
		t.Fatal("a large map is replaced, not cleared")
	}
}
