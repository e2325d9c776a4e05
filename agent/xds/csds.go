package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// RegisterCSDS adds envoy.service.status.v3.ClientStatusDiscoveryService to
// r: what each connected client subscribes to, and whether it accepted what
// it was sent, as the server sees it (Clients).
func (s *Server) RegisterCSDS(r grpc.ServiceRegistrar) {
	RegisterCSDSFunc(r, func(req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, metadata.MD, error) {
		resp, err := s.ClientStatus(req)
		return resp, nil, err
	})
}

// CSDSFunc answers one CSDS request, and gives the response's header
// metadata (nil: none).
type CSDSFunc func(*statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, metadata.MD, error)

// RegisterCSDSFunc adds CSDS to r, answered by answer: for a server that
// bounds or annotates what ClientStatus answers, over the same RPCs.
func RegisterCSDSFunc(r grpc.ServiceRegistrar, answer CSDSFunc) {
	statusv3.RegisterClientStatusDiscoveryServiceServer(r, csds{answer: answer})
}

type csds struct {
	statusv3.UnimplementedClientStatusDiscoveryServiceServer
	answer CSDSFunc
}

func (c csds) FetchClientStatus(ctx context.Context, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	resp, md, err := c.answer(req)
	if err != nil {
		return nil, err
	}
	if md != nil {
		grpc.SetHeader(ctx, md)
	}
	return resp, nil
}

func (c csds) StreamClientStatus(stream statusv3.ClientStatusDiscoveryService_StreamClientStatusServer) error {
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
		if first && md != nil {
			stream.SetHeader(md) // headers go out once: the first answer's
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// ClientStatus answers a CSDS request: one ClientConfig per connected stream
// whose node id matches req's node matchers (any of them; all streams when
// there are none), with one GenericXdsConfig per subscribed resource.
func (s *Server) ClientStatus(req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	match, err := nodeMatchers(req.GetNodeMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	withContents := !req.GetExcludeResourceContents()
	resp := &statusv3.ClientStatusResponse{}
	for _, cl := range s.Clients() {
		if !match(cl.Node) {
			continue
		}
		node := cl.node
		if node == nil {
			node = &corev3.Node{} // the client has not said who it is yet
		}
		cc := &statusv3.ClientConfig{Node: node}
		for _, ts := range cl.Types {
			for _, r := range ts.Resources {
				g := &statusv3.ClientConfig_GenericXdsConfig{
					TypeUrl:     ts.TypeURL,
					Name:        r.Name,
					VersionInfo: r.Version,
				}
				if !r.SentAt.IsZero() {
					g.LastUpdated = timestamppb.New(r.SentAt)
				}
				if withContents {
					g.XdsConfig = r.Resource
				}
				switch r.State {
				case Synced:
					g.ConfigStatus, g.ClientStatus = statusv3.ConfigStatus_SYNCED, adminv3.ClientResourceStatus_ACKED
				case Stale:
					g.ConfigStatus = statusv3.ConfigStatus_STALE
				case Error:
					g.ConfigStatus, g.ClientStatus = statusv3.ConfigStatus_ERROR, adminv3.ClientResourceStatus_NACKED
					g.ErrorState = &adminv3.UpdateFailureState{
						LastUpdateAttempt: timestamppb.New(r.ErrorAt),
						Details:           r.Error,
						VersionInfo:       r.Version,
					}
					if withContents {
						g.ErrorState.FailedConfiguration = r.Resource
					}
				case NotSent:
					g.ConfigStatus, g.ClientStatus = statusv3.ConfigStatus_NOT_SENT, adminv3.ClientResourceStatus_REQUESTED
					if r.Absent {
						g.ClientStatus = adminv3.ClientResourceStatus_DOES_NOT_EXIST
					}
				}
				cc.GenericXdsConfigs = append(cc.GenericXdsConfigs, g)
			}
		}
		resp.Config = append(resp.Config, cc)
	}
	return resp, nil
}

// nodeMatchers returns a predicate on node ids. Only node_id matchers are
// supported: the agent keeps no node metadata to match.
func nodeMatchers(ms []*matcherv3.NodeMatcher) (func(string) bool, error) {
	if len(ms) == 0 {
		return func(string) bool { return true }, nil
	}
	var preds []func(string) bool
	for _, m := range ms {
		if len(m.GetNodeMetadatas()) > 0 {
			return nil, errors.New("node_matchers: node_metadatas are not supported, only node_id")
		}
		if m.GetNodeId() == nil {
			preds = append(preds, func(string) bool { return true })
			continue
		}
		p, err := stringMatcher(m.GetNodeId())
		if err != nil {
			return nil, fmt.Errorf("node_matchers: node_id: %w", err)
		}
		preds = append(preds, p)
	}
	return func(id string) bool {
		for _, p := range preds {
			if p(id) {
				return true
			}
		}
		return false
	}, nil
}

func stringMatcher(m *matcherv3.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if m.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$") // RE2, whole string
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	}
	return nil, errors.New("unsupported string matcher")
}
