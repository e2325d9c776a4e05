package resources

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/mesh"
)

func TestRoutedConfig(t *testing.T) {
	rules := []Routed{
		{Match: mesh.Match{Path: mesh.Path{Kind: mesh.ExactPath, Value: "/pkg.Svc/Get"}}, Clusters: []WeightedCluster{{"v1", 1}}},
		{Match: mesh.Match{Path: mesh.Path{Kind: mesh.PrefixPath, Value: "/pkg.Svc"}, Headers: []mesh.Header{{Name: "env", Value: "canary"}}},
			Clusters: []WeightedCluster{{"v1", 90}, {"v2", 10}}, Timeout: time.Second},
		{Match: mesh.Match{Path: mesh.Path{Kind: mesh.RegexPath, Value: `/[^/]+/Watch`}, Headers: []mesh.Header{{Name: "user", Value: "a.*", Regex: true}}}},
		{Clusters: []WeightedCluster{{"v1", 1}}},
	}
	rc := RoutedConfig("front", rules, LBConfig{Timeout: 5 * time.Second}, "front|none")
	routes := rc.VirtualHosts[0].Routes
	type want struct{ match, action string }
	for i, w := range []want{
		{`path:"/pkg.Svc/Get"`, `cluster:"v1" max_stream_duration:{max_stream_duration:{seconds:5}}`},
		{`path:"/pkg.Svc" headers:{name:"env" exact_match:"canary"}`, `weighted_clusters:{clusters:{name:"v1" weight:{value:90}} clusters:{name:"v2" weight:{value:10}}} max_stream_duration:{max_stream_duration:{seconds:1}}`},
		{`prefix:"/pkg.Svc/" headers:{name:"env" exact_match:"canary"}`, `weighted_clusters:{clusters:{name:"v1" weight:{value:90}} clusters:{name:"v2" weight:{value:10}}} max_stream_duration:{max_stream_duration:{seconds:1}}`},
		{`safe_regex:{regex:"/[^/]+/Watch"} headers:{name:"user" safe_regex_match:{regex:"a.*"}}`, `cluster:"front|none" max_stream_duration:{max_stream_duration:{seconds:5}}`},
		{`prefix:""`, `cluster:"v1" max_stream_duration:{max_stream_duration:{seconds:5}}`},
	} {
		if i >= len(routes) {
			t.Fatalf("%d routes, want %d", len(routes), i+1)
		}
		if got, want := text(routes[i].Match), strings.ReplaceAll(w.match, " ", ""); got != want {
			t.Errorf("route %d match %s, want %s", i, got, want)
		}
		if got, want := text(routes[i].GetRoute()), strings.ReplaceAll(w.action, " ", ""); got != want {
			t.Errorf("route %d action %s, want %s", i, got, want)
		}
	}
	if len(routes) != 5 {
		t.Errorf("%d routes, want 5: a last rule matching everything needs no catch-all", len(routes))
	}
	// Without a rule matching everything, a catch-all sends the rest to the
	// fail cluster: UNAVAILABLE on every client stack.
	rc = RoutedConfig("front", rules[:1], LBConfig{}, "front|none")
	last := rc.VirtualHosts[0].Routes[len(rc.VirtualHosts[0].Routes)-1]
	if got, want := text(last), strings.ReplaceAll(`match:{prefix:""} route:{cluster:"front|none"}`, " ", ""); len(rc.VirtualHosts[0].Routes) != 2 || got != want {
		t.Errorf("routes %d, last %s, want 2 ending in %s", len(rc.VirtualHosts[0].Routes), got, want)
	}
}

// text is m in text format without spaces (protobuf-go varies them on
// purpose, so that nobody depends on them).
func text(m proto.Message) string {
	return strings.Join(strings.Fields(prototext.Format(m)), "")
}
