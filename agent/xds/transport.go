package xds

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nodexds/nodexds/agent/xds/wire"
)

const (
	adsMethod   = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	deltaMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// Transport returns the server ADS is served with (package wire: what an
// idle client costs is its connection's goroutine and its stream's);
// maxRequest is the largest request accepted (RESOURCE_EXHAUSTED beyond).
// What a client can make the agent hold while its requests arrive is then,
// per stream, the 65,535-byte flow-control window, or one request larger
// than it, read only within Limits.MaxReadingBytes shared by all.
func (s *Server) Transport(maxRequest int) *wire.Server {
	return wire.New(wire.Config{
		Method:        adsMethod,
		Handle:        func(ws *wire.Stream) error { return s.StreamAggregatedResources(grpcStream{ws}) },
		Unimplemented: map[string]string{deltaMethod: "nodexds serves state-of-the-world ADS only"},
		MaxRecvMsg:    maxRequest,
		// A connection may hold as many streams as its peer may open.
		MaxStreams: s.limits.MaxStreamsPerPeer,
		Budget:     s.budget,
		HeldWait:   heldWait,
		Exceeded:   func(c net.Conn) { s.readingExceeded(peerAddr(c.RemoteAddr())) },
		Context: func(c net.Conn) context.Context {
			info := connInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, Conn: c}
			return peer.NewContext(context.Background(), &peer.Peer{Addr: c.RemoteAddr(), LocalAddr: c.LocalAddr(), AuthInfo: info})
		},
		// Find clients that vanished without closing (node reboots, netns
		// gone), and let them ping every 10 s at most.
		KeepaliveTime:    30 * time.Second,
		KeepaliveTimeout: 10 * time.Second,
		MinPingInterval:  10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		WriteTimeout:     s.limits.SendTimeout,
	})
}

// connInfo is the connection a stream is served on (peer.Peer's AuthInfo):
// a stream whose client does not read is ended by closing it.
type connInfo struct {
	credentials.CommonAuthInfo
	net.Conn
}

func (connInfo) AuthType() string { return "insecure" }

// grpcStream is a wire.Stream as the ADS service's stream: requests decoded
// by decodeRequest (what the server reads of them, see codec.go), responses
// marshaled into a pooled buffer.
type grpcStream struct{ ws *wire.Stream }

var responseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (g grpcStream) Send(r *discoveryv3.DiscoveryResponse) error {
	buf := responseBufs.Get().(*[]byte)
	b, err := proto.MarshalOptions{}.MarshalAppend((*buf)[:0], r)
	if err != nil {
		responseBufs.Put(buf)
		return status.Errorf(codes.Internal, "marshaling a response: %v", err)
	}
	err = g.ws.Send(b)
	if cap(b) <= 1<<20 {
		*buf = b[:0]
		responseBufs.Put(buf)
	}
	return err
}

func (g grpcStream) Recv() (*discoveryv3.DiscoveryRequest, error) {
	req := &discoveryv3.DiscoveryRequest{}
	if err := g.RecvMsg(req); err != nil {
		return nil, err
	}
	return req, nil
}

func (g grpcStream) Context() context.Context   { return g.ws.Context() }
func (grpcStream) SetHeader(metadata.MD) error  { return nil }
func (grpcStream) SendHeader(metadata.MD) error { return nil }
func (grpcStream) SetTrailer(metadata.MD)       {}

func (g grpcStream) SendMsg(m any) error {
	r, ok := m.(*discoveryv3.DiscoveryResponse)
	if !ok {
		return fmt.Errorf("nodexds: cannot send a %T", m)
	}
	return g.Send(r)
}

func (g grpcStream) RecvMsg(m any) error {
	r, ok := m.(*discoveryv3.DiscoveryRequest)
	if !ok {
		return fmt.Errorf("nodexds: cannot receive a %T", m)
	}
	b, err := g.ws.Recv()
	if err != nil {
		return err
	}
	if err := decodeRequest(b, r); err != nil {
		return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
	}
	return nil
}
