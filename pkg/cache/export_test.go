package cache

import (
	"context"
	"errors"
)

// Hooks into unexported state for the tests of package cache_test.

// FlightWaiters returns how many GetOrLoad callers wait for key's load.
func FlightWaiters(c *Cache, key string) int { return c.flights.Waiting(c.space.DataKey(key)) }

// FlushStats runs one stats flush now.
func FlushStats(c *Cache) error {
	cl := c.client.Load()
	if cl == nil {
		return errors.New("not connected")
	}
	return c.flushStats(context.Background(), cl)
}

// DecodeResponse exposes the middleware's stored-response parser to fuzzing.
func DecodeResponse(b []byte) bool {
	_, ok := decodeResponse(b)
	return ok
}

// MaxPrefixes and OtherPrefix expose the prefix cap.
const (
	MaxPrefixes = maxPrefixes
	OtherPrefix = otherPrefix
)

// PipelineInflight returns how many AutoPipeline-eligible calls are in flight.
func PipelineInflight(c *Cache) int64 { return c.pipe.inflight.Load() }

// Reclaiming reports whether a background reclaim of prefix is running.
func Reclaiming(c *Cache, prefix string) bool {
	c.reclaimMu.Lock()
	defer c.reclaimMu.Unlock()
	_, ok := c.reclaims[prefix]
	return ok
}

// SetEventsAddr makes a Cache not yet connected dial its events
// subscription at addr (a stall proxy) instead of the pool's address.
func SetEventsAddr(c *Cache, addr string) { c.eventsAddr = addr }

// ReadWaiters returns how many callers wait for the next shared GET of key
// (read coalescing), and whether a GET of key is in flight.
func ReadWaiters(c *Cache, key string) (waiting int, inFlight bool) {
	rkey := c.space.DataKey(key)
	sh := c.reads.shard(rkey)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.m[rkey]
	if r != nil {
		waiting = r.waiters
	}
	return waiting, ok
}

// AutoPipelined reports whether c sends concurrent calls through the
// autopipeliner.
func AutoPipelined(c *Cache) bool { return !c.cfg.DisableAutoPipeline }
