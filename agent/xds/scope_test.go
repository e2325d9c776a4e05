package xds

import "testing"

func TestScopeVisibleTo(t *testing.T) {
	private := Scope{Namespace: "shop"}
	exported := Scope{Namespace: "shop", ExportTo: []string{"web"}}
	public := Scope{Namespace: "shop", ExportTo: []string{"*"}}
	tests := []struct {
		name       string
		scope      Scope
		namespaces []string
		want       bool
	}{
		{"the zero scope is public, even to a client in no namespace", Scope{}, nil, true},
		{"a Service is visible in its own namespace", private, []string{"shop"}, true},
		{"a private Service is invisible to another namespace", private, []string{"web"}, false},
		{"an export list opens it to the namespaces listed", exported, []string{"web"}, true},
		{"but not to others", exported, []string{"api"}, false},
		{"export to * opens it to every namespace", public, []string{"api"}, true},
		{"a client of unknown namespace sees only public Services", private, nil, false},
		{"a shared address (host network) sees what all its namespaces may see", exported, []string{"shop", "web"}, true},
		{"and nothing one of them may not", exported, []string{"shop", "api"}, false},
	}
	for _, tt := range tests {
		if got := tt.scope.VisibleTo(tt.namespaces); got != tt.want {
			t.Errorf("%s: VisibleTo(%v) = %v, want %v", tt.name, tt.namespaces, got, tt.want)
		}
	}
}
