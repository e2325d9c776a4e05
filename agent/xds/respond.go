package xds

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// respond sends what plan decides for what changed: for each type in d,
// every subscribed name, or only those whose resources changed.
func (st *stream) respond(d dirty) error {
	out := st.prepare(d)
	for _, o := range out {
		if err := st.send(o); err != nil {
			return err
		}
	}
	return nil
}

// outgoing is a response ready to send, and what its metrics need.
type outgoing struct {
	resp       *discoveryv3.DiscoveryResponse
	oldest     time.Time // of the updates it carries; first sends are not push latency
	subscribed int       // names of its type, for the debug log
}

// prepare plans the responses for what changed and records them as sent:
// the stream's state is settled before the worker sends (outside the lock,
// so that reading requests never waits for a client to read), and an ACK
// that arrives meanwhile finds the nonce it names.
func (st *stream) prepare(d dirty) []outgoing {
	st.state.Lock()
	defer st.state.Unlock()
	var ins []typeInput
	for i, typ := range addOrder {
		ts := st.types[i]
		if !d[i].any || ts == nil {
			continue
		}
		names := ts.sortedNames()
		if d[i].keys != nil {
			names = st.changedNames(typ, ts, d[i].keys)
		}
		subs := make([]sub, len(names))
		for i, n := range names {
			subs[i].name, subs[i].key = n, st.keyOf(typ, n)
		}
		st.srv.cache.lookup(typ, subs)
		for i := range subs {
			if e := &subs[i].entry; e.resolved && !e.scope.VisibleTo(st.namespaces) {
				*e = st.srv.outsider(typ, subs[i].name)
			}
		}
		ins = append(ins, typeInput{typ: typ, subs: subs, told: ts.told, digest: ts.digest})
	}
	rs := plan(ins)
	out := make([]outgoing, len(rs))
	for i, r := range rs {
		ts := st.types[typeIndex(r.typ)]
		st.nonce++
		o := &out[i]
		o.resp = &discoveryv3.DiscoveryResponse{
			VersionInfo: r.version,
			TypeUrl:     r.typ,
			Nonce:       strconv.FormatUint(st.nonce, 10),
			Resources:   make([]*anypb.Any, len(r.resources)),
		}
		for i, s := range r.resources {
			o.resp.Resources[i] = s.entry.resource
			if prev, ok := ts.told[s.name]; ok && prev != toldAbsent && prev != s.entry.version &&
				(o.oldest.IsZero() || s.entry.observed.Before(o.oldest)) {
				o.oldest = s.entry.observed
			}
		}
		o.subscribed = len(ts.names)
		ts.nonce, ts.sent = o.resp.Nonce, o.resp.VersionInfo
		st.info.responded(r.typ, r.version, st.nonce, r.resources, fullState(r.typ))
	}
	for _, in := range ins {
		st.types[typeIndex(in.typ)].digest = recordTold(in.told, in.subs, in.digest)
	}
	return out
}

// changedNames are the subscribed names of the changed cache keys of an
// incremental type, sorted. Route and Endpoint names are mostly their own
// cache keys; a key that is not a name of the stream cached under itself
// (a variant, or a name no longer subscribed) is looked up through every
// name.
func (st *stream) changedNames(typ string, ts *typeState, keys map[string]struct{}) []string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		if _, ok := ts.names[k]; !ok || st.keyOf(typ, k) != k {
			return ts.sortedNames()
		}
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// send hands one response to gRPC. A client that has not taken it within
// SendTimeout loses its connection: the Send (and the worker) end with it.
func (st *stream) send(o outgoing) error {
	if st.watchdog == nil { // one timer for the stream's sends, one worker at a time
		st.watchdog = time.AfterFunc(st.srv.limits.SendTimeout, st.stuckSend)
	} else {
		st.watchdog.Reset(st.srv.limits.SendTimeout)
	}
	err := st.grpc.Send(o.resp)
	st.watchdog.Stop()
	if err != nil {
		return err
	}
	if st.srv.sent != nil {
		st.srv.sent(o.resp.TypeUrl)
	}
	i := slices.Index(addOrder[:], o.resp.TypeUrl)
	st.srv.pushes[i].Inc()
	if !o.oldest.IsZero() {
		st.srv.pushLatency[i].Observe(time.Since(o.oldest).Seconds())
	}
	if st.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		st.srv.log.Debug("sent", "stream", st.id, "type", ShortType(o.resp.TypeUrl),
			"version", o.resp.VersionInfo, "resources", len(o.resp.Resources), "subscribed", o.subscribed)
	}
	return nil
}

// stuckSend ends a stream whose client has not read a response in
// SendTimeout, by closing its connection: the response it does not read
// fills the connection's socket, which no other stream could use.
func (st *stream) stuckSend() {
	st.stuck.Do(func() {
		st.srv.limitHit(st, "send_timeout", "client took no response in time: closing its connection", "timeout", st.srv.limits.SendTimeout)
		if st.conn.Conn != nil {
			st.conn.Conn.Close()
		}
	})
}
