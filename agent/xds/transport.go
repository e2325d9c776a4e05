package xds

import (
	"context"
	"errors"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// GRPCOptions are the gRPC server options ADS is served with; maxRequest is
// the largest request accepted (RESOURCE_EXHAUSTED beyond). What a client
// can make the agent hold while its requests arrive is then, per stream, the
// 64 KiB flow-control window, or the one request being read (at most
// maxRequest), decoded without a copy of what the server does not read.
func GRPCOptions(maxRequest int) []grpc.ServerOption {
	return []grpc.ServerOption{
		// Find clients that vanished without closing (node reboots, netns gone).
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Requests name resources; none comes near this. It bounds what a
		// misbehaving client can make the agent hold.
		grpc.MaxRecvMsgSize(maxRequest),
		// Small per-connection buffers: requests are small, and responses are
		// written in one go; the write buffer is returned to a pool after
		// each flush instead of being held by every idle connection.
		grpc.ReadBufferSize(8 << 10),
		grpc.WriteBufferSize(16 << 10),
		grpc.SharedWriteBuffer(true),
		grpc.ConnectionTimeout(10 * time.Second),
		// Flow-control windows fixed at HTTP/2's 64 KiB: gRPC otherwise
		// grows them (BDP estimation) up to 16 MiB a stream, and a client
		// may send that far ahead of what the agent has read.
		grpc.StaticStreamWindowSize(64 << 10),
		grpc.StaticConnWindowSize(64 << 10),
		grpc.ForceServerCodecV2(requestCodec{}),
		grpc.Creds(connCreds{}),
	}
}

// connCreds are insecure transport credentials that tell each stream its
// connection (peer.Peer's AuthInfo is a connInfo): a stream whose client
// does not read is ended by closing it.
type connCreds struct{}

// connInfo is the connection a stream is served on.
type connInfo struct {
	credentials.CommonAuthInfo
	net.Conn
}

func (connInfo) AuthType() string { return "insecure" }

func (connCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, connInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, Conn: c}, nil
}

func (connCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("nodexds: server-side credentials only")
}

func (connCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
}

func (connCreds) Clone() credentials.TransportCredentials { return connCreds{} }

func (connCreds) OverrideServerName(string) error { return nil }
