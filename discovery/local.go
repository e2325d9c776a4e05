package discovery

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// Selection is a Service port that selects a server: a Service whose
// EndpointSlices list the server's address and target port.
type Selection struct {
	Service ServiceKey
	Port    Port // the Service's port, name and number
}

// localIndex finds, by address, the slices that list an endpoint on the
// agent's own node. Only those endpoints are indexed: on a cluster of N
// nodes about 1/N of them, so its memory is this node's pods, not the
// cluster's.
type localIndex struct {
	node   string // "": nothing is indexed
	byAddr map[netip.Addr][]*Slice
	// positions holds, for each slice with local endpoints, where they are
	// in its Endpoints, sorted by address: a slice replaced or deleted is
	// taken out of the index without reading all its endpoints again (long
	// out of the CPU's caches by then).
	positions map[*Slice][]int32
}

// SetLocalNode names the agent's own node: from then on the store indexes
// the slice endpoints on it (Selecting, Change.Local). It is meant to be
// called once, before the first Apply; a later call re-indexes what the
// store holds and reports no Change. "" disables the index.
func (s *Store) SetLocalNode(node string) {
	s.local = localIndex{node: intern(node)}
	if node == "" {
		return
	}
	s.local.byAddr, s.local.positions = map[netip.Addr][]*Slice{}, map[*Slice][]int32{}
	for _, bySlice := range s.slices {
		for _, sl := range bySlice {
			s.local.update(nil, sl)
		}
	}
}

// Selecting returns the Service ports that select ap as a server: the
// Services whose slices list ap's address as an endpoint on the local node
// (SetLocalNode) with a slice port (the target port) numbered ap's port,
// each joined to the Service port of the slice port's name (slices name
// their ports after the Service's; see slicePort). Only slices of the
// Service's served IP family count (servedFamily), and only Services the
// store holds. An endpoint counts whatever its conditions: a server not
// ready yet, or being drained (not serving, terminating), is still its
// Services' member, and keeps their policy until its slices drop it.
//
// The result is sorted by Service, then port number and name, each once
// (controllers briefly list an endpoint in two slices); nil when nothing
// selects ap, and always when no local node is set. Its cost is the slices
// listing ap's address, whatever the size of the cluster.
func (s *Store) Selecting(ap netip.AddrPort) []Selection {
	if ap.Port() == 0 {
		return nil
	}
	var out []Selection
	for _, sl := range s.local.byAddr[ap.Addr().Unmap().WithZone("")] {
		svc := s.services[sl.Service]
		if svc == nil || sl.AddressType != servedFamily(svc, s.slices[sl.Service]) {
			continue
		}
		for _, p := range sl.Ports {
			if p.Port != int32(ap.Port()) {
				continue
			}
			for _, sp := range svc.Ports {
				if sp.Name == p.Name {
					out = append(out, Selection{Service: sl.Service, Port: sp})
				}
			}
		}
	}
	slices.SortFunc(out, compareSelections)
	return slices.Compact(out)
}

func compareSelections(a, b Selection) int {
	return cmp.Or(a.Service.Compare(b.Service), cmp.Compare(a.Port.Port, b.Port.Port), strings.Compare(a.Port.Name, b.Port.Name))
}

// update replaces prev by next in the index (either may be nil: a slice
// added, deleted) and returns the addresses of local endpoints added,
// removed or changed, sorted, each once. Every local endpoint of either
// counts as changed when the slice's Service, address type or ports
// differ. Its cost is next's endpoints, and the local ones of prev; it
// allocates only for local endpoints.
func (x *localIndex) update(prev, next *Slice) []netip.Addr {
	if x.node == "" {
		return nil
	}
	prevs := x.positions[prev]
	nexts := x.locals(next)
	if len(prevs)+len(nexts) == 0 {
		return nil
	}
	delete(x.positions, prev)
	if len(nexts) > 0 {
		x.positions[next] = nexts
	}
	whole := prev == nil || next == nil || prev.Service != next.Service || prev.AddressType != next.AddressType ||
		!slices.Equal(prev.Ports, next.Ports)
	// Merge the two lists by address: what only one has was added or
	// removed; what both have changed if its endpoint did (duplicates pair
	// up in some order, and a pair that differs counts: reporting an
	// address too many is harmless, one too few is not).
	var out []netip.Addr
	for i, j := 0, 0; i < len(prevs) || j < len(nexts); {
		var o, n *SliceEndpoint
		if i < len(prevs) {
			o = &prev.Endpoints[prevs[i]]
		}
		if j < len(nexts) {
			n = &next.Endpoints[nexts[j]]
		}
		switch {
		case n == nil || (o != nil && o.Addr.Less(n.Addr)):
			x.remove(o.Addr, prev)
			out = append(out, o.Addr)
			i++
		case o == nil || n.Addr.Less(o.Addr):
			x.add(n.Addr, next)
			out = append(out, n.Addr)
			j++
		default:
			x.replace(n.Addr, prev, next)
			if whole || !sameEndpoint(o, n) {
				out = append(out, n.Addr)
			}
			i++
			j++
		}
	}
	return slices.Compact(out)
}

// locals returns the positions of sl's endpoints on the local node, sorted
// by address; nil for none.
func (x *localIndex) locals(sl *Slice) []int32 {
	if sl == nil {
		return nil
	}
	var buf [16]int32
	found := buf[:0]
	for i := range sl.Endpoints {
		if sl.Endpoints[i].Node == x.node {
			found = append(found, int32(i))
		}
	}
	if len(found) == 0 {
		return nil
	}
	out := slices.Clip(append([]int32(nil), found...)) // kept while sl is
	slices.SortFunc(out, func(a, b int32) int { return sl.Endpoints[a].Addr.Compare(sl.Endpoints[b].Addr) })
	return out
}

// sameEndpoint reports whether two endpoints are equal, their hints by
// value.
func sameEndpoint(a, b *SliceEndpoint) bool {
	x, y := *a, *b
	x.Hints, y.Hints = nil, nil
	return x == y && slices.Equal(a.Hints.ForZones(), b.Hints.ForZones()) && slices.Equal(a.Hints.ForNodes(), b.Hints.ForNodes())
}

func (x *localIndex) add(a netip.Addr, sl *Slice) {
	refs := x.byAddr[a]
	if !slices.Contains(refs, sl) {
		x.byAddr[a] = append(refs, sl)
	}
}

// replace puts next where prev was among the slices listing a: the common
// case of a slice update, without writing the map.
func (x *localIndex) replace(a netip.Addr, prev, next *Slice) {
	refs := x.byAddr[a]
	if i := slices.Index(refs, prev); i >= 0 && !slices.Contains(refs, next) {
		refs[i] = next
		return
	}
	x.remove(a, prev)
	x.add(a, next)
}

func (x *localIndex) remove(a netip.Addr, sl *Slice) {
	refs := x.byAddr[a]
	i := slices.Index(refs, sl)
	switch {
	case i < 0:
		return
	case len(refs) == 1:
		delete(x.byAddr, a)
	default:
		x.byAddr[a] = slices.Delete(refs, i, i+1)
	}
}
