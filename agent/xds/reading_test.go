package xds

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nodexds/nodexds/internal/poll"
)

func TestReadBudgetServesWaitersInOrder(t *testing.T) {
	b := newReadBudget(100)
	never := make(chan struct{})
	if !b.Acquire(60, 0, never) {
		t.Fatal("60 of 100 not taken")
	}
	served := map[int64]chan bool{}
	for _, n := range []int64{50, 30, 10} {
		served[n] = make(chan bool, 1)
		go func() { served[n] <- b.Acquire(n, 0, never) }()
		poll.Until(t, "the waiter is queued", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.queue) > 0 && b.queue[len(b.queue)-1].n == n
		})
	}
	b.Release(20) // 40 taken: 50 fits; 30 does not, and 10 waits behind it
	if !<-served[50] {
		t.Fatal("50 not served")
	}
	b.mu.Lock()
	queued := len(b.queue)
	b.mu.Unlock()
	if queued != 2 {
		t.Fatalf("%d waiting after 50 was served, want 30 and 10 (in order, though 10 would fit)", queued)
	}
	b.Release(40)
	if !<-served[30] || !<-served[10] || b.used != 90 {
		t.Fatalf("30 and 10 not both served, or %d taken (want 90)", b.used)
	}
	closed := make(chan struct{})
	close(closed)
	if b.Acquire(20, 0, closed) {
		t.Error("a waiter whose connection closed was served")
	}
	if b.Acquire(20, time.Millisecond, never) {
		t.Error("a waiter holding budget was served past its limit")
	}
	b.Release(90)
	if !b.Acquire(200, time.Millisecond, never) {
		t.Error("a request larger than the whole budget was not read alone")
	}
	b.Release(200)
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
		if !b.Acquire(60, 0, never) {
			t.Fatal("60 of 100 not taken")
		}
		start := time.Now()
		first, behind := make(chan time.Duration), make(chan time.Duration)
		go func() {
			if b.Acquire(50, 10*time.Second, never) {
				t.Error("50 served though 60 of 100 were never given back")
			}
			first <- time.Since(start)
		}()
		synctest.Wait() // queued first
		go func() {
			if !b.Acquire(30, 0, never) {
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
