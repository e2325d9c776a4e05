package bootstrap

import (
	"encoding/json"
	"testing"
)

func TestJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{
			name: "locality is always present, even empty (grpc-js-xds requires it)",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod"},
			want: `{"xds_servers":[{"server_uri":"10.0.0.1:18000","channel_creds":[{"type":"insecure"}],"server_features":["ignore_resource_deletion"]}],"node":{"id":"ns/pod","locality":{}}}`,
		},
		{
			name: "zone and region when known",
			o:    Options{Server: "10.0.0.1:18000", NodeID: "ns/pod", Zone: "z1", Region: "r1"},
			want: `{"xds_servers":[{"server_uri":"10.0.0.1:18000","channel_creds":[{"type":"insecure"}],"server_features":["ignore_resource_deletion"]}],"node":{"id":"ns/pod","locality":{"region":"r1","zone":"z1"}}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := JSON(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			var compact any
			if err := json.Unmarshal(doc, &compact); err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(compact)
			var want any
			json.Unmarshal([]byte(tc.want), &want)
			w, _ := json.Marshal(want)
			if string(got) != string(w) {
				t.Errorf("bootstrap:\n got  %s\n want %s", got, w)
			}
		})
	}
	if _, err := JSON(Options{NodeID: "x"}); err == nil {
		t.Error("no server: want an error")
	}
}
