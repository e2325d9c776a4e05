package admin

import (
	"strconv"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc/metadata"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/xds"
)

// MaxCSDSClients bounds a CSDS response: at most this many ClientConfigs, the
// first by node id. The response header CSDSTotalHeader says how many
// matched; narrow with node_matchers to see the rest.
const MaxCSDSClients = 100

// CSDSTotalHeader is the response header (gRPC metadata) giving how many
// clients a CSDS request matched, before the MaxCSDSClients cap.
const CSDSTotalHeader = "nodexds-matched-clients"

// boundedCSDS answers CSDS requests as x does, with responses capped.
func boundedCSDS(x *xds.Server) xds.CSDSFunc {
	return func(req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, metadata.MD, error) {
		resp, err := x.ClientStatus(req)
		if err != nil {
			return nil, nil, err
		}
		total := len(resp.Config)
		resp.Config = agent.Page(resp.Config, 0, MaxCSDSClients)
		return resp, metadata.Pairs(CSDSTotalHeader, strconv.Itoa(total)), nil
	}
}
