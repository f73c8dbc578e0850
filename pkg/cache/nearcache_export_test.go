package cache

import (
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/tracking"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// NearTrackerID returns the CLIENT ID of the near-cache's tracking
// connection, 0 while there is none.
func NearTrackerID(c *Cache) int64 {
	if c.near == nil {
		return 0
	}
	if ts := c.near.conns(); len(ts) > 0 {
		return ts[0].ID
	}
	return 0
}

// NearTrackerIDs returns the CLIENT IDs of the near-cache's tracking
// connections by node address (Cluster, Sentinel).
func NearTrackerIDs(c *Cache) map[string]int64 {
	out := map[string]int64{}
	if c.near == nil {
		return out
	}
	c.near.mu.Lock()
	defer c.near.mu.Unlock()
	for a, nd := range c.near.nodes {
		if nd.conn != nil {
			out[a] = nd.conn.ID
		}
	}
	return out
}

// SetNearTrackerAddr makes the near-cache of a Cache not yet connected dial
// its tracking connection at addr (a stall proxy) instead of the pool's
// address.
func SetNearTrackerAddr(c *Cache, addr string) { c.near.trackAddr = addr }

// NearTrackPrefixes returns the Redis key prefixes a near-cache with the
// given Prefixes tracks under keyPrefix.
func NearTrackPrefixes(t testing.TB, keyPrefix string, prefixes []string) []string {
	n, err := newNearCache(NearCacheConfig{Prefixes: prefixes})
	if err != nil {
		t.Fatal(err)
	}
	return n.trackPrefixes(keyspace.New(keyPrefix))
}

// NearPermanentReply reports whether an error reply to HELLO or CLIENT
// TRACKING turns the near-cache off for good.
var NearPermanentReply = tracking.PermanentReply

// NearOptedOut reports whether the policy this Cache has applied keeps
// prefix out of the near-cache.
func NearOptedOut(c *Cache, prefix string) bool { return c.state(prefix).near.Load() == nearOff }
