package xds

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodexds/nodexds/internal/shrink"
)

// stream is one client's ADS stream. The reading goroutine (handle) and the
// worker (respond) share its state under state; dirty, working and ended
// are under mu (taken by wake, under the Server's subMu: never take state
// or subMu under mu); info has its own lock (read by Clients).
type stream struct {
	id   uint64
	srv  *Server
	grpc discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	peer netip.Addr
	conn connInfo // the client's connection, when served with GRPCOptions
	log  clientLog

	state      sync.Mutex
	node       *corev3.Node // trimmed, from the first request naming one
	admitted   bool
	namespaces []string                  // the client's, from admission
	nonce      uint64                    // of the last response, any type
	types      [len(addOrder)]*typeState // by typeIndex

	mu      sync.Mutex
	dirty   dirty
	working bool // a worker runs (see wake)
	ended   bool // the stream is over: no worker starts

	stuck    sync.Once   // a Send outlived SendTimeout
	watchdog *time.Timer // for the worker's Send (see send)

	info clientInfo
}

// typeState is what one stream knows about one resource type.
type typeState struct {
	names    map[string]uint64 // subscribed; values are stampNames' stamps
	stamp    uint64            // see stampNames
	sorted   []string          // names, sorted; nil when names changed
	told     map[string]string // see typeInput.told
	digest   uint64            // see typeInput.digest
	toldPeak int               // see shrink.Map
	nonce    string            // of the latest response of this type
	sent     string            // its version
	answered string            // nonce last ACKed or NACKed, not to count a repeat
	named    bool              // a request has named resources: an empty list is no longer a wildcard
}

// stampNames stamps each subscribed name in names with a fresh stamp, and
// reports whether names is exactly the subscription (each name once),
// without allocating: state-of-the-world clients repeat every name with
// every ACK, so this is what most requests are.
func (ts *typeState) stampNames(names []string) (unchanged bool) {
	if len(names) != len(ts.names) {
		return false
	}
	ts.stamp++
	for _, n := range names {
		if s, ok := ts.names[n]; !ok || s == ts.stamp { // new, or said twice
			return false
		}
		ts.names[n] = ts.stamp
	}
	return true
}

func (ts *typeState) sortedNames() []string {
	if ts.sorted == nil {
		ts.sorted = slices.Sorted(maps.Keys(ts.names))
	}
	return ts.sorted
}

func (ts *typeState) latest() latest {
	return latest{nonce: ts.nonce, version: ts.sent, answered: ts.answered}
}

// handle applies one request. It reports whether the request may call for an
// answer (it subscribed to names), or the error that ends the stream.
func (st *stream) handle(ctx context.Context, req *discoveryv3.DiscoveryRequest) (bool, error) {
	typ := req.GetTypeUrl()
	st.identify(req.GetNode())
	if err := st.admitOnce(ctx); err != nil {
		return false, err
	}

	st.state.Lock()
	defer st.state.Unlock()
	ts := st.types[typeIndex(typ)]
	if ts == nil {
		ts = &typeState{names: map[string]uint64{}, told: map[string]string{}}
		st.types[typeIndex(typ)] = ts
	}
	names := req.GetResourceNames()
	if err := st.refuse(typ, names, ts.named); err != nil {
		return false, err
	}
	ts.named = ts.named || len(names) > 0
	m := meaningOf(req, ts.latest())
	st.answer(typ, ts, req, m)
	add, remove, err := st.resubscribe(typ, ts, names)
	if err != nil {
		return false, err
	}
	st.info.requested(typ, add, remove, m.verdict(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
	return len(add) > 0, nil
}

// identify records the client's Node from the first request naming one.
// Only the reading goroutine writes node and admitted: it reads them
// unlocked.
func (st *stream) identify(n *corev3.Node) {
	if st.node != nil || n == nil {
		return
	}
	node := trimNode(n)
	st.state.Lock()
	st.node = node
	st.state.Unlock()
	st.info.identify(node)
	st.log.at(slog.LevelInfo, "client connected", "node", node.GetId(),
		localityAttr(node.GetLocality()), "user_agent", st.info.userAgent)
}

// admitOnce asks Admit, on the first request, whether the client is served.
func (st *stream) admitOnce(ctx context.Context) error {
	if st.srv.admit == nil || st.admitted {
		return nil
	}
	ns, err := st.srv.admit(ctx, st.peer, st.node)
	if err != nil {
		code := strings.ToLower(strings.ReplaceAll(status.Code(err).String(), "Denied", "_denied"))
		st.srv.metrics.Refused.WithLabelValues(code).Inc()
		st.log.at(slog.LevelWarn, "client refused", "node", st.node.GetId(), "error", Clip(err.Error(), maxLogLen))
		return err
	}
	st.state.Lock()
	st.namespaces = ns
	st.state.Unlock()
	st.admitted = true
	return nil
}

// refuse returns the error that ends a stream for a request it must not
// serve: a wildcard subscription (refused rather than misread), or more
// names than MaxNamesPerType.
func (st *stream) refuse(typ string, names []string, named bool) error {
	if wildcard(typ, names, named) {
		st.log.at(slog.LevelWarn, "wildcard subscription refused: ending the stream", "type", ShortType(typ))
		return status.Errorf(codes.InvalidArgument,
			"nodexds does not serve wildcard %s subscriptions: name the resources you want (gRPC clients do, e.g. xds:///my-service.my-namespace:8080)", ShortType(typ))
	}
	if len(names) > st.srv.limits.MaxNamesPerType {
		st.srv.limitHit(st, "names_per_type", "client subscribed to too many names: ending its stream",
			"type", ShortType(typ), "names", len(names), "max", st.srv.limits.MaxNamesPerType)
		return status.Errorf(codes.ResourceExhausted, "%d %s names in one request, more than the limit of %d",
			len(names), ShortType(typ), st.srv.limits.MaxNamesPerType)
	}
	return nil
}

// answer records an ACK or NACK of the type's latest response, so that a
// repeat does not count again, and reports a NACK.
func (st *stream) answer(typ string, ts *typeState, req *discoveryv3.DiscoveryRequest, m meaning) {
	if m != acked && m != nacked {
		return
	}
	ts.answered = req.GetResponseNonce()
	if m == nacked {
		st.srv.metrics.NACKs.WithLabelValues(ShortType(typ), clientStack(st.node)).Inc()
		st.log.at(slog.LevelError, "client rejected a response (NACK)", "node", st.node.GetId(),
			"type", ShortType(typ), "nonce", ts.answered, "version", ts.sent,
			"error", Clip(req.GetErrorDetail().GetMessage(), maxLogLen))
	}
}

// resubscribe makes names the type's subscription, within the names quota,
// and returns the names it added and removed.
func (st *stream) resubscribe(typ string, ts *typeState, names []string) (add, remove []string, err error) {
	if ts.stampNames(names) {
		return nil, nil, nil
	}
	want, add, remove := diffNames(ts.names, names)
	for _, n := range remove {
		if v, ok := ts.told[n]; ok && v != toldAbsent {
			ts.digest ^= digestOf(n, v)
		}
		delete(ts.told, n)
	}
	if len(add)+len(remove) == 0 {
		return nil, nil, nil
	}
	if err := st.reserve(len(add) - len(remove)); err != nil {
		return nil, nil, err
	}
	ts.names, ts.sorted = want, nil
	ts.told = shrink.Map(ts.told, &ts.toldPeak)
	st.srv.subscribe(st, typ, add, remove)
	return add, remove, nil
}
