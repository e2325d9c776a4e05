package health

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// tg is target i of a made-up address range; names in tables read as "a3".
func tg(name string) Target {
	var base, i int
	fmt.Sscanf(name[1:], "%d", &i)
	base = int(name[0]-'a') * 1000
	return Target{Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(base+i+1))}
}

func tgs(names string) []Target {
	var out []Target
	for _, n := range strings.Fields(names) {
		out = append(out, tg(n))
	}
	return out
}

func TestAllocate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		budget   int
		clusters []string // each a space-separated list, in priority order
		want     string   // the checked targets, in any order
	}{
		{"everything fits: everything is checked", 10,
			[]string{"a0 a1 a2", "b0 b1"}, "a0 a1 a2 b0 b1"},
		{"a huge cluster gets only what the small one leaves", 4,
			[]string{"a0 a1 a2 a3 a4 a5 a6 a7", "b0"}, "a0 a1 a2 b0"},
		{"two big clusters split the budget evenly, each checking its first targets", 4,
			[]string{"a0 a1 a2 a3", "b0 b1 b2 b3"}, "a0 a1 b0 b1"},
		{"an odd budget gives the extra one to the cluster first in order", 3,
			[]string{"a0 a1 a2", "b0 b1 b2"}, "a0 a1 b0"},
		{"a target two clusters list costs the budget once", 3,
			[]string{"c0 a0", "c0 b0"}, "c0 a0 b0"},
		{"a zero budget checks nothing", 0,
			[]string{"a0"}, ""},
		{"more clusters than budget: the first in order get one each", 2,
			[]string{"a0 a1", "b0", "c0"}, "a0 b0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lists [][]Target
			for _, c := range tc.clusters {
				lists = append(lists, tgs(c))
			}
			got := allocate(tc.budget, lists)
			want := map[Target]bool{}
			for _, x := range tgs(tc.want) {
				want[x] = true
			}
			for x := range want {
				if !got[x] {
					t.Errorf("%v not checked, want it checked", x)
				}
			}
			for x := range got {
				if !want[x] {
					t.Errorf("%v checked, want it unchecked", x)
				}
			}
		})
	}
}

func TestBudgetDoesNotDependOnTrackOrder(t *testing.T) {
	a, b := tgs("a0 a1 a2 a3 a4 a5"), tgs("b0 b1 b2 b3")
	cfg := testConfig
	cfg.MaxEndpoints = 5
	unchecked := func(order ...string) [2][]Target {
		p := startProber(t, cfg)
		for _, c := range order {
			p.Track(c, map[string][]Target{"a": a, "b": b}[c])
		}
		// Rebuilding either cluster again changes nothing.
		p.Track("a", a)
		p.Track("b", b)
		return [2][]Target{p.Unchecked("a"), p.Unchecked("b")}
	}
	ab, ba := unchecked("a", "b"), unchecked("b", "a")
	if !slices.Equal(ab[0], ba[0]) || !slices.Equal(ab[1], ba[1]) {
		t.Errorf("unchecked after a then b: %v; after b then a: %v", ab, ba)
	}
	if want := tgs("a3 a4 a5"); !slices.Equal(ab[0], want) {
		t.Errorf("a's unchecked endpoints %v, want its last ones %v", ab[0], want)
	}
	if want := tgs("b2 b3"); !slices.Equal(ab[1], want) {
		t.Errorf("b's unchecked endpoints %v, want %v", ab[1], want)
	}
}

// The budget is shared fairly: a Service of 4,000 endpoints tracked after a
// small one leaves the small one checked, and its health flips reported. (The budget is scaled down to 100 here, so that the
// servers of everything checked fit the race detector's goroutine limit;
// BenchmarkWatch checks 4,000.)
func TestSmallServiceStaysCheckedBesideA4000EndpointService(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4,002 listeners")
	}
	const bigSize, budget = 4000, 100
	small := []*healthServer{startHealthServer(t), startHealthServer(t)}
	shared := newSharedHealthServer(t, bigSize)
	cfg := testConfig
	cfg.MaxEndpoints = budget
	p := startProber(t, cfg)

	p.Track("small", []Target{small[0].Target, small[1].Target})
	p.Track("big", shared.targets)
	for range 3 { // rebuilds of the big Service change nothing
		p.Track("big", shared.targets)
	}
	for _, s := range small {
		waitStatus(t, p, s.Target, Healthy)
	}
	if got := p.Unchecked("small"); got != nil {
		t.Errorf("small Service has unchecked endpoints %v", got)
	}
	unchecked := p.Unchecked("big")
	if want := shared.targets[budget-2:]; !slices.Equal(unchecked, want) {
		t.Errorf("big Service: %d endpoints unchecked, want its last %d (its share is %d)", len(unchecked), len(want), budget-2)
	}
	if n := p.metric(t, "nodexds_health_checked_endpoints"); n != budget {
		t.Errorf("%v endpoints checked, want the budget, %d", n, budget)
	}
	if n := p.metric(t, "nodexds_health_unchecked_endpoints"); n != bigSize-(budget-2) {
		t.Errorf("%v endpoints unchecked, want %d", n, bigSize-(budget-2))
	}
	waitFor(t, "the big Service's checked endpoints are healthy", func() bool { return p.Status(shared.targets[budget-3]) == Healthy })

	// Its flips are reported. How soon is a latency, logged here and
	// measured by the benchmarks; being checked at all is what the budget
	// decides, asserted above.
	for _, st := range []struct {
		set  func()
		want Status
	}{
		{func() { small[0].SetServingStatus("", notServing) }, Unhealthy},
		{func() { small[0].SetServingStatus("", serving) }, Healthy},
	} {
		p.TakeChanged()
		start := time.Now()
		st.set()
		told := false
		waitFor(t, "the small Service is told its endpoint is "+st.want.String(), func() bool {
			told = told || slices.Contains(p.TakeChanged(), "small")
			return told && p.Status(small[0].Target) == st.want
		})
		t.Logf("small Service's endpoint reported %v after %v", st.want, time.Since(start).Round(time.Millisecond))
	}
}

// sharedHealthServer is one grpc-go health server listening on many ports,
// one endpoint each.
type sharedHealthServer struct {
	targets []Target
}

func newSharedHealthServer(t testing.TB, n int) *sharedHealthServer {
	t.Helper()
	first := startHealthServer(t)
	s := &sharedHealthServer{targets: []Target{first.Target}}
	for range n - 1 {
		l, err := listenLoopback()
		if err != nil {
			t.Fatal(err)
		}
		go first.grpc.Serve(l)
		s.targets = append(s.targets, Target{Addr: netip.MustParseAddrPort(l.Addr().String())})
	}
	return s
}
