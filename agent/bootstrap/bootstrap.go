// Package bootstrap writes the gRPC xDS bootstrap a client needs to use the
// agent on its own node.
package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nodexds/nodexds/agent/names"
	"github.com/nodexds/nodexds/agent/xds"
)

// The files of Options.Certs, named as cert-manager's csi-driver-spiffe
// writes them.
const (
	CertFile = "tls.crt" // the workload's certificate (its SPIFFE ID in a URI SAN)
	KeyFile  = "tls.key" // its private key
	CAFile   = "ca.crt"  // the trust domain's roots
)

// DefaultCertRefresh is how often gRPC re-reads the certificate files when
// Options.CertRefresh is zero (grpc-go's own default for file_watcher).
const DefaultCertRefresh = 10 * time.Minute

// ServerListenerTemplate is the bootstrap's
// server_listener_resource_name_template (gRFC A36): an xDS-enabled server
// listening on IP:PORT asks for the Listener named with %s replaced by
// IP:PORT.
// The agent reads the names it makes with names.ParseServer.
const ServerListenerTemplate = names.ServerPrefix + "%s"

// Options describe the client.
type Options struct {
	// Server is the agent's host:port, normally $HOST_IP:18000.
	Server string
	// NodeID identifies the client in the agent's logs and CSDS.
	NodeID string
	// Zone, Region and SubZone are the client's locality (informational: the
	// agent prioritizes by the client's node).
	Zone, Region, SubZone string
	// NodeName is the Kubernetes node the client runs on, written into the
	// node metadata (nodexds.io/node-name): an agent of another node that
	// serves the client as its fallback answers with this node's view.
	NodeName string
	// Namespace is the client's namespace, written into the node metadata
	// (nodexds.io/namespace): its Gateway API consumer routes apply to it
	// when the agent does not admit clients by their pod (--admit=any).
	Namespace string
	// Fallback is a second xDS server (gRFC A71), used only while Server is
	// unreachable: normally the nodexds-fallback Service, in front of every
	// node's agent.
	Fallback string
	// Certs is the absolute path of a directory holding tls.crt, tls.key
	// and ca.crt (the files csi-driver-spiffe writes). When set, the
	// bootstrap defines a file_watcher certificate provider instance named
	// xds.CertProvider over them (gRFC A29), announces it in the node
	// metadata (xds.MetadataCertProvider) so the agent may send TLS settings
	// naming it, and sets server_listener_resource_name_template so that
	// xDS-enabled servers ask the agent for their Listener (gRFC A36).
	Certs string
	// CertRefresh is how often gRPC re-reads the files of Certs: zero means
	// DefaultCertRefresh, and less than a second is an error.
	CertRefresh time.Duration
}

// JSON returns the bootstrap document. It sets ignore_resource_deletion so a
// client keeps working on what it has if a listener or cluster briefly
// disappears (a Service re-created, an agent restarting on a cold cache).
func JSON(o Options) ([]byte, error) {
	if o.Server == "" {
		return nil, errors.New("bootstrap: no server address")
	}
	if o.NodeID == "" {
		return nil, errors.New("bootstrap: no node id")
	}
	type locality struct {
		Region  string `json:"region,omitempty"`
		Zone    string `json:"zone,omitempty"`
		SubZone string `json:"sub_zone,omitempty"`
	}
	type node struct {
		ID string `json:"id"`
		// Always present: grpc-js-xds rejects a bootstrap whose node has none.
		Locality locality          `json:"locality"`
		Metadata map[string]string `json:"metadata,omitempty"`
	}
	type creds struct {
		Type string `json:"type"`
	}
	type server struct {
		URI      string   `json:"server_uri"`
		Creds    []creds  `json:"channel_creds"`
		Features []string `json:"server_features"`
	}
	type fileWatcher struct {
		Cert    string `json:"certificate_file"`
		Key     string `json:"private_key_file"`
		CA      string `json:"ca_certificate_file"`
		Refresh string `json:"refresh_interval"`
	}
	type certProvider struct {
		Plugin string      `json:"plugin_name"`
		Config fileWatcher `json:"config"`
	}
	doc := struct {
		Servers        []server                `json:"xds_servers"`
		Node           node                    `json:"node"`
		CertProviders  map[string]certProvider `json:"certificate_providers,omitempty"`
		ServerTemplate string                  `json:"server_listener_resource_name_template,omitempty"`
	}{
		Servers: []server{{URI: o.Server, Creds: []creds{{Type: "insecure"}}, Features: []string{"ignore_resource_deletion"}}},
		Node:    node{ID: o.NodeID, Locality: locality{Region: o.Region, Zone: o.Zone, SubZone: o.SubZone}},
		// Always: a plaintext xDS-enabled server needs its Listener too, and
		// clients never read it.
		ServerTemplate: ServerListenerTemplate,
	}
	provider := ""
	if o.Certs != "" {
		refresh, err := certRefresh(o.CertRefresh)
		if err != nil {
			return nil, err
		}
		if !filepath.IsAbs(o.Certs) {
			// gRPC would resolve it against the process's working directory.
			return nil, fmt.Errorf("bootstrap: certificate directory %q is not an absolute path", o.Certs)
		}
		doc.CertProviders = map[string]certProvider{xds.CertProvider: {
			Plugin: "file_watcher",
			Config: fileWatcher{
				Cert:    filepath.Join(o.Certs, CertFile),
				Key:     filepath.Join(o.Certs, KeyFile),
				CA:      filepath.Join(o.Certs, CAFile),
				Refresh: refresh,
			},
		}}
		provider = xds.CertProvider
	}
	for k, v := range map[string]string{xds.MetadataNodeName: o.NodeName, xds.MetadataNamespace: o.Namespace, xds.MetadataCertProvider: provider} {
		if v == "" {
			continue
		}
		if doc.Node.Metadata == nil {
			doc.Node.Metadata = map[string]string{}
		}
		doc.Node.Metadata[k] = v
	}
	if o.Fallback != "" {
		doc.Servers = append(doc.Servers, server{URI: o.Fallback, Creds: []creds{{Type: "insecure"}}, Features: []string{"ignore_resource_deletion"}})
	}
	return json.MarshalIndent(doc, "", "  ")
}

// certRefresh returns d (DefaultCertRefresh if zero) as a protobuf Duration
// in JSON, the form every gRPC stack's file_watcher reads: whole seconds as
// "600s", otherwise 3, 6 or 9 fractional digits ("1.500s").
func certRefresh(d time.Duration) (string, error) {
	if d == 0 {
		d = DefaultCertRefresh
	}
	if d < time.Second {
		return "", fmt.Errorf("bootstrap: certificate refresh interval %v is under a second", d)
	}
	sec, nanos := int64(d/time.Second), int64(d%time.Second)
	switch {
	case nanos == 0:
		return fmt.Sprintf("%ds", sec), nil
	case nanos%1e6 == 0:
		return fmt.Sprintf("%d.%03ds", sec, nanos/1e6), nil
	case nanos%1e3 == 0:
		return fmt.Sprintf("%d.%06ds", sec, nanos/1e3), nil
	default:
		return fmt.Sprintf("%d.%09ds", sec, nanos), nil
	}
}
