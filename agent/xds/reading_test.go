package xds

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nodexds/nodexds/internal/poll"
)

// h2frame is one frame a test client sends: DATA carrying gRPC messages of
// the given lengths (a message's bytes may run over into the stream's next
// DATA frame: split says where), or another frame.
type h2frame struct {
	stream uint32
	data   []byte // DATA payload (gRPC bytes), or nil for a HEADERS frame
	pad    uint8  // DATA padding
	end    bool   // END_STREAM
	rst    bool   // RST_STREAM instead
}

// grpcBytes is a stream's gRPC messages of these lengths, framed.
func grpcBytes(lengths ...int) []byte {
	var b []byte
	for _, n := range lengths {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = append(b, bytes.Repeat([]byte{'x'}, n)...)
	}
	return b
}

// h2wire writes the client side of a connection as x/net/http2 does.
func h2wire(t testing.TB, frames []h2frame) []byte {
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings()
	fr.WriteWindowUpdate(0, 1<<20)
	for _, f := range frames {
		var err error
		switch {
		case f.rst:
			err = fr.WriteRSTStream(f.stream, http2.ErrCodeCancel)
		case f.data == nil:
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.stream, BlockFragment: []byte("\x82\x86"), EndHeaders: true})
		default:
			pad := make([]byte, f.pad)
			if f.pad > 0 {
				err = fr.WriteDataPadded(f.stream, f.end, f.data, pad)
			} else {
				err = fr.WriteData(f.stream, f.end, f.data)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		fr.WritePing(false, [8]byte{1})
	}
	return buf.Bytes()
}

// chunked splits b into pieces of random sizes (1..max).
func chunked(r *rand.Rand, b []byte, maxSize int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := min(len(b), 1+r.IntN(maxSize))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// trackAll feeds wire to a tracker in chunks, granting every start as a
// connection does, and has every whole request read by its handler. It
// returns the large requests it saw start, the budget taken, given back,
// and still held.
func trackAll(t testing.TB, chunks [][]byte) (starts []int64, taken, released, held int64) {
	tr := newRequestTracker()
	for _, c := range chunks {
		for len(c) > 0 {
			k, gate, r := tr.feed(c)
			if k == 0 {
				t.Fatalf("no progress on %d bytes", len(c))
			}
			c, released = c[k:], released+r
			if gate != nil { // the connection waits for it
				starts = append(starts, gate.large)
				gate.granted, taken = true, taken+gate.large
			}
		}
	}
	for _, w := range slices.Clone(tr.whole) {
		released += tr.consumed(w.n)
	}
	return starts, taken, released, tr.held()
}

// A whole large request holds its budget until its handler has read it, or
// for unreadWait.
func TestWholeRequestsHoldTheBudgetUntilRead(t *testing.T) {
	tr := newRequestTracker()
	wire := h2wire(t, []h2frame{{stream: 1}, {stream: 1, data: grpcBytes(100_000)[:16000]}, {stream: 1, data: grpcBytes(100_000)[16000:]},
		{stream: 3}, {stream: 3, data: grpcBytes(80_000)[:16000]}, {stream: 3, data: grpcBytes(80_000)[16000:]}})
	for len(wire) > 0 {
		k, gate, _ := tr.feed(wire)
		if gate != nil {
			gate.granted = true
		}
		wire = wire[k:]
	}
	if h := tr.held(); h != 180_000 {
		t.Fatalf("%d held once both arrived, want 180000 until they are read", h)
	}
	if n := tr.consumed(80_000); n != 80_000 || tr.held() != 100_000 {
		t.Fatalf("reading the 80,000-byte request gave back %d, left %d held", n, tr.held())
	}
	if n := tr.consumed(80_000); n != 0 {
		t.Fatalf("reading it twice gave back %d", n)
	}
	if n := tr.expire(time.Now().Add(unreadWait + time.Second)); n != 100_000 || tr.held() != 0 {
		t.Fatalf("an unread request expired with %d given back, %d left", n, tr.held())
	}
}

func TestRequestTrackerSeesWhereLargeRequestsStartAndEnd(t *testing.T) {
	big, huge := 100_000, 1<<20
	for _, c := range []struct {
		name       string
		frames     []h2frame
		wantStarts []int64
		wantHeld   int64
	}{
		{"small requests are not counted", []h2frame{{stream: 1}, {stream: 1, data: grpcBytes(10, 200, 60_000)}}, nil, 0},
		{"a large request across several frames, then a small one", []h2frame{{stream: 1},
			{stream: 1, data: grpcBytes(big)[:16384]}, {stream: 1, data: grpcBytes(big)[16384:]}, {stream: 1, data: grpcBytes(5)}},
			[]int64{int64(big)}, 0},
		{"two streams interleaved, one left unfinished", []h2frame{{stream: 1}, {stream: 3},
			{stream: 1, data: grpcBytes(huge)[:10000]}, {stream: 3, data: grpcBytes(big)[:3]}, {stream: 3, data: grpcBytes(big)[3:16000]},
			{stream: 1, data: grpcBytes(huge)[10000:16000]}, {stream: 3, data: grpcBytes(big)[16000:]}},
			[]int64{int64(huge), int64(big)}, int64(huge)},
		{"padded frames", []h2frame{{stream: 5}, {stream: 5, data: grpcBytes(big)[:9000], pad: 200}, {stream: 5, data: grpcBytes(big)[9000:], pad: 1}},
			[]int64{int64(big)}, 0},
		{"a stream reset mid-request gives its budget back", []h2frame{{stream: 7}, {stream: 7, data: grpcBytes(big)[:100]}, {stream: 7, rst: true}},
			[]int64{int64(big)}, 0},
		{"END_STREAM mid-request gives its budget back", []h2frame{{stream: 9}, {stream: 9, data: grpcBytes(big)[:100], end: true}},
			[]int64{int64(big)}, 0},
		{"a prefix split over two frames", []h2frame{{stream: 1}, {stream: 1, data: grpcBytes(big)[:2]}, {stream: 1, data: grpcBytes(big)[2:]}},
			[]int64{int64(big)}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			wire := h2wire(t, c.frames)
			r := rand.New(rand.NewPCG(1, 2))
			for _, maxChunk := range []int{1, 7, 100, 8192, len(wire)} {
				starts, taken, released, held := trackAll(t, chunked(r, wire, maxChunk))
				if !slices.Equal(starts, c.wantStarts) || held != c.wantHeld {
					t.Errorf("chunks of up to %d bytes: starts %v, holding %d; want %v, %d", maxChunk, starts, held, c.wantStarts, c.wantHeld)
				}
				if released+held != taken {
					t.Errorf("chunks of up to %d bytes: %d given back and %d held of %d taken", maxChunk, released, held, taken)
				}
			}
		})
	}
}

// FuzzRequestTracker: on any byte stream the tracker gives back at most what
// it took, and on streams that end every request, all of it.
func FuzzRequestTracker(f *testing.F) {
	f.Add([]byte(h2Preface), uint64(1))
	f.Add(h2wire(f, []h2frame{{stream: 1}, {stream: 1, data: grpcBytes(70_000)[:9000], pad: 3}, {stream: 1, rst: true}}), uint64(7))
	f.Fuzz(func(t *testing.T, wire []byte, seed uint64) {
		r := rand.New(rand.NewPCG(seed, seed))
		starts, taken, released, held := trackAll(t, chunked(r, wire, 1+int(seed%9000)))
		for _, s := range starts {
			if s <= largeRequest {
				t.Fatalf("a request of %d bytes counted", s)
			}
		}
		if released+held != taken || held < 0 {
			t.Fatalf("%d given back and %d held of %d taken", released, held, taken)
		}
	})
}

func TestReadBudgetServesWaitersInOrder(t *testing.T) {
	b := newReadBudget(100)
	never := make(chan struct{})
	if !b.acquire(60, 0, never) {
		t.Fatal("60 of 100 not taken")
	}
	served := map[int64]chan bool{}
	for _, n := range []int64{50, 30, 10} {
		served[n] = make(chan bool, 1)
		go func() { served[n] <- b.acquire(n, 0, never) }()
		poll.Until(t, "the waiter is queued", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.queue) > 0 && b.queue[len(b.queue)-1].n == n
		})
	}
	b.release(20) // 40 taken: 50 fits; 30 does not, and 10 waits behind it
	if !<-served[50] {
		t.Fatal("50 not served")
	}
	b.mu.Lock()
	queued := len(b.queue)
	b.mu.Unlock()
	if queued != 2 {
		t.Fatalf("%d waiting after 50 was served, want 30 and 10 (in order, though 10 would fit)", queued)
	}
	b.release(40)
	if !<-served[30] || !<-served[10] || b.used != 90 {
		t.Fatalf("30 and 10 not both served, or %d taken (want 90)", b.used)
	}
	closed := make(chan struct{})
	close(closed)
	if b.acquire(20, 0, closed) {
		t.Error("a waiter whose connection closed was served")
	}
	if b.acquire(20, time.Millisecond, never) {
		t.Error("a waiter holding budget was served past its limit")
	}
	b.release(90)
	if !b.acquire(200, time.Millisecond, never) {
		t.Error("a request larger than the whole budget was not read alone")
	}
	b.release(200)
	if b.used != 0 || len(b.queue) != 0 {
		t.Errorf("%d taken, %d waiting after all was given back", b.used, len(b.queue))
	}
}

// Large requests share the reading budget: with room for one at a time,
// clients on their own connections are each answered in turn; a client
// sending two at once on one connection while the budget is full loses its
// connection.
func TestLargeRequestsShareTheReadingBudget(t *testing.T) {
	s := startServerWith(t, Options{Limits: Limits{MaxReadingBytes: 300 << 10}}, "c0")
	names := make([]string, 4000) // ~200 KiB a request
	for i := range names {
		names[i] = fmt.Sprintf("c%d-%s", i, strings.Repeat("n", 40))
	}
	names[0] = "c0"
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			c := dial(t, s)
			c.request(names...)
			c.expectHolding("c0")
		})
	}
	wg.Wait()

	// Three streams of one connection, each sending large requests: more
	// at once than the budget holds.
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var errs []error
	var mu sync.Mutex
	for i := range 3 {
		wg.Go(func() {
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(context.Background())
			if err == nil {
				for err == nil {
					err = st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: fmt.Sprint(i)}, TypeUrl: ClusterType, ResourceNames: names})
				}
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	poll.Until(t, "the connection sending large requests at once is closed", func() bool {
		return testutil.ToFloat64(s.metrics.LimitHits.WithLabelValues("reading_bytes")) >= 1
	})
	wg.Wait()
	if len(errs) != 3 {
		t.Errorf("%d streams ended, want 3", len(errs))
	}
	// The budget is whole again: a new client is answered.
	c := dial(t, s)
	c.request(names...)
	c.expectHolding("c0")
}

// A waiter that runs out of time leaves the queue at its limit, and those
// behind it, which it held back, are served then.
func TestAReadBudgetWaiterGivesUpAtItsLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newReadBudget(100)
		never := make(chan struct{})
		if !b.acquire(60, 0, never) {
			t.Fatal("60 of 100 not taken")
		}
		start := time.Now()
		first, behind := make(chan time.Duration), make(chan time.Duration)
		go func() {
			if b.acquire(50, 10*time.Second, never) {
				t.Error("50 served though 60 of 100 were never given back")
			}
			first <- time.Since(start)
		}()
		synctest.Wait() // queued first
		go func() {
			if !b.acquire(30, 0, never) {
				t.Error("30 not served")
			}
			behind <- time.Since(start)
		}()
		if d := <-first; d != 10*time.Second {
			t.Errorf("the first waiter gave up after %v, want its limit, 10s", d)
		}
		if d := <-behind; d != 10*time.Second {
			t.Errorf("the waiter behind it was served after %v, want 10s, when the first left", d)
		}
		if b.used != 90 || len(b.queue) != 0 {
			t.Errorf("%d taken and %d waiting, want 90 and none", b.used, len(b.queue))
		}
	})
}
