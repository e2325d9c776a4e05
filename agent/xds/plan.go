package xds

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
	byType := map[string]*response{}
	for _, in := range ins {
		if r, ok := decide(in); ok {
			byType[in.typ] = &r
		}
	}
	var out []response
	for _, typ := range addOrder {
		if r := byType[typ]; r != nil && r.adds {
			out = append(out, *r)
		}
	}
	for i := len(addOrder) - 1; i >= 0; i-- {
		if r := byType[addOrder[i]]; r != nil && !r.adds {
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
	r.version = typeVersion(present)
	return r, true
}

// settle records in told what the stream's client knows after the plan for
// subs was carried out: every resolved name as it stands now.
func settle(told map[string]string, subs []sub) {
	for _, s := range subs {
		switch {
		case !s.entry.resolved:
		case s.entry.resource == nil:
			told[s.name] = toldAbsent
		default:
			told[s.name] = s.entry.version
		}
	}
}

// typeVersion is a hash of the names and versions of every present resource,
// so equal state gives equal versions on any agent, restarted or not.
func typeVersion(present []sub) string {
	var sig []byte
	for _, s := range present {
		sig = append(sig, s.name...)
		sig = append(sig, 0)
		sig = append(sig, s.entry.version...)
		sig = append(sig, 0)
	}
	return hash(sig)
}
