package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

var (
	defaultCache atomic.Pointer[Cache]
	defaultMu    sync.Mutex // serialises InitDefault and CloseDefault
)

// InitDefault creates and connects the package-level cache returned by
// Default. It fails if a default cache already exists: call CloseDefault
// first.
func InitDefault(ctx context.Context, cfg Config) (*Cache, error) {
	defaultMu.Lock()
	defer defaultMu.Unlock()
	if defaultCache.Load() != nil {
		return nil, errors.New("cache: default cache already initialised; call CloseDefault first")
	}
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	defaultCache.Store(c)
	return c, nil
}

// Default returns the cache set up by InitDefault, or nil. The wrappers and
// the middleware treat a nil cache as "no caching".
func Default() *Cache { return defaultCache.Load() }

// CloseDefault closes the default cache and forgets it; without one it does
// nothing.
func CloseDefault() error {
	defaultMu.Lock()
	defer defaultMu.Unlock()
	c := defaultCache.Swap(nil)
	if c == nil {
		return nil
	}
	return c.Close()
}
