package serve

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// A burst of work (a crowd of clients, or an attacker's requests, read and
// gone) leaves its memory behind: garbage, and free pages that the runtime
// returns to the OS only slowly. Go collects when the heap reaches a goal set
// from what was live at the last collection, and that one ran during the
// burst: with little allocated afterwards, the next can be minutes away.
// Until then the kubelet counts it all against the pod's limit.
//
// releaseAfterBursts looks every releaseEvery, and collects and returns the
// free pages at once (debug.FreeOSMemory) when either
//   - releaseMin or more of free pages wait to be returned, or
//   - no collection has run since its last look (the burst is over) and the
//     heap holds releaseMin more than GOGC 50 lets it hold over the live heap
//     last measured at rest.
//
// At rest, or under steady work, it does nothing: the heap stays within its
// goal and the pages it frees are few.
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
		live, objects, free, n := heapSamples[0].Value.Uint64(), heapSamples[1].Value.Uint64(), heapSamples[2].Value.Uint64(), heapSamples[3].Value.Uint64()
		calm := n == cycles
		if free >= releaseMin || (calm && objects+free >= rest+rest/2+releaseMin) {
			debug.FreeOSMemory()
			metrics.Read(heapSamples)
			rest, cycles = heapSamples[0].Value.Uint64(), heapSamples[3].Value.Uint64()
			continue
		}
		rest, cycles = min(rest, live), n
	}
}
