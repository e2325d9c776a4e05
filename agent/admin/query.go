package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/nodexds/nodexds/agent/xds"
)

// Page sizes of /debug/services and /debug/clients.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 500
)

// debugQuery is what the debug pages are asked for.
type debugQuery struct {
	service       string // namespace/name
	client        string // node id, or stream number
	offset, limit int
}

func readQuery(q url.Values) (debugQuery, error) {
	d := debugQuery{service: q.Get("service"), client: q.Get("client"), limit: DefaultPageLimit}
	if d.service != "" {
		if ns, name, ok := strings.Cut(d.service, "/"); !ok || ns == "" || name == "" {
			return d, fmt.Errorf("service=%q: want namespace/name", d.service)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageLimit {
			return d, fmt.Errorf("limit=%q: want 1 to %d", v, MaxPageLimit)
		}
		d.limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return d, fmt.Errorf("offset=%q: want 0 or more", v)
		}
		d.offset = n
	}
	return d, nil
}

// next is the path of the page after one of n entries at q's offset, of
// total; "" when it was the last.
func next(u *url.URL, q debugQuery, n, total int) string {
	if q.offset+n >= total || n == 0 {
		return ""
	}
	v := u.Query()
	v.Set("offset", strconv.Itoa(q.offset+n))
	v.Set("limit", strconv.Itoa(q.limit))
	return u.Path + "?" + v.Encode()
}

// isClient reports whether cl is the client q.client names: by node id, or
// by stream number.
func (q debugQuery) isClient(cl *xds.ClientStatus) bool {
	return q.client == "" || cl.Node == q.client || strconv.FormatUint(cl.Stream, 10) == q.client
}

// wantText reads ?format=json|text, else the Accept header; JSON by default.
func wantText(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "text":
		return true, nil
	case "json":
		return false, nil
	case "":
	default:
		return false, fmt.Errorf("format=%q: want json or text", f)
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "text/plain") && !strings.Contains(accept, "application/json"), nil
}

// writeJSON encodes v before writing anything, so that a value that cannot
// be encoded is a 500 with the reason, not a 200 with half a body.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "cannot encode the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n')) // an error here is the client gone: nothing to tell it
}
