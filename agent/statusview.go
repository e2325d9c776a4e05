package agent

import (
	"context"

	"github.com/nodexds/nodexds/agent/mesh"
	"github.com/nodexds/nodexds/agent/routestatus"
)

// RouteStatuses computes the status (mesh.Status) of every route the agent
// knows, sorted by key, from a consistent model: what routestatus.Writer
// writes.
//
// The model belongs to the event loop. RouteStatuses reads it while the loop
// is parked on a debug request whose reply it holds back: the loop answers a
// request for a Service that cannot exist (a name with a NUL), which reads
// only its subscriptions, then waits to hand the answer over; the model is
// read meanwhile, and the answer taken, which lets the loop go on. The
// channel operations order the reads after every change the loop made
// before, and before every change it makes after.
func (a *Agent) RouteStatuses(ctx context.Context) ([]routestatus.Route, error) {
	var out []routestatus.Route
	err := a.whileParked(ctx, func() {
		s := a.store
		for _, r := range s.AllRoutes() {
			out = append(out, routestatus.Route{
				Key: r.Key, UID: r.UID, Generation: r.Generation,
				Parents: mesh.Status(r, s.Service, s.Grants, s.Routes),
			})
		}
	})
	return out, err
}

// whileParked runs f while the event loop waits, as RouteStatuses explains.
func (a *Agent) whileParked(ctx context.Context, f func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := viewRequest{q: ViewQuery{Service: "\x00"}, reply: make(chan View)} // unbuffered: the loop waits for us
	select {
	case a.debug <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-req.reply }() // always: the loop is waiting for it
	f()
	return nil
}
