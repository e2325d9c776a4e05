package discovery

import "context"

// Source delivers Events. Start returns once the source's initial state has
// been handed to sink (an error means it could not be read at all), and keeps
// delivering changes in the background until ctx is done.
type Source interface {
	Start(ctx context.Context, sink func(Event)) error
}

var (
	_ Source = (*FileSource)(nil)
	_ Source = (*KubeSource)(nil)
)
