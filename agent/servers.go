// Servers: the Listeners xDS-enabled gRPC servers of this node ask for
// (gRFC A36). Each is built for the pod that asked — the stream's peer,
// never what the name claims — from the policies of the Services whose
// endpoints are that pod and port (its namespace's default when none is),
// merged so that none is weakened (trust.ServerPolicy).
//
// A proxyless server cannot accept TLS and plaintext on one port: gRPC
// servers tell filter chains apart by addresses only, never by what a
// connection starts with (A36 accepts transport_protocol "raw_buffer"
// alone). So when a Service's connections change between plaintext and
// TLS, its clients change first and its servers follow a handover later:
// clients keep the connections they have (gRPC dials only new ones with
// the new settings), and once the servers change, they drain the old
// connections and their clients redial with what both now speak.

package agent

import (
	"strings"
	"time"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/agent/trust"
	"github.com/nodexds/nodexds/agent/xds"
)

// DefaultHandover is how long servers wait for their clients when a
// Service's connections change between plaintext and TLS: every agent sees
// the change within about a second (its watch), and pushes it to its
// clients within milliseconds.
const DefaultHandover = 10 * time.Second

// serverKey is the cache name of a server listener name for a client: the
// pod it is built for is the stream's peer. A name the agent cannot place
// gets a key that says why, and is answered with nothing.
func (a *Agent) serverKey(c xds.Client, name string) string {
	listening, err := names.ParseServer(name)
	switch {
	case err != nil:
		return unplacedKey(name, "malformed")
	case a.viewOf(c.Node) != "":
		// A server of another node, using this agent as its fallback: only
		// its own node's agent knows its pod.
		return unplacedKey(name, "other_node")
	case !listening.Addr().IsUnspecified() && listening.Addr() != c.Addr:
		return unplacedKey(name, "other_address")
	}
	return names.Server{
		Listening: listening,
		Pod:       c.Addr,
		Namespace: clientNamespace(c.Node, c.Namespaces),
		Certs:     hasCerts(c.Node),
	}.Key()
}

const unplacedSep = "|unplaced|"

func unplacedKey(name, reason string) string { return name + unplacedSep + reason }

// unplacedReason reads the reason unplacedKey wrote ("malformed" for any
// other key).
func unplacedReason(key string) string {
	if i := strings.LastIndex(key, unplacedSep); i >= 0 {
		return key[i+len(unplacedSep):]
	}
	return "malformed"
}

// serverState is what one subscribed server listener was given.
type serverState struct {
	server names.Server
	// tls is the transport its connections were last given; since, when
	// its policy first asked for the other one (zero: it does not).
	tls       bool
	since     time.Time
	built     bool
	transport string // what nodexds_server_listeners counts it as: tls, plaintext, denied or ""
	unplaced  bool   // no Service places its pod (counted in nodexds_server_listeners_unplaced_total)
}

// handover decides the transport a server is given now: the one its policy
// wants, except that a change between plaintext and TLS waits for after.
// due is when a held change is to be made (zero: none is held).
func handover(st *serverState, want bool, now time.Time, after time.Duration) (tls bool, due time.Time) {
	switch {
	case !st.built || want == st.tls:
		st.since = time.Time{}
		return want, time.Time{}
	case st.since.IsZero():
		st.since = now
	}
	if now.Sub(st.since) >= after {
		st.since = time.Time{}
		return want, time.Time{}
	}
	return st.tls, st.since.Add(after)
}

// buildServer builds a subscribed server listener, and returns when a held
// transport change is due (zero: none).
func (a *Agent) buildServer(key string, st *serverState, now time.Time) time.Time {
	a.metrics.Builds.WithLabelValues(xds.ShortType(xds.ListenerType)).Inc()
	s := st.server
	policy, placed := a.builder.serverPolicy(s)
	if !placed {
		if !st.unplaced {
			// Counted once, when it becomes unplaced: rebuilds while it
			// waits (any Service's change) are not more servers.
			st.unplaced = true
			a.metrics.ServersUnplaced.WithLabelValues("unknown_pod").Inc()
			a.log.Debug("server listener for a peer that is no known pod of this node", "name", s.Name(), "peer", s.Pod)
		}
		a.setServer(st, "")
		st.built = false // nothing to hand over from
		a.set(xds.ListenerType, key, nil, xds.Scope{}, now)
		return time.Time{}
	}
	st.unplaced = false
	tls, due := handover(st, policy.Mode.TLS() && s.Certs, now, a.cfg.Handover)
	if !due.IsZero() {
		// A change between plaintext and TLS is held: the server keeps the
		// Listener it has, exactly. Any change would make it drain its
		// connections now, and its clients, which may have moved already,
		// would redial with what it does not speak yet.
		return due
	}
	chain := resources.ServerChain{TLS: tls, Provider: xds.CertProvider}
	transport := "plaintext"
	switch {
	case policy.Mode == trust.Strict && !s.Certs:
		// Its bootstrap has no certificates: it cannot do what the Service
		// asks, and serving it plaintext would open what strict closes.
		chain.DenyAll, transport = true, "denied"
	case tls && policy.Mode.TLS():
		transport = "tls"
		chain.RequireClientCert = policy.Mode == trust.Strict
		if policy.Mode == trust.Strict {
			chain.Allow = policy.AllowMatches(a.cfg.TrustDomain)
			chain.HealthChecker = a.cfg.HealthIdentity
		}
	}
	st.tls, st.built = tls, true
	a.setServer(st, transport)
	a.set(xds.ListenerType, key, resources.ServerListener(s.Name(), s.Listening, chain), xds.Scope{}, now)
	return time.Time{}
}

// setServer moves a server listener between the counts of
// nodexds_server_listeners.
func (a *Agent) setServer(st *serverState, transport string) {
	if st.transport != "" {
		a.metrics.ServerListeners.WithLabelValues(st.transport).Dec()
	}
	if transport != "" {
		a.metrics.ServerListeners.WithLabelValues(transport).Inc()
	}
	st.transport = transport
}

// serverInterest follows a server listener name coming or going.
func (a *Agent) serverInterest(key string, wanted bool, now time.Time) {
	if !wanted {
		if st := a.servers[key]; st != nil {
			a.setServer(st, "")
			delete(a.servers, key)
		}
		return
	}
	s, ok := names.ParseServerKey(key)
	if !ok {
		a.metrics.ServersUnplaced.WithLabelValues(unplacedReason(key)).Inc()
		// Debug only, as for any name a client chooses: the metric counts.
		a.log.Debug("server listener name that cannot be placed", "name", names.Clip(key))
		a.set(xds.ListenerType, key, nil, xds.Scope{}, now)
		return
	}
	st := &serverState{server: s}
	a.servers[key] = st
	a.noteServerDue(a.buildServer(key, st, now))
}

// rebuildServers rebuilds every subscribed server listener (there are a
// few per node, and each costs a map lookup per Service selecting it) when
// a Service, a Namespace or a local endpoint changed, and those whose
// handover is due.
func (a *Agent) rebuildServers(now time.Time, all bool) {
	if !all && (a.serverDue.IsZero() || now.Before(a.serverDue)) {
		return
	}
	a.serverDue = time.Time{}
	for key, st := range a.servers {
		if all || !st.since.IsZero() {
			a.noteServerDue(a.buildServer(key, st, now))
		}
	}
}

func (a *Agent) noteServerDue(due time.Time) {
	if !due.IsZero() && (a.serverDue.IsZero() || due.Before(a.serverDue)) {
		a.serverDue = due
	}
}

// serverPolicy is what a server pod's port enforces; placed is false when
// the pod is not known to be of this node.
func (b *builder) serverPolicy(s names.Server) (p trust.Server, placed bool) {
	var ps []trust.Policy
	for _, sel := range b.selecting(s.Port()) {
		if svc, ok := b.service(sel.Service); ok {
			ps = append(ps, b.config(svc).trust)
		}
	}
	if len(ps) == 0 {
		// No Service selects it (yet): its namespace's default, if the
		// agent knows the peer is a pod of this node.
		if !b.podsAdmitted {
			return trust.Server{}, false
		}
		def, _ := trust.PolicyFor(s.Namespace, nil, b.namespaceAnnotations(s.Namespace))
		ps = []trust.Policy{def}
	}
	return trust.ServerPolicy(ps), true
}
