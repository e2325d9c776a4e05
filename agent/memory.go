package agent

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// A burst of work (a crowd of clients, or an attacker's requests, read and
// gone) leaves its memory behind: garbage, and free pages the runtime
// returns to the OS only slowly. Go collects when the heap reaches a goal
// set from what was live at the last collection, and that one ran during
// the burst: with little allocated afterwards, the next can be minutes away,
// and until then the kubelet counts it all against the pod's limit.
//
// releaseAfterBursts looks every releaseEvery. When no collection has run
// since its last look (the burst is over) and the heap holds releaseMin more
// than GOGC 50 would let it hold over the live heap last measured at rest,
// it collects and returns the free pages at once, and measures the live
// heap again. At rest or under steady work it does nothing: the heap stays
// within its goal, or the runtime collects by itself.
const (
	releaseEvery = 2 * time.Second
	releaseMin   = 16 << 20
)

var heapSamples = []metrics.Sample{
	{Name: "/gc/heap/live:bytes"},                // live at the last collection
	{Name: "/memory/classes/heap/objects:bytes"}, // allocated now, garbage included
	{Name: "/memory/classes/heap/free:bytes"},    // free, not yet returned
	{Name: "/gc/cycles/total:gc-cycles"},
}

func releaseAfterBursts(ctx context.Context) {
	tick := time.NewTicker(releaseEvery)
	defer tick.Stop()
	metrics.Read(heapSamples)
	rest, cycles := heapSamples[0].Value.Uint64(), heapSamples[3].Value.Uint64()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(heapSamples)
		live, held, n := heapSamples[0].Value.Uint64(), heapSamples[1].Value.Uint64()+heapSamples[2].Value.Uint64(), heapSamples[3].Value.Uint64()
		if n == cycles && held >= rest+rest/2+releaseMin {
			debug.FreeOSMemory()
			metrics.Read(heapSamples)
			live, n = heapSamples[0].Value.Uint64(), heapSamples[3].Value.Uint64()
			rest = live
		}
		rest, cycles = min(rest, live), n
	}
}
