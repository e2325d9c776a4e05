package xds

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Limits bound what one client can make the agent hold. Zero values mean the
// defaults.
type Limits struct {
	// MaxNamesPerType bounds the names one stream subscribes to per type.
	MaxNamesPerType int
	// MaxNamesPerPeer bounds the names all streams from one IP subscribe to,
	// all types together: without it, many streams of one client multiply
	// MaxNamesPerType.
	MaxNamesPerPeer int
	// MaxNames bounds the names all streams subscribe to, all peers and
	// types together: without it, many addresses multiply MaxNamesPerPeer.
	MaxNames int
	// MaxStreamsPerPeer bounds the ADS streams open at once from one IP.
	MaxStreamsPerPeer int
	// MaxStreams bounds the ADS streams open at once in all.
	MaxStreams int
	// MaxConnsPerPeer and MaxConns bound open connections the same way
	// (see LimitListener).
	MaxConnsPerPeer, MaxConns int
	// MaxReadingBytes bounds the requests larger than the stream window
	// being read at once, in bytes, across all connections: each is held
	// until its last byte, and beyond this budget a connection is not read
	// until one finishes (see reading.go).
	MaxReadingBytes int
	// SendTimeout ends a stream whose client has not taken a response in
	// that long, with its connection: the response (and the goroutine
	// sending it) wait on a client that reads nothing.
	SendTimeout time.Duration
}

// DefaultLimits are generous for any real client: a gRPC channel subscribes
// to a few names per Service it calls, and a pod opens one stream per
// distinct bootstrap.
var DefaultLimits = Limits{
	MaxNamesPerType:   10000,
	MaxNamesPerPeer:   40000,
	MaxNames:          100000,
	MaxStreamsPerPeer: 100,
	MaxStreams:        5000,
	MaxConnsPerPeer:   100,
	MaxConns:          1000,
	SendTimeout:       30 * time.Second,
	// Sixteen requests of the largest size (serve.MaxRequestBytes) at once;
	// a well-behaved client's requests are smaller than the window.
	MaxReadingBytes: 16 << 20,
}

// WithDefaults returns l with each zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	orDefault(&l.MaxNamesPerType, d.MaxNamesPerType)
	orDefault(&l.MaxNamesPerPeer, d.MaxNamesPerPeer)
	orDefault(&l.MaxNames, d.MaxNames)
	orDefault(&l.MaxStreamsPerPeer, d.MaxStreamsPerPeer)
	orDefault(&l.MaxStreams, d.MaxStreams)
	orDefault(&l.MaxConnsPerPeer, d.MaxConnsPerPeer)
	orDefault(&l.MaxConns, d.MaxConns)
	orDefault(&l.MaxReadingBytes, d.MaxReadingBytes)
	orDefault(&l.SendTimeout, d.SendTimeout)
	return l
}

// orDefault sets a limit that is not positive to its default d.
func orDefault[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// Node metadata a client's bootstrap may carry; the only metadata kept.
const (
	// MetadataNodeName names the Kubernetes node the client runs on.
	MetadataNodeName = "nodexds.io/node-name"
	// MetadataNamespace names the client's namespace, for the Gateway API
	// routes of that namespace (consumer routes) when admission cannot tell.
	MetadataNamespace = "nodexds.io/namespace"
	// MetadataCertProvider names the certificate provider instance the
	// client's bootstrap defines (nodexds bootstrap --certs): only a client
	// that has it may be sent TLS settings naming it, or it would NACK them.
	MetadataCertProvider = "nodexds.io/certificate-provider"
)

// CertProvider is the certificate provider instance nodexds bootstrap
// --certs writes and the agent's TLS settings name.
const CertProvider = "nodexds"

var keptMetadataKeys = [...]string{MetadataNodeName, MetadataNamespace, MetadataCertProvider}

// Bounds of the client-supplied strings the agent keeps and logs.
const (
	maxIDLen  = 256 // node id, cluster, locality parts, node name
	maxLogLen = 160 // any client string in a log line
	// A resource name nodexds serves is a Service's DNS name (at most 253
	// bytes), a port and perhaps an endpoint picker's suffix: far less.
	maxNameLen = 512
)

// compact keeps of a request what the server reads, within bounds, so that a
// stream's state costs little more than its names: the Node trimmed, strings clipped, names longer than maxNameLen dropped (it
// reports how many; no Service has such a name, so they are answered as
// names that do not exist would be, by nothing).
func compact(req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryRequest, int) {
	out := &discoveryv3.DiscoveryRequest{
		VersionInfo:   Clip(req.GetVersionInfo(), maxIDLen),
		TypeUrl:       req.GetTypeUrl(),
		ResponseNonce: Clip(req.GetResponseNonce(), maxIDLen),
		ResourceNames: req.GetResourceNames(),
	}
	if n := req.GetNode(); n != nil {
		out.Node = trimNode(n)
	}
	if e := req.GetErrorDetail(); e != nil {
		out.ErrorDetail = &status.Status{Code: e.GetCode(), Message: Clip(e.GetMessage(), maxNACKLen)}
	}
	long := 0
	for _, n := range out.ResourceNames {
		if len(n) > maxNameLen {
			long++
		}
	}
	if long > 0 {
		out.ResourceNames = slices.DeleteFunc(slices.Clone(out.ResourceNames), func(n string) bool { return len(n) > maxNameLen })
	}
	return out, long
}

// trimNode keeps what nodexds reads of a client's Node — id, cluster,
// locality, user agent and the node name — so a client cannot make the agent
// hold a large metadata Struct for the life of its stream.
func trimNode(n *corev3.Node) *corev3.Node {
	out := &corev3.Node{
		Id:            Clip(n.GetId(), maxIDLen),
		Cluster:       Clip(n.GetCluster(), maxIDLen),
		UserAgentName: Clip(n.GetUserAgentName(), maxIDLen),
	}
	if v := n.GetUserAgentVersion(); v != "" {
		out.UserAgentVersionType = &corev3.Node_UserAgentVersion{UserAgentVersion: Clip(v, maxIDLen)}
	}
	if l := n.GetLocality(); l != nil {
		out.Locality = &corev3.Locality{
			Region: Clip(l.GetRegion(), maxIDLen), Zone: Clip(l.GetZone(), maxIDLen), SubZone: Clip(l.GetSubZone(), maxIDLen),
		}
	}
	for _, k := range keptMetadataKeys {
		if s, ok := n.GetMetadata().GetFields()[k].GetKind().(*structpb.Value_StringValue); ok {
			if out.Metadata == nil {
				out.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			}
			out.Metadata.Fields[k] = structpb.NewStringValue(Clip(s.StringValue, maxIDLen))
		}
	}
	return out
}

// localityAttr logs a client's locality as a group of its non-empty parts; a
// client that sent none gets no attribute (handlers drop empty groups).
func localityAttr(l *corev3.Locality) slog.Attr {
	var parts []any
	for _, p := range [][2]string{{"region", l.GetRegion()}, {"zone", l.GetZone()}, {"sub_zone", l.GetSubZone()}} {
		if p[1] != "" {
			parts = append(parts, p[0], p[1])
		}
	}
	return slog.Group("locality", parts...)
}

// Clip shortens s to at most n bytes (on a rune boundary), saying how long
// it was.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// limiter allows bursts of up to burst events, refilled at one per every.
type limiter struct {
	mu      sync.Mutex
	burst   float64
	every   time.Duration
	tokens  float64
	last    time.Time
	dropped int
}

func newLimiter(burst int, every time.Duration) *limiter {
	return &limiter{burst: float64(burst), every: every, tokens: float64(burst)}
}

// allow takes a token if there is one; it also returns how many events were
// refused since the last one allowed.
func (l *limiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.last))/float64(l.every))
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false, 0
	}
	l.tokens--
	d := l.dropped
	l.dropped = 0
	return true, d
}

// clientLog logs about one client: rate-limited per stream and across all
// streams, so no client, or crowd of clients, can fill the agent's logs.
type clientLog struct {
	log            *slog.Logger
	stream, global *limiter
}

func (l clientLog) at(level slog.Level, msg string, args ...any) {
	now := time.Now()
	ok, dropped := l.stream.allow(now)
	if !ok {
		return
	}
	gok, gdropped := l.global.allow(now)
	if !gok {
		return
	}
	if dropped+gdropped > 0 {
		args = append(args, "suppressed", dropped+gdropped)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
