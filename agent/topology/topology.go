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
		eps, _ = partition(eps, func(e *discovery.Endpoint) bool {
			return slices.ContainsFunc(p.Tiers, func(t Tier) bool { return inTier(e, t, here, hints) })
		})
	}
	remaining := usable(eps)
	if len(remaining) == 0 {
		return nil
	}

	var out []Priority
	var pending Priority // tiers too small so far, waiting to merge into the next
	for i, tier := range p.Tiers {
		var in []discovery.Endpoint
		in, remaining = partition(remaining, func(e *discovery.Endpoint) bool { return inTier(e, tier, here, hints) })
		pending.Tiers = append(pending.Tiers, tier)
		pending.Endpoints = append(pending.Endpoints, in...)
		last := i == len(p.Tiers)-1
		if len(pending.Endpoints) == 0 {
			pending.Tiers = nil // empty tiers leave no gap
			continue
		}
		if len(pending.Endpoints) >= max(p.MinTierEndpoints, 1) || last {
			slices.SortFunc(pending.Endpoints, func(a, b discovery.Endpoint) int { return a.Addr.Compare(b.Addr) })
			out = append(out, pending)
			pending = Priority{}
		}
	}
	return out
}

// usable returns the endpoints that may receive traffic.
func usable(eps []discovery.Endpoint) []discovery.Endpoint {
	ready, _ := partition(eps, func(e *discovery.Endpoint) bool { return e.Ready })
	if len(ready) > 0 {
		return ready
	}
	serving, _ := partition(eps, func(e *discovery.Endpoint) bool { return e.Serving })
	return serving
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

// partition splits eps into those matching keep and the rest, preserving order.
func partition(eps []discovery.Endpoint, keep func(*discovery.Endpoint) bool) (in, out []discovery.Endpoint) {
	for i := range eps {
		if keep(&eps[i]) {
			in = append(in, eps[i])
		} else {
			out = append(out, eps[i])
		}
	}
	return in, out
}
