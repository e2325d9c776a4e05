package names

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Resource is the name of a resource the agent hands out, in its parts. The
// one format, written by String and read by ParseResource and ParseListener:
//
//	base[@view][~client][|endpoint|IP:PORT or |none][!gen][#no-ring-hash][#mtls][#late]
//
// For a route configuration, cluster or load assignment, base is a Service
// port's canonical name (Parser.Canonical); for a listener it is the name the
// client dialled, and only a view and a client namespace may follow it.
type Resource struct {
	Base string
	// View is the node whose view the name is of (gRFC A71 fallback: this
	// agent answering another node's client); "" for the agent's own.
	View string
	// Client is the namespace of the clients a listener or route
	// configuration is for, when the Gateway API routes of that namespace
	// (consumer routes) route the Service; "" for everyone else.
	Client string
	// Subset is which of the endpoint picker's clusters the name is, if any.
	Subset Subset
	// Endpoint is the picked endpoint when Subset is OneEndpoint.
	Endpoint netip.AddrPort
	// Gen is the generation of a cluster (and its load assignment) handed
	// to clients that redial when their TLS settings change: a new one, a
	// Unix time, for each move of its Service between plaintext and TLS
	// (latetls.go), since to those clients a new name is a new cluster,
	// whose calls wait for its endpoints. 0: the Service has not moved.
	Gen uint32
	// NoRingHash marks the cache name of a cluster served with round_robin to
	// a client that crashes on ring_hash. Clients never see this mark: it is
	// how their variant is cached apart.
	NoRingHash bool
	// MTLS marks the cache name of a cluster for clients whose bootstrap
	// has nodexds' certificate provider: only they may be sent TLS
	// settings naming it (the others would NACK them). Cache-only too.
	MTLS bool
	// LateTLS marks the cache name of a cluster or route configuration for
	// mTLS clients that dial anew as soon as their TLS settings change
	// (grpc-js-xds, C-core): they are moved between plaintext and TLS with
	// the servers, not before them. Cache-only.
	LateTLS bool
}

// Subset tells the Service port's own resources from the endpoint picker's.
type Subset uint8

const (
	// AllEndpoints: the Service port's own resource.
	AllEndpoints Subset = iota
	// NoEndpoint: the picker's cluster for requests that name no member,
	// when the Service fails them closed.
	NoEndpoint
	// OneEndpoint: the picker's cluster of one member, Resource.Endpoint.
	OneEndpoint
)

// Separators of the parts. Kubernetes names, node names and IP:port strings
// never contain them.
const (
	viewSep        = "@"
	clientSep      = "~"
	subsetSep      = "|"
	subsetEndpoint = "endpoint|"
	subsetNone     = "none"
	genSep         = "!"
	noRingHash     = "#no-ring-hash"
	mtls           = "#mtls"
	lateTLS        = "#late"
)

func (r Resource) String() string {
	var b strings.Builder
	b.Grow(len(r.Base) + len(r.View) + 40)
	b.WriteString(r.Base)
	if r.View != "" {
		b.WriteString(viewSep)
		b.WriteString(r.View)
	}
	if r.Client != "" {
		b.WriteString(clientSep)
		b.WriteString(r.Client)
	}
	switch r.Subset {
	case NoEndpoint:
		b.WriteString(subsetSep + subsetNone)
	case OneEndpoint:
		b.WriteString(subsetSep + subsetEndpoint)
		b.WriteString(r.Endpoint.String())
	}
	if r.Gen != 0 {
		b.WriteString(genSep)
		b.WriteString(strconv.FormatUint(uint64(r.Gen), 10))
	}
	if r.NoRingHash {
		b.WriteString(noRingHash)
	}
	if r.MTLS {
		b.WriteString(mtls)
	}
	if r.LateTLS {
		b.WriteString(lateTLS)
	}
	return b.String()
}

// Port is the Service port's own resource of the same view: what a picker's
// cluster belongs to, without its generation, the cache-only marks or a
// client namespace.
func (r Resource) Port() Resource { return Resource{Base: r.Base, View: r.View} }

var errNotHandedOut = errors.New("not a name this agent hands out")

// ParseResource reads a route, cluster or load assignment name. It checks
// the format only (whether base is a canonical Service port name is the
// Parser's to say), and accepts each resource under its one spelling: a name
// that String would write differently is refused.
func ParseResource(name string) (Resource, error) {
	if len(name) > maxResourceLen {
		return Resource{}, fmt.Errorf("name of %d bytes: %w", len(name), errNotHandedOut)
	}
	var r Resource
	rest, late := strings.CutSuffix(name, lateTLS)
	r.LateTLS = late
	rest, secure := strings.CutSuffix(rest, mtls)
	r.MTLS = secure
	rest, compat := strings.CutSuffix(rest, noRingHash)
	r.NoRingHash = compat
	rest, gen, hasGen := strings.Cut(rest, genSep)
	if hasGen {
		n, err := strconv.ParseUint(gen, 10, 32)
		if err != nil || n == 0 || strconv.FormatUint(n, 10) != gen { // one spelling per generation
			return Resource{}, fmt.Errorf("%q: %w", name, errNotHandedOut)
		}
		r.Gen = uint32(n)
	}
	rest, subset, hasSubset := strings.Cut(rest, subsetSep)
	var hasClient, hasView bool
	rest, r.Client, hasClient = strings.Cut(rest, clientSep)
	r.Base, r.View, hasView = strings.Cut(rest, viewSep)
	switch a, one := strings.CutPrefix(subset, subsetEndpoint); {
	case !hasSubset:
	case subset == subsetNone:
		r.Subset = NoEndpoint
	case one:
		ep, err := netip.ParseAddrPort(a)
		if err != nil || ep.String() != a { // one spelling per endpoint
			return Resource{}, fmt.Errorf("%q: %w", name, errNotHandedOut)
		}
		r.Subset, r.Endpoint = OneEndpoint, ep
	default:
		return Resource{}, fmt.Errorf("%q: %w", name, errNotHandedOut)
	}
	if r.Base == "" || strings.Contains(r.Base, "#") || hasView && r.View == "" || hasClient && r.Client == "" || strings.ContainsAny(r.View, viewSep+"#") || strings.ContainsAny(r.Client, clientSep+"#") {
		return Resource{}, fmt.Errorf("%q: %w", name, errNotHandedOut)
	}
	return r, nil
}

// maxResourceLen bounds the names ParseResource reads: a canonical name is a
// Service's DNS name (at most 253 bytes) and a port, a view is a node name
// (at most 253), an endpoint at most 47 bytes.
const maxResourceLen = 1024

// ParseListener reads a listener name: the name a client dialled, and the
// view it is cached under. It never fails; whether the dialled name resolves
// is the Parser's to say.
func ParseListener(name string) Resource {
	rest, client, _ := strings.Cut(name, clientSep)
	base, view, _ := strings.Cut(rest, viewSep)
	return Resource{Base: base, View: view, Client: client}
}
