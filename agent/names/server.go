package names

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ServerPrefix starts the Listener name an xDS-enabled gRPC server asks for
// (gRFC A36: the bootstrap's server_listener_resource_name_template,
// "grpc/server?xds.resource.listening_address=%s", filled with the address
// it listens on).
const ServerPrefix = "grpc/server?xds.resource.listening_address="

// IsServer reports whether a listener name is a server's.
func IsServer(name string) bool { return strings.HasPrefix(name, ServerPrefix) }

// ParseServer reads a server's listener name: the address it listens on,
// in the one spelling gRPC writes ("0.0.0.0:50051", "[::]:50051",
// "10.1.2.3:50051").
func ParseServer(name string) (netip.AddrPort, error) {
	s, ok := strings.CutPrefix(name, ServerPrefix)
	if !ok {
		return netip.AddrPort{}, errors.New("not a server listener name")
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.String() != s || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q is not an address and port a server listens on", Clip(s))
	}
	return ap, nil
}

// Clip shortens a client-chosen string for an error message.
func Clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// Server is the cache name of a server's Listener: the name it asked for
// and what the Listener is built from, the server's pod as the agent placed
// it (never the client's say).
type Server struct {
	// Listening is the address in the name the server asked for.
	Listening netip.AddrPort
	// Pod is the server pod's IP: the stream's peer.
	Pod netip.Addr
	// Namespace is the pod's, "" when unknown.
	Namespace string
	// Certs: the server's bootstrap has nodexds' certificate provider, so
	// its Listener may name it.
	Certs bool
}

// Name is the listener name the server asked for.
func (s Server) Name() string { return ServerPrefix + s.Listening.String() }

// Port is the server's address as its Services' endpoints list it.
func (s Server) Port() netip.AddrPort { return netip.AddrPortFrom(s.Pod, s.Listening.Port()) }

const (
	serverPodSep   = "|pod|"
	serverCertMark = "#certs"
)

// Key is the cache name.
func (s Server) Key() string {
	k := s.Name() + serverPodSep + s.Pod.String()
	if s.Namespace != "" {
		k += clientSep + s.Namespace
	}
	if s.Certs {
		k += serverCertMark
	}
	return k
}

// ParseServerKey reads a cache name Key wrote; ok is false for anything
// else (a server's own name included).
func ParseServerKey(key string) (Server, bool) {
	rest, certs := strings.CutSuffix(key, serverCertMark)
	name, pod, ok := strings.Cut(rest, serverPodSep)
	if !ok {
		return Server{}, false
	}
	pod, ns, _ := strings.Cut(pod, clientSep)
	listening, err := ParseServer(name)
	if err != nil {
		return Server{}, false
	}
	ip, err := netip.ParseAddr(pod)
	if err != nil {
		return Server{}, false
	}
	s := Server{Listening: listening, Pod: ip, Namespace: ns, Certs: certs}
	return s, s.Key() == key
}
