// Package topology decides, for one node, which endpoints of a Service its
// clients should prefer: it orders them into contiguous priorities (this node,
// this zone, this region, anywhere) according to the Service's policy.
//
// Everything here is a pure function of its arguments.
package topology

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodexds/nodexds/discovery"
)

// Service annotations read by this package.
const (
	AnnotationTopology         = discovery.AnnotationPrefix + "topology"
	AnnotationMinTierEndpoints = discovery.AnnotationPrefix + "min-tier-endpoints"
)

// maxMinTierEndpoints bounds the guard so a typo like "1000000" reads as an error.
const maxMinTierEndpoints = 10000

// Tier is one step of a topology preference.
type Tier uint8

const (
	TierNode   Tier = iota // endpoints on this node
	TierZone               // endpoints in this node's zone
	TierRegion             // endpoints in this node's region
	TierAny                // every other endpoint
)

var tierNames = [...]string{TierNode: "node", TierZone: "zone", TierRegion: "region", TierAny: "*"}

func (t Tier) String() string {
	if int(t) < len(tierNames) {
		return tierNames[t]
	}
	return "tier(" + strconv.Itoa(int(t)) + ")"
}

// Tiers is an ordered topology preference. Without TierAny it is strict:
// endpoints outside the listed tiers are never used.
type Tiers []Tier

func (ts Tiers) String() string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}

// Strict reports whether endpoints outside the listed tiers are dropped.
func (ts Tiers) Strict() bool {
	return len(ts) == 0 || ts[len(ts)-1] != TierAny
}

// ParseTiers parses a comma-separated list such as "node,zone,*". Tiers may
// appear once each, and "*" only last (nothing is left after it).
func ParseTiers(s string) (Tiers, error) {
	var out Tiers
	var seen [len(tierNames)]bool
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		t, ok := tierByName(f)
		switch {
		case !ok:
			return nil, fmt.Errorf("unknown tier %q (want node, zone, region or *)", f)
		case seen[t]:
			return nil, fmt.Errorf("tier %q listed twice", f)
		case len(out) > 0 && out[len(out)-1] == TierAny:
			return nil, fmt.Errorf("tier %q after \"*\"", f)
		}
		seen[t] = true
		out = append(out, t)
	}
	return out, nil
}

func tierByName(s string) (Tier, bool) {
	for i, n := range tierNames {
		if n == s {
			return Tier(i), true
		}
	}
	return 0, false
}

// DefaultTiers is the agent's default preference: nearest first, then anywhere.
var DefaultTiers = Tiers{TierNode, TierZone, TierRegion, TierAny}

// Source names the rule that chose a Service's policy.
type Source string

const (
	SourceAnnotation            Source = "annotation"
	SourceInternalTrafficPolicy Source = "internalTrafficPolicy"
	SourceTrafficDistribution   Source = "trafficDistribution"
	SourceDefault               Source = "default"
)

// Policy is what a Service asks for, resolved against the agent's defaults.
type Policy struct {
	Tiers  Tiers
	Source Source
	// MinTierEndpoints merges a tier with fewer endpoints into the next one, so
	// many local clients do not pile onto one local pod. At least 1.
	MinTierEndpoints int
	// IgnoreHints places endpoints by their nodeName and zone only. Set for
	// internalTrafficPolicy Local, which kube-proxy applies by node and never
	// by hints: hints are for traffic that may leave the node.
	IgnoreHints bool
}

// PolicyFor chooses a Service's policy; the first rule that applies wins:
// the nodexds.io/topology annotation, internalTrafficPolicy Local,
// trafficDistribution, then def. Annotations that do not parse are returned
// as errors and skipped, never fatal.
func PolicyFor(svc *discovery.Service, def Tiers) (Policy, []*discovery.AnnotationError) {
	var errs []*discovery.AnnotationError
	p := Policy{MinTierEndpoints: 1}

	if v, ok := svc.Annotations[AnnotationMinTierEndpoints]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err == nil && (n < 1 || n > maxMinTierEndpoints) {
			err = fmt.Errorf("must be between 1 and %d", maxMinTierEndpoints)
		}
		if err != nil {
			errs = append(errs, &discovery.AnnotationError{Key: AnnotationMinTierEndpoints, Value: v, Err: err})
		} else {
			p.MinTierEndpoints = n
		}
	}

	if v, ok := svc.Annotations[AnnotationTopology]; ok {
		tiers, err := ParseTiers(v)
		if err == nil {
			p.Tiers, p.Source = tiers, SourceAnnotation
			return p, errs
		}
		errs = append(errs, &discovery.AnnotationError{Key: AnnotationTopology, Value: v, Err: err})
	}
	switch {
	case svc.InternalTrafficLocal:
		p.Tiers, p.Source, p.IgnoreHints = Tiers{TierNode}, SourceInternalTrafficPolicy, true
	case svc.TrafficDistribution == corev1.ServiceTrafficDistributionPreferSameNode:
		p.Tiers, p.Source = Tiers{TierNode, TierZone, TierAny}, SourceTrafficDistribution
	case svc.TrafficDistribution == corev1.ServiceTrafficDistributionPreferSameZone,
		svc.TrafficDistribution == corev1.ServiceTrafficDistributionPreferClose:
		p.Tiers, p.Source = Tiers{TierZone, TierAny}, SourceTrafficDistribution
	default:
		// An unknown trafficDistribution is ignored, as kube-proxy does: the API
		// server validates the field, so it can only be a newer value.
		p.Tiers, p.Source = def, SourceDefault
	}
	return p, errs
}
