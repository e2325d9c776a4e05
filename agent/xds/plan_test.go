package xds

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
)

// subsOf describes a name's cache state in plan scenarios: "v1" (present at
// version v1), "absent" (resolved, none) or "unresolved".
func subsOf(state map[string]string) []sub {
	var out []sub
	for _, n := range slices.Sorted(maps.Keys(state)) {
		s := sub{name: n}
		switch v := state[n]; v {
		case "unresolved":
		case "absent":
			s.entry.resolved = true
		default:
			s.entry = entry{resolved: true, version: v, resource: &anypb.Any{Value: []byte(n + "@" + v)}}
		}
		out = append(out, s)
	}
	return out
}

// describe renders responses as "CDS[a b]" in send order.
func describe(rs []response) string {
	var parts []string
	for _, r := range rs {
		var names []string
		for _, s := range r.resources {
			names = append(names, s.name)
		}
		parts = append(parts, ShortType(r.typ)+"["+strings.Join(names, " ")+"]")
	}
	return strings.Join(parts, " ")
}

func TestPlan(t *testing.T) {
	type typeCase struct {
		typ   string
		cache map[string]string // subscribed name → cache state
		told  map[string]string
	}
	tests := []struct {
		name  string
		types []typeCase
		want  string
	}{
		{
			name:  "a new subscription to a resolved cluster is answered",
			types: []typeCase{{ClusterType, map[string]string{"be1": "v1"}, nil}},
			want:  "CDS[be1]",
		},
		{
			name:  "an unresolved listener holds nothing back: the known one is answered alone",
			types: []typeCase{{ListenerType, map[string]string{"known": "v1", "unknown": "unresolved"}, nil}},
			want:  "LDS[known]",
		},
		{
			name:  "only unresolved names: nothing to say yet",
			types: []typeCase{{ListenerType, map[string]string{"unknown": "unresolved"}, nil}},
			want:  "",
		},
		{
			name:  "a listener newly known not to exist gets a full-state answer saying so",
			types: []typeCase{{ListenerType, map[string]string{"known": "v1", "unknown": "absent"}, map[string]string{"known": "v1"}}},
			want:  "LDS[known]",
		},
		{
			name:  "a listener already told absent is not answered again",
			types: []typeCase{{ListenerType, map[string]string{"known": "v1", "unknown": "absent"}, map[string]string{"known": "v1", "unknown": toldAbsent}}},
			want:  "",
		},
		{
			name:  "nothing changed: no response",
			types: []typeCase{{ClusterType, map[string]string{"be1": "v1", "be2": "v1"}, map[string]string{"be1": "v1", "be2": "v1"}}},
			want:  "",
		},
		{
			name:  "a changed cluster resends the full state",
			types: []typeCase{{ClusterType, map[string]string{"be1": "v1", "be2": "v2"}, map[string]string{"be1": "v1", "be2": "v1"}}},
			want:  "CDS[be1 be2]",
		},
		{
			name:  "a deleted cluster is answered with the remaining full state",
			types: []typeCase{{ClusterType, map[string]string{"be1": "v1", "be2": "absent"}, map[string]string{"be1": "v1", "be2": "v1"}}},
			want:  "CDS[be1]",
		},
		{
			name:  "endpoints: only the changed load assignment is sent",
			types: []typeCase{{EndpointType, map[string]string{"be1": "v1", "be2": "v2"}, map[string]string{"be1": "v1", "be2": "v1"}}},
			want:  "EDS[be2]",
		},
		{
			name:  "routes that disappear are not mentioned: state-of-the-world RDS cannot say so",
			types: []typeCase{{RouteType, map[string]string{"be1": "v1", "be2": "absent"}, map[string]string{"be1": "v1", "be2": "v1"}}},
			want:  "",
		},
		{
			name: "make before break: clusters, endpoints, listeners, then routes",
			types: []typeCase{
				{RouteType, map[string]string{"r": "v1"}, nil},
				{ListenerType, map[string]string{"l": "v1"}, nil},
				{EndpointType, map[string]string{"e": "v1"}, nil},
				{ClusterType, map[string]string{"c": "v1"}, nil},
			},
			want: "CDS[c] EDS[e] LDS[l] RDS[r]",
		},
		{
			name: "removals after additions, in reverse order: the listener goes before the cluster",
			types: []typeCase{
				{ClusterType, map[string]string{"old": "absent", "keep": "v1"}, map[string]string{"old": "v1", "keep": "v1"}},
				{ListenerType, map[string]string{"gone": "absent"}, map[string]string{"gone": "v1"}},
				{EndpointType, map[string]string{"new": "v1"}, nil},
			},
			want: "EDS[new] LDS[] CDS[keep]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ins []typeInput
			for _, tc := range tt.types {
				told := map[string]string{}
				for k, v := range tc.told {
					told[k] = v
				}
				ins = append(ins, typeInput{typ: tc.typ, subs: subsOf(tc.cache), told: told})
			}
			if got := describe(plan(ins)); got != tt.want {
				t.Errorf("plan = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSettledStateCallsForNoResponse(t *testing.T) {
	// After a plan is carried out and settled, planning again on the same
	// cache state sends nothing, for every type and mix of states.
	cache := map[string]string{"a": "v1", "b": "absent", "c": "unresolved", "d": "v2"}
	for _, typ := range addOrder {
		in := typeInput{typ: typ, subs: subsOf(cache), told: map[string]string{}}
		if got := plan([]typeInput{in}); len(got) != 1 {
			t.Fatalf("%s: first plan = %q, want one response", ShortType(typ), describe(got))
		}
		in.digest = recordTold(in.told, in.subs, in.digest)
		if got := plan([]typeInput{in}); len(got) != 0 {
			t.Errorf("%s: plan after settling = %q, want nothing", ShortType(typ), describe(got))
		}
		if _, ok := in.told["c"]; ok {
			t.Errorf("%s: an unresolved name was settled: %v", ShortType(typ), in.told)
		}
	}
}

func TestTypeVersionDependsOnContentOnly(t *testing.T) {
	version := func(state map[string]string) string {
		return typeVersion(digestAfter(0, map[string]string{}, subsOf(state)))
	}
	a := version(map[string]string{"x": "v1", "y": "v2"})
	b := version(map[string]string{"y": "v2", "x": "v1"})
	c := version(map[string]string{"x": "v1", "y": "v3"})
	if a != b || a == c {
		t.Errorf("versions: equal content %q vs %q, changed content %q", a, b, c)
	}
}

func TestOneChangedEndpointIsPlannedAloneAtTheFullVersion(t *testing.T) {
	// A stream holding a, b and c is woken for b alone: planned from b only,
	// it sends what a plan over every name would, at the same version, which
	// is the version a new client holding the same state would be sent.
	told := map[string]string{}
	digest := recordTold(told, subsOf(map[string]string{"a": "v1", "b": "v1", "c": "v1"}), 0)
	now := map[string]string{"a": "v1", "b": "v2", "c": "v1"}
	full := typeInput{typ: EndpointType, subs: subsOf(now), told: told, digest: digest}
	alone := typeInput{typ: EndpointType, subs: subsOf(map[string]string{"b": "v2"}), told: told, digest: digest}
	fresh := typeVersion(digestAfter(0, map[string]string{}, subsOf(now)))
	f, ok1 := decide(full)
	a, ok2 := decide(alone)
	if !ok1 || !ok2 || describe([]response{f}) != "EDS[b]" || describe([]response{a}) != "EDS[b]" {
		t.Fatalf("full plan %q (%v), plan of b alone %q (%v): want EDS[b] from both", describe([]response{f}), ok1, describe([]response{a}), ok2)
	}
	if f.version != a.version || a.version != fresh {
		t.Errorf("versions: full plan %s, b alone %s, a new client %s: want one", f.version, a.version, fresh)
	}
}
