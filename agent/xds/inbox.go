package xds

import (
	"errors"
	"io"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// receive reads and handles the client's requests until it goes away, and
// wakes the worker for those that may call for an answer. It returns what
// ends the stream (nil when the client ended it).
func (st *stream) receive() error {
	gs := st.grpc
	for {
		req, err := gs.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		if !Served(req.GetTypeUrl()) {
			st.log.at(slog.LevelWarn, "request for a type nodexds does not serve: ending the stream", "type", Clip(req.GetTypeUrl(), maxLogLen))
			return status.Errorf(codes.InvalidArgument, "type URL %q is not served (nodexds serves LDS, RDS, CDS and EDS)", Clip(req.GetTypeUrl(), maxLogLen))
		}
		req, long := compact(req)
		if long > 0 {
			st.srv.limitHit(st, "name_length", "client asked for names longer than any Service's: ignoring them",
				"names", long, "max_bytes", maxNameLen)
		}
		asks, err := st.handle(gs.Context(), req)
		if err != nil {
			return err
		}
		if asks {
			st.wake(req.GetTypeUrl(), "")
		}
	}
}
