package xds

import (
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// open registers a new stream, within the stream limits.
func (s *Server) open(st *stream) error {
	s.mu.Lock()
	var limit string
	switch {
	case len(s.streams) >= s.limits.MaxStreams:
		limit = "streams"
	case s.perPeer[st.peer] >= s.limits.MaxStreamsPerPeer:
		limit = "streams_per_peer"
	default:
		s.streams[st.id] = st
		s.perPeer[st.peer]++
	}
	s.mu.Unlock()
	if limit != "" {
		s.limitHit(st, limit, "too many ADS streams: refusing a new one",
			"max_streams", s.limits.MaxStreams, "max_streams_per_peer", s.limits.MaxStreamsPerPeer)
		return status.Errorf(codes.ResourceExhausted, "too many ADS streams (limit %s)", limit)
	}
	s.metrics.ConnectedClients.Inc()
	return nil
}

// reserveNames adds delta to a peer's subscribed names, unless that would
// exceed MaxNamesPerPeer or MaxNames; it returns the limit that refused it.
func (s *Server) reserveNames(peer netip.Addr, delta int) (refused string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.names[peer] + delta
	switch {
	case delta > 0 && n > s.limits.MaxNamesPerPeer:
		return "names_per_peer"
	case delta > 0 && s.total+delta > s.limits.MaxNames:
		return "names"
	}
	s.total += delta
	if n <= 0 {
		delete(s.names, peer)
	} else {
		s.names[peer] = n
	}
	return ""
}

// reserve adds delta to the names the stream's peer subscribes to, or
// returns the error that ends the stream for going beyond a names limit.
func (st *stream) reserve(delta int) error {
	switch st.srv.reserveNames(st.peer, delta) {
	case "names_per_peer":
		st.srv.limitHit(st, "names_per_peer", "client's address subscribes to too many names: ending its stream",
			"max", st.srv.limits.MaxNamesPerPeer)
		return status.Errorf(codes.ResourceExhausted, "the streams from %s subscribe to more than %d names",
			st.peer, st.srv.limits.MaxNamesPerPeer)
	case "names":
		st.srv.limitHit(st, "names", "clients subscribe to too many names in all: ending a stream that adds more",
			"max", st.srv.limits.MaxNames)
		return status.Errorf(codes.ResourceExhausted, "this agent's clients subscribe to more than %d names in all",
			st.srv.limits.MaxNames)
	}
	return nil
}

// close drops a finished stream and all its subscriptions. A worker still
// sending finds nothing more to do.
func (s *Server) close(st *stream) {
	st.mu.Lock()
	st.ended = true
	st.mu.Unlock()
	st.state.Lock()
	for i, ts := range st.types {
		if ts == nil {
			continue
		}
		s.reserveNames(st.peer, -len(ts.names))
		s.subscribe(st, addOrder[i], nil, slices.Collect(maps.Keys(ts.names)))
	}
	st.types = [len(addOrder)]*typeState{}
	st.state.Unlock()
	s.mu.Lock()
	delete(s.streams, st.id)
	if s.perPeer[st.peer]--; s.perPeer[st.peer] <= 0 {
		delete(s.perPeer, st.peer)
	}
	s.mu.Unlock()
	s.metrics.ConnectedClients.Dec()
	if st.node != nil {
		st.log.at(slog.LevelInfo, "client disconnected", "node", st.node.GetId())
	}
}

// Listener wraps l with the connection limits (LimitListener), as ADS is
// served.
func (s *Server) Listener(l net.Listener) net.Listener {
	return LimitListener(l, s.limits.MaxConnsPerPeer, s.limits.MaxConns, s.ConnRefused)
}

// readingExceeded reports a connection closed for sending a large request
// while another of its own held the reading budget.
func (s *Server) readingExceeded(peer netip.Addr) {
	s.metrics.LimitHits.WithLabelValues("reading_bytes").Inc()
	if ok, dropped := s.logs.allow(time.Now()); ok {
		s.log.Warn("client sends large requests at once on one connection beyond the reading budget: closing it",
			"peer", peer.String(), "max_bytes", s.limits.MaxReadingBytes, "suppressed", dropped)
	}
}

// ConnRefused counts and reports a connection refused by LimitListener.
func (s *Server) ConnRefused(peer netip.Addr, limit string) {
	s.metrics.LimitHits.WithLabelValues(limit).Inc()
	if ok, dropped := s.logs.allow(time.Now()); ok {
		s.log.Warn("too many connections: closing a new one", "peer", peer.String(), "limit", limit, "suppressed", dropped)
	}
}

// limitHit counts and reports a client reaching one of the Limits.
func (s *Server) limitHit(st *stream, limit, msg string, args ...any) {
	s.metrics.LimitHits.WithLabelValues(limit).Inc()
	st.log.at(slog.LevelWarn, msg, append([]any{"limit", limit}, args...)...)
}
