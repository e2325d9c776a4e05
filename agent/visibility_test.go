package agent

import (
	"slices"
	"testing"

	"github.com/nodexds/nodexds/agent/xds"
	"github.com/nodexds/nodexds/discovery"
)

func TestScopeFor(t *testing.T) {
	svc := func(export string) *discovery.Service {
		s := &discovery.Service{Key: discovery.ServiceKey{Namespace: "shop", Name: "cart"}}
		if export != "" {
			s.Annotations = map[string]string{AnnotationExportTo: export}
		}
		return s
	}
	tests := []struct {
		name       string
		visibility Visibility
		svc        *discovery.Service
		want       xds.Scope
		wantErr    bool
	}{
		{"cluster visibility: every Service is public", VisibilityCluster, svc("team-a"), xds.Scope{}, false},
		{"namespace visibility: a Service is its namespace's", VisibilityNamespace, svc(""), xds.Scope{Namespace: "shop"}, false},
		{"exported to all", VisibilityNamespace, svc("*"), xds.Scope{Namespace: "shop", ExportTo: []string{"*"}}, false},
		{"exported to a list, sorted and deduplicated", VisibilityNamespace, svc(" web, api,web"), xds.Scope{Namespace: "shop", ExportTo: []string{"api", "web"}}, false},
		{"a typo exports to no one else (fails closed) and is reported", VisibilityNamespace, svc("web,Not_A_Namespace"), xds.Scope{Namespace: "shop"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := scopeFor(tt.svc, tt.visibility)
			if got.Namespace != tt.want.Namespace || !slices.Equal(got.ExportTo, tt.want.ExportTo) || (err != nil) != tt.wantErr {
				t.Errorf("scopeFor = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
