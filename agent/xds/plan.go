package xds

import (
	"hash/fnv"
	"slices"
)

// toldAbsent is what a stream records for a name whose absence its client
// has been told (or, for Routes and Endpoints, which cannot say so, for a
// name it has nothing to send for). Versions are hex hashes, never this.
const toldAbsent = "-"

// sub is one subscribed name and what the cache holds for it now.
type sub struct {
	name  string // as the client knows it
	key   string // as the cache does; see Options.Key
	entry entry
}

// typeInput is one stream's state for one type, as plan needs it.
type typeInput struct {
	typ  string
	subs []sub // subscribed names, sorted, with their cache entries
	// told is what the stream has told its client per name: the version it
	// last sent, or toldAbsent. Names never told anything are missing.
	told map[string]string
	// digest sums the present resources in told (see digestOf): what the
	// type's version is made of, kept so a response carrying one changed
	// Route or Endpoint costs O(1), not O(names subscribed).
	digest uint64
}

// response is one DiscoveryResponse to send.
type response struct {
	typ       string
	version   string // hash of every subscribed resource present now
	resources []sub  // what it carries
	adds      bool   // it carries a resource the client does not have as is
}

// plan decides which responses a stream sends for the types in ins, in
// make-before-break order: responses that add or change resources first,
// clusters before endpoints before listeners before routes, then responses
// that only remove, in the reverse order.
//
// A name the agent has not resolved yet is left out of every response and
// holds nothing back: the other names are answered as they are. Once it is
// resolved, the next plan answers it.
func plan(ins []typeInput) []response {
	var byType [len(addOrder)]*response // in addOrder
	for _, in := range ins {
		if r, ok := decide(in); ok {
			byType[slices.Index(addOrder[:], in.typ)] = &r
		}
	}
	var out []response
	for _, r := range byType {
		if r != nil && r.adds {
			out = append(out, *r)
		}
	}
	for i := len(byType) - 1; i >= 0; i-- {
		if r := byType[i]; r != nil && !r.adds {
			out = append(out, *r)
		}
	}
	return out
}

// decide returns the response one type's state calls for, if any.
//
// Listeners and Clusters are full state: every response carries every
// subscribed resource that exists, and one is owed when a resource changed,
// one the client had is gone, or a name is newly known not to exist. Routes
// and Endpoints carry only what changed: a name missing from a response
// says nothing.
func decide(in typeInput) (response, bool) {
	var present, changed []sub
	var gone, unsaid bool
	for _, s := range in.subs {
		if !s.entry.resolved {
			continue
		}
		prev, told := in.told[s.name]
		switch {
		case s.entry.resource != nil:
			present = append(present, s)
			if !told || prev != s.entry.version {
				changed = append(changed, s)
			}
		case !told:
			unsaid = true
		case prev != toldAbsent:
			gone = true
		}
	}
	r := response{typ: in.typ, adds: len(changed) > 0}
	switch {
	case fullState(in.typ) && (len(changed) > 0 || gone || unsaid):
		r.resources = present
	case !fullState(in.typ) && len(changed) > 0:
		r.resources = changed
	default:
		return response{}, false
	}
	r.version = typeVersion(digestAfter(in.digest, in.told, in.subs))
	return r, true
}

// recordTold records in told what the stream's client knows after the plan for
// subs was carried out: every resolved name as it stands now. It returns the
// digest of told after that.
func recordTold(told map[string]string, subs []sub, digest uint64) uint64 {
	digest = digestAfter(digest, told, subs)
	for _, s := range subs {
		switch {
		case !s.entry.resolved:
		case s.entry.resource == nil:
			told[s.name] = toldAbsent
		default:
			told[s.name] = s.entry.version
		}
	}
	return digest
}

// digestAfter is the digest told will have once recordTold has recorded subs.
func digestAfter(digest uint64, told map[string]string, subs []sub) uint64 {
	for _, s := range subs {
		if !s.entry.resolved {
			continue
		}
		if prev, ok := told[s.name]; ok && prev != toldAbsent {
			digest ^= digestOf(s.name, prev)
		}
		if s.entry.resource != nil {
			digest ^= digestOf(s.name, s.entry.version)
		}
	}
	return digest
}

// digestOf is one present resource's share of its type's version. The
// version is the XOR of the shares of every resource the client holds: equal
// state gives equal versions on any agent, restarted or not, whatever the
// order, and one resource's change updates it in O(1).
func digestOf(name, version string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(version))
	return h.Sum64()
}

// typeVersion renders a digest as a response's version_info: 16 hex digits.
func typeVersion(digest uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[digest&15]
		digest >>= 4
	}
	return string(b[:])
}
