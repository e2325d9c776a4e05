package xds

// TestSubscriber subscribes to names the way a stream does, without a
// stream: for benchmarks and tests of what builds resources.
type TestSubscriber struct{ cache *Cache }

// NewTestSubscriber returns a subscriber on c.
func NewTestSubscriber(c *Cache) *TestSubscriber { return &TestSubscriber{cache: c} }

// Subscribe adds one name of one type.
func (t *TestSubscriber) Subscribe(typ, name string) { t.cache.want(typ, name) }
