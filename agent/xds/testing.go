package xds

// TestSubscriber subscribes to names the way a stream does, without a
// stream: for benchmarks and tests of what builds resources.
type TestSubscriber struct {
	cache *Cache
	s     *stream
}

// NewTestSubscriber returns a subscriber on c.
func NewTestSubscriber(c *Cache) *TestSubscriber {
	return &TestSubscriber{cache: c, s: &stream{wakeCh: make(chan struct{}, 1), dirty: map[string]bool{}}}
}

// Subscribe adds one name of one type.
func (t *TestSubscriber) Subscribe(typ, name string) {
	t.cache.subscribe(t.s, typ, []string{name}, nil)
}
