package xds

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nodexds/nodexds/internal/shrink"
)

// ResourceState is where one subscribed resource stands on one client, as
// the server sees it. The values are CSDS's ConfigStatus names.
type ResourceState string

const (
	// Synced: sent, and the client ACKed the response carrying it.
	Synced ResourceState = "SYNCED"
	// Stale: sent, and the client has not answered yet.
	Stale ResourceState = "STALE"
	// NotSent: subscribed, but not sent (the agent has no such resource, has
	// not resolved it yet, or a full-state response told the client it is gone).
	NotSent ResourceState = "NOT_SENT"
	// Error: the client NACKed the response carrying the version sent.
	Error ResourceState = "ERROR"
)

// ClientStatus is what the server knows about one connected ADS stream.
type ClientStatus struct {
	Stream         uint64       `json:"stream"`
	Node           string       `json:"node"` // the Node id of the first request
	Locality       *Locality    `json:"locality,omitempty"`
	UserAgent      string       `json:"userAgent,omitempty"`
	Peer           string       `json:"peer,omitempty"`
	ConnectedSince time.Time    `json:"connectedSince"`
	Types          []TypeStatus `json:"types"` // in LDS, RDS, CDS, EDS order

	node *corev3.Node // as the client sent it, for CSDS
}

// Locality is the client's Node locality.
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"subZone,omitempty"`
}

// TypeStatus is one client's state for one resource type.
type TypeStatus struct {
	Type      string    `json:"type"` // LDS, RDS, CDS, EDS
	TypeURL   string    `json:"typeUrl"`
	Requests  uint64    `json:"requests"`
	Responses uint64    `json:"responses"`
	ACKs      uint64    `json:"acks"`
	NACKs     uint64    `json:"nacks"`
	LastSent  *Response `json:"lastSent,omitempty"`
	LastACK   *Response `json:"lastAck,omitempty"`
	LastNACK  *NACK     `json:"lastNack,omitempty"`
	// Resources holds one entry per subscribed name, sorted by name.
	Resources []ResourceStatus `json:"resources"`
}

// Response identifies one response on a stream.
type Response struct {
	Version   string    `json:"version"`
	Nonce     string    `json:"nonce"`
	At        time.Time `json:"at"`
	Resources int       `json:"resources,omitempty"` // how many it carried (LastSent only)
}

// NACK is a rejected response.
type NACK struct {
	Version string    `json:"version,omitempty"` // of the rejected response
	Nonce   string    `json:"nonce"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// ResourceStatus is one subscribed name on one client.
type ResourceStatus struct {
	Name  string        `json:"name"`
	State ResourceState `json:"state"`
	// Version is the version_info of the response that last carried the
	// resource; empty when it was not sent.
	Version string    `json:"version,omitempty"`
	SentAt  time.Time `json:"sentAt,omitzero"`
	Error   string    `json:"error,omitempty"` // the NACK's message, when State is Error
	ErrorAt time.Time `json:"errorAt,omitzero"`
	// Absent: the agent currently has no resource by this name.
	Absent bool `json:"absent,omitempty"`
	// Resource is the resource as last sent, or, when it was not sent, as
	// the cache holds it now (nil when it has none).
	Resource *anypb.Any `json:"-"`
}

// Clients returns a snapshot of every open stream, sorted by node id and
// then by connection time.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()

	out := make([]ClientStatus, 0, len(streams))
	for _, st := range streams {
		out = append(out, st.info.snapshot(st.id))
	}
	s.cache.fill(out)
	slices.SortFunc(out, func(a, b ClientStatus) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), a.ConnectedSince.Compare(b.ConnectedSince), cmp.Compare(a.Stream, b.Stream))
	})
	return out
}

// fill completes resource statuses with what the cache holds now.
func (c *Cache) fill(clients []ClientStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range clients {
		for j := range clients[i].Types {
			ts := &clients[i].Types[j]
			for k := range ts.Resources {
				r := &ts.Resources[k]
				e := c.entries[key{ts.TypeURL, r.Name}]
				if e == nil || !e.resolved {
					continue
				}
				r.Absent = e.resource == nil
				if r.State == NotSent {
					r.Resource = e.resource
				}
			}
		}
	}
}

// clientInfo is a stream's summary. The stream's goroutine writes it (in
// handle and respond); Clients reads it; mu guards both.
type clientInfo struct {
	mu        sync.Mutex
	since     time.Time // set before the stream is registered, then constant
	peer      string    // likewise
	node      *corev3.Node
	userAgent string
	types     [len(addOrder)]*typeInfo // by typeIndex
}

type typeInfo struct {
	resources                        map[string]*resourceInfo // subscribed names
	peak                             int                      // of resources, see shrink.Map
	requests, responses, acks, nacks uint64
	lastSent, lastACK                Response // zero until there is one
	lastNACK                         *NACK
	// answered is the nonce of the latest response the client has answered
	// (ACK or NACK); every earlier one of this type was answered too, and
	// those not NACKed were accepted.
	answered uint64
}

// resourceInfo is what was last sent of one subscribed name.
type resourceInfo struct {
	version string // of the response; "" when not sent
	nonce   uint64 // of the response; 0 when not sent
	at      time.Time
	res     *anypb.Any

	nackNonce uint64 // the response carrying it was rejected when nackNonce == nonce
	nackErr   string
	nackAt    time.Time
}

func (ci *clientInfo) typ(typ string) *typeInfo {
	ti := &ci.types[typeIndex(typ)]
	if *ti == nil {
		*ti = &typeInfo{resources: map[string]*resourceInfo{}}
	}
	return *ti
}

// identify records the client's Node (trimmed, from the first request naming one).
func (ci *clientInfo) identify(n *corev3.Node) {
	ua := n.GetUserAgentName()
	if v := n.GetUserAgentVersion(); v != "" {
		ua = strings.TrimSpace(ua + " " + v)
	}
	ci.mu.Lock()
	ci.node, ci.userAgent = n, ua
	ci.mu.Unlock()
}

// requested records a request: its subscription changes, and what it says of
// the latest response of its type (nonce).
func (ci *clientInfo) requested(typ string, add, remove []string, v verdict, nonceText, errMsg string) {
	now := time.Now()
	ci.mu.Lock()
	defer ci.mu.Unlock()
	ti := ci.typ(typ)
	ti.requests++
	for _, n := range add {
		ti.resources[n] = &resourceInfo{}
	}
	for _, n := range remove {
		delete(ti.resources, n)
	}
	ti.resources = shrink.Map(ti.resources, &ti.peak)
	if v == noVerdict {
		return
	}
	nonce, _ := strconv.ParseUint(nonceText, 10, 64) // the server's own nonce, so it parses
	ti.answered = nonce
	if v == ack {
		ti.acks++
		ti.lastACK = Response{Version: ti.lastSent.Version, Nonce: nonceText, At: now}
		return
	}
	ti.nacks++
	errMsg = Clip(errMsg, maxNACKLen)
	ti.lastNACK = &NACK{Version: ti.lastSent.Version, Nonce: nonceText, Error: errMsg, At: now}
	// gRPC clients name the resources they reject in the error ("resource
	// "x": ..."): mark those; an error naming none rejects the whole response.
	var carried, named []*resourceInfo
	for name, r := range ti.resources {
		if r.nonce == nonce {
			carried = append(carried, r)
			if mentions(errMsg, name) {
				named = append(named, r)
			}
		}
	}
	if len(named) == 0 {
		named = carried
	}
	for _, r := range named {
		r.nackNonce, r.nackErr, r.nackAt = nonce, errMsg, now
	}
}

// maxNACKLen bounds a NACK's message as kept for the debug views.
const maxNACKLen = 4096

// mentions reports whether msg names the resource name as a whole word: not
// as a prefix of a longer name ("be1" in "be10") nor inside one.
func mentions(msg, name string) bool {
	for i := 0; name != ""; {
		j := strings.Index(msg[i:], name)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		if (start == 0 || !nameByte(msg[start-1])) && (end == len(msg) || !nameByte(msg[end]) ||
			(msg[end] == ':' && (end+1 == len(msg) || msg[end+1] == ' '))) {
			return true
		}
		i = start + 1
	}
	return false
}

// nameByte reports whether b can be part of a resource name.
func nameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
		strings.IndexByte("._-|/:", b) >= 0
}

// responded records a response that was sent: nonce and version, and what it
// carried. A full-state response tells the client that the subscribed names
// it leaves out do not exist.
func (ci *clientInfo) responded(typ, version string, nonce uint64, sent []sub, full bool) {
	now := time.Now()
	ci.mu.Lock()
	defer ci.mu.Unlock()
	ti := ci.typ(typ)
	ti.responses++
	ti.lastSent = Response{Version: version, Nonce: strconv.FormatUint(nonce, 10), At: now, Resources: len(sent)}
	for _, s := range sent {
		if r := ti.resources[s.name]; r != nil {
			r.version, r.nonce, r.at, r.res = version, nonce, now, s.entry.resource
		}
	}
	if full {
		for _, r := range ti.resources {
			if r.nonce != nonce {
				*r = resourceInfo{}
			}
		}
	}
}

// snapshot copies the summary.
func (ci *clientInfo) snapshot(id uint64) ClientStatus {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	cs := ClientStatus{
		Stream:         id,
		Node:           ci.node.GetId(),
		UserAgent:      ci.userAgent,
		Peer:           ci.peer,
		ConnectedSince: ci.since,
		Types:          make([]TypeStatus, 0, len(listOrder)),
		node:           ci.node,
	}
	if l := ci.node.GetLocality(); l != nil {
		cs.Locality = &Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubZone()}
	}
	for _, typ := range listOrder {
		ti := ci.types[typeIndex(typ)]
		if ti == nil {
			continue
		}
		ts := TypeStatus{
			Type: ShortType(typ), TypeURL: typ,
			Requests: ti.requests, Responses: ti.responses, ACKs: ti.acks, NACKs: ti.nacks,
			LastSent: nonZero(ti.lastSent), LastACK: nonZero(ti.lastACK), LastNACK: copyPtr(ti.lastNACK),
			Resources: make([]ResourceStatus, 0, len(ti.resources)),
		}
		for name, r := range ti.resources {
			rs := ResourceStatus{Name: name, Version: r.version, SentAt: r.at, Resource: r.res}
			switch {
			case r.nonce == 0:
				rs.State = NotSent
			case r.nackNonce == r.nonce:
				rs.State, rs.Error, rs.ErrorAt = Error, r.nackErr, r.nackAt
			case ti.answered >= r.nonce:
				rs.State = Synced
			default:
				rs.State = Stale
			}
			ts.Resources = append(ts.Resources, rs)
		}
		slices.SortFunc(ts.Resources, func(a, b ResourceStatus) int { return strings.Compare(a.Name, b.Name) })
		cs.Types = append(cs.Types, ts)
	}
	return cs
}

func nonZero(r Response) *Response {
	if r.Nonce == "" {
		return nil
	}
	return &r
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
