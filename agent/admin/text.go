package admin

import (
	"cmp"
	"fmt"
	"io"
	"strings"

	"github.com/nodexds/nodexds/agent"
	"github.com/nodexds/nodexds/agent/xds"
)

// writeServicesText renders /debug/services for people:
//
//	cluster be1.default.svc.cluster.local:8080  (default/be1 port 8080)  policy node,zone,region,* (default)
//	  clients: ns/client-1 (via be1:8080)
//	  priority 0 [node]: 10.0.0.1:50051 be1-abc node-a zone-a HEALTHY
func writeServicesText(w io.Writer, d ServicesDebug) {
	fmt.Fprintf(w, "node %s  zone %s  region %s\n", dash(d.Node), dash(d.Zone), dash(d.Region))
	switch {
	case d.Total == 0:
		fmt.Fprintln(w, "no subscribed services")
	case len(d.Services) < d.Total:
		fmt.Fprintf(w, "services %d to %d of %d", d.Offset+1, d.Offset+len(d.Services), d.Total)
		if d.Next != "" {
			fmt.Fprintf(w, "; next page: %s", d.Next)
		}
		fmt.Fprintln(w)
	}
	for _, s := range d.Services {
		fmt.Fprintf(w, "\ncluster %s  (%s port %d)", s.Cluster, s.Service, s.Port)
		if !s.Exists {
			fmt.Fprintf(w, "  no such Service port: served with no endpoints\n")
		} else {
			fmt.Fprintf(w, "  policy %s (%s)", s.Policy, s.Source)
			if s.MinTier > 1 {
				fmt.Fprintf(w, "  min-tier-endpoints %d", s.MinTier)
			}
			fmt.Fprintln(w)
		}
		for _, e := range s.Errors {
			fmt.Fprintf(w, "  annotation error: %s\n", e)
		}
		if s.FailOpen {
			fmt.Fprintln(w, "  FAIL OPEN: every endpoint fails its health checks; all are served as UNKNOWN")
		}
		fmt.Fprintf(w, "  clients: %s", clientsText(s.Clients))
		if more := s.ClientsTotal - len(s.Clients); more > 0 {
			fmt.Fprintf(w, ", and %d more streams", more)
		}
		fmt.Fprintln(w)
		if r := s.Routes; r != nil {
			writeRoutesText(w, r)
		}
		writeMTLSText(w, s.ServiceView)
		if s.Exists && len(s.Priorities) == 0 {
			fmt.Fprintln(w, "  no endpoint may be used (none ready, or none in the policy's tiers)")
		}
		for i, p := range s.Priorities {
			head := fmt.Sprintf("  priority %d [%s]: ", i, p.Tiers)
			for j, e := range p.Endpoints {
				lead := head
				if j > 0 {
					lead = strings.Repeat(" ", len(head))
				}
				fmt.Fprintf(w, "%s%s %s %s %s %s", lead, e.Addr, dash(e.Pod), dash(e.Node), dash(e.Zone), e.Health)
				if !e.Ready {
					fmt.Fprint(w, " (terminating)")
				}
				if e.Unchecked != "" {
					fmt.Fprint(w, " (not health-checked: over budget)")
				}
				fmt.Fprintln(w)
			}
			if more := p.EndpointsTotal - len(p.Endpoints); more > 0 {
				fmt.Fprintf(w, "%sand %d more\n", strings.Repeat(" ", len(head)), more)
			}
		}
	}
}

// writeRoutesText lists a port's Gateway API routes and their rules.
func writeRoutesText(w io.Writer, r *agent.RoutesView) {
	if len(r.Used) == 0 {
		fmt.Fprintln(w, "  routes: none used: the Service routes as without them")
	} else {
		fmt.Fprintf(w, "  routes: %s (a request matching no rule fails UNAVAILABLE)\n", strings.Join(r.Used, ", "))
	}
	for _, rule := range r.Rules {
		fmt.Fprintf(w, "    %s\n", rule)
	}
	if more := r.RulesTotal - len(r.Rules); more > 0 {
		fmt.Fprintf(w, "    and %d more rules\n", more)
	}
	for _, x := range r.Refused {
		fmt.Fprintf(w, "  route refused: %s\n", x)
	}
	if len(r.Consumers) > 0 {
		fmt.Fprintf(w, "  namespaces with routes of their own: %s\n", strings.Join(r.Consumers, ", "))
	}
}

// clientsText lists clients once per node id and route, with a count when a
// node has several streams that way.
func clientsText(cs []ServiceClient) string {
	if len(cs) == 0 {
		return "none"
	}
	type key struct{ node, how string }
	counts := map[key]int{}
	var order []key
	for _, c := range cs {
		how := strings.Join(c.Types, ", ")
		if len(c.Via) > 0 {
			how = "via " + strings.Join(c.Via, ", ")
		}
		if c.EDS != "" && c.EDS != xds.Synced {
			how += ", EDS " + string(c.EDS)
		}
		k := key{cmp.Or(c.Node, "(no node id)"), how}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		p := fmt.Sprintf("%s (%s)", k.node, k.how)
		if counts[k] > 1 {
			p += fmt.Sprintf(" ×%d", counts[k])
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

func dash(s string) string { return cmp.Or(s, "-") }

// writeMTLSText writes a Service port's mTLS line, if it has one: its mode,
// who may call it, and where its late clients are in its moves.
func writeMTLSText(w io.Writer, s agent.ServiceView) {
	if (s.MTLS == "" || s.MTLS == "disabled") && s.LateClients == nil {
		return
	}
	fmt.Fprintf(w, "  mtls %s", dash(s.MTLS))
	if len(s.AllowFrom) > 0 {
		fmt.Fprintf(w, "  allow-from %s", strings.Join(s.AllowFrom, ", "))
	}
	if l := s.LateClients; l != nil {
		transport := "plaintext"
		if l.TLS {
			transport = "TLS"
		}
		fmt.Fprintf(w, "  grpc-js/C-core clients: generation %d (%s)", l.Generation, transport)
		if l.Moving != "" {
			fmt.Fprintf(w, ", %s at %s", l.Moving, l.Next)
		}
	}
	fmt.Fprintln(w)
}
