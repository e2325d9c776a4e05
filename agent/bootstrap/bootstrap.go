// Package bootstrap writes the gRPC xDS bootstrap a client needs to use the
// agent on its own node.
package bootstrap

import (
	"encoding/json"
	"errors"

	"github.com/nodexds/nodexds/agent/xds"
)

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
	doc := struct {
		Servers []server `json:"xds_servers"`
		Node    node     `json:"node"`
	}{
		Servers: []server{{URI: o.Server, Creds: []creds{{Type: "insecure"}}, Features: []string{"ignore_resource_deletion"}}},
		Node:    node{ID: o.NodeID, Locality: locality{Region: o.Region, Zone: o.Zone, SubZone: o.SubZone}},
	}
	for k, v := range map[string]string{xds.MetadataNodeName: o.NodeName, xds.MetadataNamespace: o.Namespace} {
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
