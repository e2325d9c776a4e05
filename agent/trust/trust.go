// Package trust decides who may call whom: a Service's mTLS mode, the
// identities its servers accept calls from, and the identities its clients
// accept from its servers. Identities are SPIFFE IDs of Kubernetes service
// accounts, spiffe://<trust domain>/ns/<namespace>/sa/<service account>, as
// cert-manager's csi-driver-spiffe issues them.
//
// Everything here is a pure function of its arguments.
package trust

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodexds/nodexds/discovery"
)

// Annotations read by this package, on a Service or (as the default for its
// Services) on a Namespace.
const (
	AnnotationMTLS             = discovery.AnnotationPrefix + "mtls"
	AnnotationAllowFrom        = discovery.AnnotationPrefix + "allow-from"
	AnnotationServerIdentities = discovery.AnnotationPrefix + "server-identities"
)

// DefaultTrustDomain is the trust domain of csi-driver-spiffe's default
// issuer, and of nodexds serve --trust-domain unless told otherwise.
const DefaultTrustDomain = "cluster.local"

// maxIdentities bounds a list annotation: a policy is read on every change
// of its Service, and becomes matchers every client and server evaluates.
const maxIdentities = 64

// Mode is how a Service's calls are secured.
type Mode uint8

const (
	// Disabled: plaintext, no identities, no authorization.
	Disabled Mode = iota
	// Permissive: clients use mTLS; servers accept TLS with or without a
	// client certificate and authorize every call. The step between
	// Disabled and Strict.
	Permissive
	// Strict: servers require a client certificate and accept only the
	// calls of allowed identities (PERMISSION_DENIED for the others).
	Strict
)

var modeNames = [...]string{Disabled: "disabled", Permissive: "permissive", Strict: "strict"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", m)
}

// TLS reports whether the mode's connections are TLS.
func (m Mode) TLS() bool { return m != Disabled }

// Peer is one entry of an allow list: a service account of a namespace,
// every service account of a namespace (ServiceAccount ""), or every
// identity of the trust domain (both "").
type Peer struct{ Namespace, ServiceAccount string }

func (p Peer) String() string {
	switch {
	case p.Namespace == "":
		return "*"
	case p.ServiceAccount == "":
		return p.Namespace + "/*"
	}
	return p.Namespace + "/" + p.ServiceAccount
}

// Policy is one Service's.
type Policy struct {
	Mode Mode
	// AllowFrom are the callers its servers accept in Strict mode; never
	// empty (the default is every identity of the trust domain).
	AllowFrom []Peer
	// ServerIdentities are the service accounts of the Service's namespace
	// its clients accept as its servers; nil: any of that namespace.
	ServerIdentities []string
	// Namespace is the Service's.
	Namespace string
}

// anyone is the default allow list.
var anyone = []Peer{{}}

// PolicyFor reads a Service's policy from its annotations, each falling back
// to its namespace's (nsAnnotations, nil when none) and then to the default.
// What cannot be read is returned as errors and replaced by the fallback.
func PolicyFor(namespace string, svcAnnotations, nsAnnotations map[string]string) (Policy, []*discovery.AnnotationError) {
	p := Policy{Mode: Disabled, AllowFrom: anyone, Namespace: namespace}
	var errs []*discovery.AnnotationError
	read := func(key string, parse func(string) error) {
		for i, a := range [...]map[string]string{svcAnnotations, nsAnnotations} {
			v, ok := a[key]
			if !ok {
				continue
			}
			err := parse(v)
			if err == nil {
				return
			}
			if i == 1 {
				err = fmt.Errorf("the namespace's default: %w", err)
			}
			errs = append(errs, &discovery.AnnotationError{Key: key, Value: v, Err: err})
		}
	}
	read(AnnotationMTLS, func(v string) (err error) { p.Mode, err = ParseMode(v); return err })
	read(AnnotationAllowFrom, func(v string) (err error) {
		l, err := ParseAllowFrom(v)
		if err == nil {
			p.AllowFrom = l
		}
		return err
	})
	read(AnnotationServerIdentities, func(v string) (err error) {
		l, err := ParseServerIdentities(v)
		if err == nil {
			p.ServerIdentities = l
		}
		return err
	})
	return p, errs
}

// ParseMode reads nodexds.io/mtls.
func ParseMode(s string) (Mode, error) {
	for m, n := range modeNames {
		if strings.TrimSpace(s) == n {
			return Mode(m), nil
		}
	}
	return Disabled, fmt.Errorf("unknown mode %q (want disabled, permissive or strict)", s)
}

// ParseAllowFrom reads nodexds.io/allow-from: a comma-separated list of
// "namespace/serviceaccount", "namespace/*" or "*". The result is sorted,
// without duplicates; "*" makes every other entry moot.
func ParseAllowFrom(s string) ([]Peer, error) {
	out, err := parseList(s, "identities", `no identities (to allow every identity of the trust domain, write "*")`, parsePeer)
	if err != nil {
		return nil, err
	}
	if slices.Contains(out, Peer{}) {
		return anyone, nil
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.String(), b.String()) })
	out = slices.Compact(out)
	// A namespace's "*" covers its service accounts.
	return slices.DeleteFunc(out, func(p Peer) bool {
		return p.ServiceAccount != "" && slices.Contains(out, Peer{Namespace: p.Namespace})
	}), nil
}

// parsePeer reads one entry of an allow list; "*" is the zero Peer.
func parsePeer(f string) (Peer, error) {
	if f == "*" {
		return Peer{}, nil
	}
	ns, sa, ok := strings.Cut(f, "/")
	if !ok {
		return Peer{}, fmt.Errorf("%q: want namespace/serviceaccount, namespace/* or *", f)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return Peer{}, fmt.Errorf("%q: namespace %q: %s", f, ns, errs[0])
	}
	if sa == "*" {
		return Peer{Namespace: ns}, nil
	}
	if errs := validation.IsDNS1123Subdomain(sa); len(errs) > 0 {
		return Peer{}, fmt.Errorf("%q: service account %q: %s", f, sa, errs[0])
	}
	return Peer{Namespace: ns, ServiceAccount: sa}, nil
}

// ParseServerIdentities reads nodexds.io/server-identities: service
// accounts of the Service's namespace, comma-separated.
func ParseServerIdentities(s string) ([]string, error) {
	out, err := parseList(s, "service accounts", "no service accounts", func(f string) (string, error) {
		if errs := validation.IsDNS1123Subdomain(f); len(errs) > 0 {
			return "", fmt.Errorf("service account %q: %s", f, errs[0])
		}
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseList reads a comma-separated list of at most maxIdentities entries,
// at least one, each read by parse.
func parseList[T any](s, what, none string, parse func(string) (T, error)) ([]T, error) {
	fields := splitList(s)
	switch {
	case len(fields) == 0:
		return nil, errors.New(none)
	case len(fields) > maxIdentities:
		return nil, fmt.Errorf("%d %s, more than %d", len(fields), what, maxIdentities)
	}
	out := make([]T, 0, len(fields))
	for _, f := range fields {
		v, err := parse(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ID is the SPIFFE ID of a service account.
func ID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// Match is how a SPIFFE ID is matched: exactly, or by prefix.
type Match struct {
	Value  string
	Prefix bool
}

// String spells the match as people read it: the ID, or its prefix and "*".
func (m Match) String() string {
	if m.Prefix {
		return m.Value + "*"
	}
	return m.Value
}

// Matches reports whether the SPIFFE ID id is matched.
func (m Match) Matches(id string) bool {
	if m.Prefix {
		return strings.HasPrefix(id, m.Value)
	}
	return id == m.Value
}

// SpellMatches spells matches as one string, each as Match.String spells
// it, space-separated (a SPIFFE ID has no space): the form in which a
// health check target carries the server identities it accepts.
func SpellMatches(ms []Match) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return strings.Join(out, " ")
}

// ParseMatches reads what SpellMatches wrote.
func ParseMatches(s string) ([]Match, error) {
	var out []Match
	for _, f := range strings.Fields(s) {
		v, prefix := strings.CutSuffix(f, "*")
		if !strings.HasPrefix(v, "spiffe://") {
			return nil, fmt.Errorf("%q is not a SPIFFE ID match", f)
		}
		out = append(out, Match{Value: v, Prefix: prefix})
	}
	if len(out) == 0 {
		return nil, errors.New("no SPIFFE ID match")
	}
	return out, nil
}

// Matches are the peer's identities a list stands for, as URI SAN matchers.
func (p Peer) Matches(trustDomain string) Match {
	switch {
	case p.Namespace == "":
		return Match{Value: "spiffe://" + trustDomain + "/", Prefix: true}
	case p.ServiceAccount == "":
		return Match{Value: "spiffe://" + trustDomain + "/ns/" + p.Namespace + "/sa/", Prefix: true}
	}
	return Match{Value: ID(trustDomain, p.Namespace, p.ServiceAccount)}
}

// ServerMatches are what a client of the Service accepts as its server's
// identity.
func (p Policy) ServerMatches(trustDomain string) []Match {
	if len(p.ServerIdentities) == 0 {
		return []Match{Peer{Namespace: p.Namespace}.Matches(trustDomain)}
	}
	out := make([]Match, len(p.ServerIdentities))
	for i, sa := range p.ServerIdentities {
		out[i] = Match{Value: ID(trustDomain, p.Namespace, sa)}
	}
	return out
}

// Server is what one server port enforces: the policies of the Services
// that select it, merged so that none of them is weakened. A server cannot
// tell which Service a call came through, so the strictest mode applies, and
// in Strict mode a call must be allowed by every Service's list.
type Server struct {
	Mode Mode
	// Allow are the Services' allow lists, deduplicated: a caller must
	// match one entry of each. Empty unless Mode is Strict.
	Allow [][]Peer
}

// AllowMatches are the allow lists as SPIFFE ID matchers, for the server's
// authorization.
func (s Server) AllowMatches(trustDomain string) [][]Match {
	out := make([][]Match, len(s.Allow))
	for i, l := range s.Allow {
		for _, p := range l {
			out[i] = append(out[i], p.Matches(trustDomain))
		}
	}
	return out
}

// ServerPolicy merges the policies of the Services selecting one server
// port (or its namespace's default, when none does).
func ServerPolicy(ps []Policy) Server {
	var s Server
	for _, p := range ps {
		s.Mode = max(s.Mode, p.Mode)
	}
	if s.Mode != Strict {
		return s
	}
	for _, p := range ps {
		if !slices.ContainsFunc(s.Allow, func(l []Peer) bool { return slices.Equal(l, p.AllowFrom) }) {
			s.Allow = append(s.Allow, p.AllowFrom)
		}
	}
	slices.SortFunc(s.Allow, func(a, b []Peer) int {
		return slices.CompareFunc(a, b, func(x, y Peer) int { return strings.Compare(x.String(), y.String()) })
	})
	return s
}
