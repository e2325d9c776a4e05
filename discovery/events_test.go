package discovery_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	metafake "k8s.io/client-go/metadata/fake"

	"github.com/nodexds/nodexds/discovery"
	"github.com/nodexds/nodexds/discovery/clientset"
	"github.com/nodexds/nodexds/internal/poll"
)

// TestRefusedRouteEventNamesTheRoute: the Warning Event about a route is on
// the route itself, where `kubectl describe grpcroute` shows it.
func TestRefusedRouteEventNamesTheRoute(t *testing.T) {
	client := fake.NewClientset()
	rec := discovery.NewEventRecorder(clientset.API(client, metafake.NewSimpleMetadataClient(metafake.NewTestScheme())), "node-a")
	defer rec.Stop()
	route := &discovery.Route{Key: discovery.RouteKey{Kind: discovery.KindGRPCRoute, Namespace: "shop", Name: "canary"}, UID: "u-1"}
	rec.WarnRoute(route, "UnsupportedValue", "rules[0]: filter RequestMirror: not used")

	poll.Check(t, func() string {
		evs, err := client.CoreV1().Events("shop").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		for _, e := range evs.Items {
			o := e.InvolvedObject
			if o.Kind == "GRPCRoute" && o.APIVersion == "gateway.networking.k8s.io/v1" && o.Name == "canary" && o.UID == "u-1" &&
				e.Type == "Warning" && e.Reason == "UnsupportedValue" && e.Message == "rules[0]: filter RequestMirror: not used" {
				return ""
			}
		}
		return "no Warning Event on GRPCRoute shop/canary yet"
	})
}
