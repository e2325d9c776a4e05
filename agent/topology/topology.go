package topology

import (
	"slices"

	"github.com/nodexds/nodexds/discovery"
)

// Here is where the agent's node sits.
type Here struct {
	Node, Zone, Region string
}

// Priority is one EDS priority: the endpoints of one or more merged tiers.
type Priority struct {
	Tiers     Tiers
	Endpoints []discovery.Endpoint
}

// Prioritize orders a Service port's endpoints for clients on here's node.
// The result has one Priority per non-empty tier (after merging tiers smaller
// than p.MinTierEndpoints into the next), highest first, so priorities are
// always contiguous. It is nil when no endpoint may be used: none is usable,
// or the policy is strict and no endpoint falls into its tiers.
//
// Usable endpoints are the ready ones; serving-but-terminating ones only when
// nothing is ready (like kube-proxy, so a rolling update never drops traffic).
// A strict policy decides that among the endpoints inside its tiers: a Local
// Service whose only local pod is terminating keeps using it while it serves,
// even if ready pods exist on other nodes it may never reach.
func Prioritize(eps []discovery.Endpoint, p Policy, here Here) []Priority {
	var hints hints
	if !p.IgnoreHints {
		hints = hintsUsable(eps, here)
	}
	if p.Tiers.Strict() {
		eps = filter(eps, func(e *discovery.Endpoint) bool {
			return slices.ContainsFunc(p.Tiers, func(t Tier) bool { return inTier(e, t, here, hints) })
		})
	}
	eps = usable(eps)
	if len(eps) == 0 {
		return nil
	}

	// Each endpoint's tier is the first of p.Tiers it falls into (-1: none,
	// and it is not used). Indices, not copies: a build runs on every change
	// of a Service, and copying endpoints per tier was most of its garbage.
	tierOf := make([]int, len(eps))
	sizes := make([]int, len(p.Tiers))
	for j := range eps {
		tierOf[j] = -1
		for i, t := range p.Tiers {
			if inTier(&eps[j], t, here, hints) {
				tierOf[j] = i
				sizes[i]++
				break
			}
		}
	}
	var out []Priority
	first, size := 0, 0 // the tiers waiting to merge into the next: too small so far
	for i := range p.Tiers {
		size += sizes[i]
		last := i == len(p.Tiers)-1
		if size == 0 {
			first = i + 1 // empty tiers leave no gap
			continue
		}
		if size < max(p.MinTierEndpoints, 1) && !last {
			continue
		}
		pr := Priority{Tiers: slices.Clone(p.Tiers[first : i+1]), Endpoints: make([]discovery.Endpoint, 0, size)}
		for j, t := range tierOf {
			if t >= first && t <= i {
				pr.Endpoints = append(pr.Endpoints, eps[j])
			}
		}
		slices.SortFunc(pr.Endpoints, func(a, b discovery.Endpoint) int { return a.Addr.Compare(b.Addr) })
		out = append(out, pr)
		first, size = i+1, 0
	}
	return out
}

// usable returns the endpoints that may receive traffic.
func usable(eps []discovery.Endpoint) []discovery.Endpoint {
	if ready := filter(eps, func(e *discovery.Endpoint) bool { return e.Ready }); len(ready) > 0 {
		return ready
	}
	return filter(eps, func(e *discovery.Endpoint) bool { return e.Serving })
}

// hints says whether EndpointSlice hints replace labels for the node and zone
// tiers. As in kube-proxy (topologyModeFromHints), hints count only when every
// ready endpoint carries them (a half-hinted Service is mid-rollout) and some
// endpoint is hinted for us (otherwise following them would send us nowhere).
// Endpoints that are not ready do not count either way, and with no ready
// endpoint at all hints are not used.
type hints struct{ node, zone bool }

func hintsUsable(eps []discovery.Endpoint, here Here) hints {
	h := hints{node: true, zone: true}
	var forNode, forZone, ready bool
	for i := range eps {
		e := &eps[i]
		if !e.Ready {
			continue
		}
		ready = true
		h.node = h.node && len(e.Hints.ForNodes()) > 0
		h.zone = h.zone && len(e.Hints.ForZones()) > 0
		forNode = forNode || slices.Contains(e.Hints.ForNodes(), here.Node)
		forZone = forZone || slices.Contains(e.Hints.ForZones(), here.Zone)
	}
	return hints{node: ready && h.node && forNode, zone: ready && h.zone && forZone}
}

func inTier(e *discovery.Endpoint, t Tier, here Here, h hints) bool {
	switch t {
	case TierNode:
		if h.node {
			return slices.Contains(e.Hints.ForNodes(), here.Node)
		}
		return here.Node != "" && e.Node == here.Node
	case TierZone:
		if h.zone {
			return slices.Contains(e.Hints.ForZones(), here.Zone)
		}
		return here.Zone != "" && e.Zone == here.Zone
	case TierRegion:
		return here.Region != "" && e.Region == here.Region
	case TierAny:
		return true
	}
	return false
}

// filter returns the endpoints matching keep, in order, in a slice of
// their exact size.
func filter(eps []discovery.Endpoint, keep func(*discovery.Endpoint) bool) []discovery.Endpoint {
	n := 0
	for i := range eps {
		if keep(&eps[i]) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]discovery.Endpoint, 0, n)
	for i := range eps {
		if keep(&eps[i]) {
			out = append(out, eps[i])
		}
	}
	return out
}
