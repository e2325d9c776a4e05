package xds

// Type URLs of the resources nodexds serves.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// addOrder is make-before-break order (xDS protocol, "eventual consistency
// considerations"): a response that adds or changes resources goes out after
// those of the types it may refer to — clusters, then their endpoints, then
// listeners, then the routes that name the clusters. Removals go in reverse.
var addOrder = [...]string{ClusterType, EndpointType, ListenerType, RouteType}

// typeIndex is typ's place in addOrder, -1 for a type not served: streams
// keep their state per type in arrays, not maps keyed by 60-byte URLs (a
// change's fan-out looks them up for every stream).
func typeIndex(typ string) int {
	switch typ {
	case ClusterType:
		return 0
	case EndpointType:
		return 1
	case ListenerType:
		return 2
	case RouteType:
		return 3
	}
	return -1
}

// listOrder is the order in which types are listed to people (LDS, RDS, CDS, EDS).
var listOrder = [...]string{ListenerType, RouteType, ClusterType, EndpointType}

// Served reports whether typ is a type URL nodexds serves.
func Served(typ string) bool {
	switch typ {
	case ListenerType, RouteType, ClusterType, EndpointType:
		return true
	}
	return false
}

// fullState reports whether every response of typ must hold every subscribed
// resource: for Listeners and Clusters a name missing from a response means
// "deleted" to the client.
func fullState(typ string) bool { return typ == ListenerType || typ == ClusterType }

// ShortType is a type URL's short name, as in metric labels: LDS, RDS, CDS,
// EDS, or "other".
func ShortType(typ string) string {
	switch typ {
	case ListenerType:
		return "LDS"
	case RouteType:
		return "RDS"
	case ClusterType:
		return "CDS"
	case EndpointType:
		return "EDS"
	}
	return "other"
}
