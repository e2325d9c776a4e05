package agent

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodexds/nodexds/agent/resources"
	"github.com/nodexds/nodexds/discovery"
)

// TestAChangeRebuildsWhatItCanAlter: listeners, clusters and routes are
// built from the Service alone, except the endpoint picker's routes, which
// name its endpoints; so an EndpointSlice, health or topology change
// rebuilds only load assignments and picker routes. svc0–svc2 are
// subscribed, each with its four resources; svc2 has the endpoint picker.
func TestAChangeRebuildsWhatItCanAlter(t *testing.T) {
	type builds struct{ LDS, RDS, CDS, EDS int }
	picker := map[string]string{resources.AnnotationEndpointHeader: "x-pod"}
	for _, tc := range []struct {
		name    string
		changes []string // "slice svcN", "service svcN", "node"
		want    builds
	}{
		{"an EndpointSlice change rebuilds the load assignment",
			[]string{"slice svc1"}, builds{EDS: 1}},
		{"an EndpointSlice change of a picker Service rebuilds its route too",
			[]string{"slice svc2"}, builds{RDS: 1, EDS: 1}},
		{"a Service change rebuilds all four",
			[]string{"service svc1"}, builds{LDS: 1, RDS: 1, CDS: 1, EDS: 1}},
		{"a slice and a Service change in one batch build all four once",
			[]string{"slice svc1", "service svc1", "slice svc1"}, builds{LDS: 1, RDS: 1, CDS: 1, EDS: 1}},
		{"two Services' slices rebuild two load assignments and the picker's route",
			[]string{"slice svc0", "slice svc2"}, builds{RDS: 1, EDS: 2}},
		{"a topology change rebuilds every subscribed load assignment and picker route",
			[]string{"node"}, builds{RDS: 1, EDS: 3}},
		{"a topology change beside a Service change rebuilds that Service whole",
			[]string{"node", "service svc1"}, builds{LDS: 1, RDS: 2, CDS: 1, EDS: 3}},
		{"a change nobody subscribes to builds nothing",
			[]string{"service svc3", "slice svc3"}, builds{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, cache, m := benchAgent(t)
			t0 := time.Now()
			for _, e := range benchCluster(4, 3) {
				if e.Service != nil && e.Service.Key.Name == "svc2" {
					e.Service.Annotations = picker
				}
				a.apply(e, t0)
			}
			a.flush(t0, true)
			subscribeAll(t, a, cache, 3)
			count := func() builds {
				n := func(typ string) int { return int(testutil.ToFloat64(m.Builds.WithLabelValues(typ))) }
				return builds{n("LDS"), n("RDS"), n("CDS"), n("EDS")}
			}
			before := count()
			for gen, c := range tc.changes {
				var kind string
				var i int
				if c == "node" {
					a.apply(discovery.Event{Node: &discovery.Node{Name: "n1", Zone: "moved", Region: "r1"}}, t0)
					continue
				}
				fmt.Sscanf(c, "%s svc%d", &kind, &i)
				key := discovery.ServiceKey{Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("svc%d", i)}
				if kind == "slice" {
					a.apply(discovery.Event{Slice: benchSlice(key, i, 3, gen+1)}, t0)
				} else {
					ann := map[string]string{"gen": fmt.Sprint(gen)}
					if i == 2 {
						ann = maps.Clone(picker)
						ann["gen"] = fmt.Sprint(gen)
					}
					a.apply(discovery.Event{Service: &discovery.Service{Key: key, IPFamily: "IPv4",
						Ports: []discovery.Port{{Name: "grpc", Port: 8080}}, Annotations: ann}}, t0)
				}
			}
			a.flush(t0.Add(time.Second), false)
			after := count()
			got := builds{after.LDS - before.LDS, after.RDS - before.RDS, after.CDS - before.CDS, after.EDS - before.EDS}
			if got != tc.want {
				t.Errorf("after %v: built %+v, want %+v", tc.changes, got, tc.want)
			}
			if len(a.dirty) != 0 {
				t.Errorf("after %v: %d Services still wait to be built", tc.changes, len(a.dirty))
			}
		})
	}
}
