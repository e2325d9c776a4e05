package agent

import (
	"context"
	"errors"
	"io"
	"strconv"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/nodexds/nodexds/agent/xds"
)

// MaxCSDSClients bounds a CSDS response: at most this many ClientConfigs, the
// first by node id. The response header CSDSTotalHeader says how many
// matched; narrow with node_matchers to see the rest.
const MaxCSDSClients = 100

// CSDSTotalHeader is the response header (gRPC metadata) giving how many
// clients a CSDS request matched, before the MaxCSDSClients cap.
const CSDSTotalHeader = "nodexds-matched-clients"

// boundedCSDS is xds.Server's CSDS with responses capped.
type boundedCSDS struct{ x *xds.Server }

var _ statusv3.ClientStatusDiscoveryServiceServer = boundedCSDS{}

func (c boundedCSDS) answer(req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, metadata.MD, error) {
	resp, err := c.x.ClientStatus(req)
	if err != nil {
		return nil, nil, err
	}
	total := len(resp.Config)
	resp.Config = page(resp.Config, 0, MaxCSDSClients)
	return resp, metadata.Pairs(CSDSTotalHeader, strconv.Itoa(total)), nil
}

func (c boundedCSDS) FetchClientStatus(ctx context.Context, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	resp, md, err := c.answer(req)
	if err != nil {
		return nil, err
	}
	grpc.SetHeader(ctx, md)
	return resp, nil
}

func (c boundedCSDS) StreamClientStatus(stream statusv3.ClientStatusDiscoveryService_StreamClientStatusServer) error {
	for first := true; ; first = false {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, md, err := c.answer(req)
		if err != nil {
			return err
		}
		if first {
			stream.SetHeader(md) // headers go out once: the first answer's count
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
