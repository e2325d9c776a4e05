package xds

import (
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// The decisions a request calls for, as pure functions of the request and
// of what the stream knows: handle carries them out.

// meaning is what a request says of the latest response of its type. A
// request ACKs or NACKs only that response, and only once: clients repeat
// the nonce on later requests.
type meaning int

const (
	initial      meaning = iota // names no response: the first request of its type, or one sent before any response
	stale                       // names another nonce than the latest response's: older, or never sent
	repeated                    // names the latest nonce again, after it was ACKed or NACKed
	acked                       // accepts the latest response
	nacked                      // rejects the latest response
	otherVersion                // names the latest nonce with another version and no error: changes subscriptions only
)

// verdict is what a request says about the latest response of its type.
type verdict int

const (
	noVerdict verdict = iota // first request, or a stale nonce: says nothing
	ack
	nack
)

// verdict is what m counts as.
func (m meaning) verdict() verdict {
	switch m {
	case acked:
		return ack
	case nacked:
		return nack
	}
	return noVerdict
}

// latest is what a stream last sent of one type, as requests answer it.
type latest struct {
	nonce    string // of the latest response; "" before any
	version  string // its version
	answered string // the nonce last ACKed or NACKed
}

// meaningOf is what req says of l.
func meaningOf(req *discoveryv3.DiscoveryRequest, l latest) meaning {
	nonce := req.GetResponseNonce()
	switch {
	case nonce == "":
		return initial
	case nonce != l.nonce:
		return stale
	case nonce == l.answered:
		return repeated
	case req.GetErrorDetail() != nil:
		return nacked
	case req.GetVersionInfo() == l.version:
		// An ACK echoes the response's version; a request that only changes
		// subscriptions after a NACK carries its nonce with an older version.
		return acked
	}
	return otherVersion
}

// wildcard reports whether a request of type typ naming names is a wildcard
// subscription; named says whether an earlier request of the type named
// resources. In the xDS protocol a first LDS or CDS request naming nothing,
// or "*", is one: every Listener (every Service in the cluster). gRPC
// clients never send one.
func wildcard(typ string, names []string, named bool) bool {
	return fullState(typ) && (slices.Contains(names, "*") || (!named && len(names) == 0))
}

// diffNames is the subscription a request naming names makes of cur: each
// name once (valued 0), the names it adds, in the request's order, and the
// names it removes, in no order.
func diffNames(cur map[string]uint64, names []string) (next map[string]uint64, add, remove []string) {
	next = make(map[string]uint64, len(names))
	for _, n := range names {
		if _, dup := next[n]; dup {
			continue
		}
		next[n] = 0
		if _, ok := cur[n]; !ok {
			add = append(add, n)
		}
	}
	for n := range cur {
		if _, ok := next[n]; !ok {
			remove = append(remove, n)
		}
	}
	return next, add, remove
}
