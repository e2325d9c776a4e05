package xds

import (
	"maps"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

func TestMeaningOfARequest(t *testing.T) {
	var (
		nothingSent = latest{}
		sent7       = latest{nonce: "7", version: "v2"}                // response 7 carried version v2
		answered7   = latest{nonce: "7", version: "v2", answered: "7"} // and was ACKed or NACKed
	)
	bad := &status.Status{Message: "bad"}
	tests := []struct {
		name   string
		latest latest
		req    *discoveryv3.DiscoveryRequest
		want   meaning
		counts verdict
	}{
		{
			name:   "the first request of a type names no nonce and says nothing of a response",
			latest: nothingSent,
			req:    &discoveryv3.DiscoveryRequest{ResourceNames: []string{"a"}},
			want:   initial, counts: noVerdict,
		},
		{
			name:   "a request sent before the latest response arrived names no nonce either",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResourceNames: []string{"a", "b"}},
			want:   initial, counts: noVerdict,
		},
		{
			name:   "echoing the latest nonce and its version ACKs it",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResponseNonce: "7"},
			want:   acked, counts: ack,
		},
		{
			name:   "the latest nonce with an error detail NACKs it",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResponseNonce: "7", ErrorDetail: bad},
			want:   nacked, counts: nack,
		},
		{
			name:   "an error detail is a NACK even with the latest version",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResponseNonce: "7", ErrorDetail: &status.Status{}},
			want:   nacked, counts: nack,
		},
		{
			name:   "an older nonce is stale: it ACKs nothing",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResponseNonce: "6"},
			want:   stale, counts: noVerdict,
		},
		{
			name:   "a stale nonce with an error detail NACKs nothing",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResponseNonce: "6", ErrorDetail: bad},
			want:   stale, counts: noVerdict,
		},
		{
			name:   "a nonce no response carried (forged) is stale",
			latest: nothingSent,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResponseNonce: "7"},
			want:   stale, counts: noVerdict,
		},
		{
			name:   "the next subscription, repeating an ACKed nonce, does not ACK again",
			latest: answered7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResponseNonce: "7", ResourceNames: []string{"a", "c"}},
			want:   repeated, counts: noVerdict,
		},
		{
			name:   "a NACK's error repeated on later requests counts once",
			latest: answered7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResponseNonce: "7", ErrorDetail: bad},
			want:   repeated, counts: noVerdict,
		},
		{
			name:   "a new response is answered, though the one before was",
			latest: latest{nonce: "8", version: "v3", answered: "7"},
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v3", ResponseNonce: "8"},
			want:   acked, counts: ack,
		},
		{
			name:   "the latest nonce with another version and no error only changes subscriptions",
			latest: sent7,
			req:    &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResponseNonce: "7", ResourceNames: []string{"a"}},
			want:   otherVersion, counts: noVerdict,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := meaningOf(tt.req, tt.latest)
			if m != tt.want || m.verdict() != tt.counts {
				t.Errorf("meaningOf = %d (verdict %d), want %d (verdict %d)", m, m.verdict(), tt.want, tt.counts)
			}
		})
	}
}

func TestWildcardSubscription(t *testing.T) {
	tests := []struct {
		name  string
		typ   string
		names []string
		named bool // an earlier request of the type named resources
		want  bool
	}{
		{"a first listener request naming nothing is a wildcard", ListenerType, nil, false, true},
		{"a first cluster request naming nothing is a wildcard", ClusterType, nil, false, true},
		{"naming * is a wildcard", ListenerType, []string{"*"}, false, true},
		{"naming * beside other names is a wildcard", ClusterType, []string{"a", "*"}, true, true},
		{"naming nothing after naming resources unsubscribes from all", ListenerType, nil, true, false},
		{"a listener request naming resources is no wildcard", ListenerType, []string{"a.ns:80"}, false, false},
		{"routes have no wildcard: naming nothing is naming nothing", RouteType, nil, false, false},
		{"endpoints have no wildcard, not even *", EndpointType, []string{"*"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wildcard(tt.typ, tt.names, tt.named); got != tt.want {
				t.Errorf("wildcard(%s, %q, named=%v) = %v, want %v", ShortType(tt.typ), tt.names, tt.named, got, tt.want)
			}
		})
	}
}

func TestSubscriptionDiff(t *testing.T) {
	tests := []struct {
		name        string
		subscribed  []string
		names       []string
		add, remove []string // add in the request's order
		unchanged   bool     // what stampNames recognises without allocating
	}{
		{
			name:       "repeating the subscription (as every ACK does) changes nothing",
			subscribed: []string{"a", "b"}, names: []string{"a", "b"},
			unchanged: true,
		},
		{
			name:       "the same names in another order change nothing",
			subscribed: []string{"a", "b", "c"}, names: []string{"c", "a", "b"},
			unchanged: true,
		},
		{
			name:       "a first request adds every name it names",
			subscribed: nil, names: []string{"b", "a"},
			add: []string{"b", "a"},
		},
		{
			name:       "one more name is added alone",
			subscribed: []string{"a", "b"}, names: []string{"a", "b", "c"},
			add: []string{"c"},
		},
		{
			name:       "a name left out is removed",
			subscribed: []string{"a", "b", "c"}, names: []string{"a", "c"},
			remove: []string{"b"},
		},
		{
			name:       "replacing a name adds one and removes the other",
			subscribed: []string{"a", "b"}, names: []string{"a", "c"},
			add: []string{"c"}, remove: []string{"b"},
		},
		{
			name:       "naming nothing removes every name",
			subscribed: []string{"a", "b"}, names: nil,
			remove: []string{"a", "b"},
		},
		{
			name:       "a name said twice is added once",
			subscribed: nil, names: []string{"a", "b", "a"},
			add: []string{"a", "b"},
		},
		{
			name:       "a name said twice in place of another removes the other",
			subscribed: []string{"a", "b"}, names: []string{"a", "a"},
			remove: []string{"b"},
		},
		{
			name:       "the subscription with a name said twice changes nothing, though not recognised at once",
			subscribed: []string{"a", "b"}, names: []string{"a", "b", "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := map[string]uint64{}
			for _, n := range tt.subscribed {
				cur[n] = 0
			}
			next, add, remove := diffNames(cur, tt.names)
			slices.Sort(remove)
			if !slices.Equal(add, tt.add) || !slices.Equal(remove, tt.remove) {
				t.Errorf("diffNames adds %q and removes %q, want %q and %q", add, remove, tt.add, tt.remove)
			}
			want := slices.Compact(slices.Sorted(slices.Values(tt.names)))
			if got := slices.Sorted(maps.Keys(next)); !slices.Equal(got, want) {
				t.Errorf("subscription after = %q, want %q", got, want)
			}
			if len(cur) != len(tt.subscribed) {
				t.Errorf("diffNames changed the subscription it was given: %v", cur)
			}
			ts := &typeState{names: cur}
			if got := ts.stampNames(tt.names); got != tt.unchanged {
				t.Errorf("stampNames = %v, want %v", got, tt.unchanged)
			}
		})
	}
}
