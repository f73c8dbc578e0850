// The read path, in the order a read takes it: generations known, near-cache,
// Redis, the entry header checked against the prefix's generation, decode.

package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Get decodes the value of key into dst (a pointer; nil only checks for a hit)
// and reports whether it was found. A missing key, an entry invalidated by the
// policy and a value not written by this package are misses: (false, nil).
// So is a cached "no value" (see ErrNoValue), though Stats counts it as a hit.
func (c *Cache) Get(ctx context.Context, key string, dst any) (bool, error) {
	found, err := c.get(ctx, c.state(keyspace.PrefixOf(key)), key, dst, nil)
	if isNegativeHit(err) {
		return false, nil
	}
	return found, err
}

// get is Get of a key whose prefix state the caller has looked up. On a
// miss, obs (if not nil) holds what was read under the key, for a
// write-back's compare-and-set; obs.ok is false if nothing was. A negative
// entry is (false, a *noValueError), counted as a hit.
func (c *Cache) get(ctx context.Context, st *prefixState, key string, dst any, obs *observation) (bool, error) {
	if err := c.generationsKnown(ctx, st, "get", key); err != nil {
		return false, err
	}
	payload, local, found, err := c.read(ctx, st, key, obs)
	if !found {
		return false, err
	}
	negative := isNegative(payload)
	if dst != nil && !negative {
		if err := c.codec.Unmarshal(payload, dst); err != nil {
			st.misses.Add(1)
			st.errors.Add(1)
			obs.settle() // a miss: a write-back replaces what did not decode
			return false, fmt.Errorf("cache: decode %q: %w", key, err)
		}
	}
	// One counter per hit: two would be twice the cache-line traffic on the
	// near-cache's hot path. Readers add them up (prefixState.allHits).
	if local {
		st.localHits.Add(1)
		if obs != nil {
			obs.local = true
		}
	} else {
		st.hits.Add(1)
	}
	if negative {
		return false, &noValueError{key: key}
	}
	return true, nil
}

// getEntry returns key's payload. It counts misses and errors; the caller
// counts the hit once the payload has proven usable, and has made sure the
// generations are known (generationsKnown). obs (may be nil) records what
// was read, as in get.
func (c *Cache) getEntry(ctx context.Context, st *prefixState, key string, obs *observation) (payload []byte, found bool, err error) {
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return nil, false, c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	// Shared with concurrent readers of the key (coalesce.go): b is
	// read-only, and each caller judges it below as its own.
	b, err := c.sharedGet(octx, cl, c.space.DataKey(key))
	cancel()
	if err != nil {
		if err == redis.Nil {
			obs.saw(nil)
			st.misses.Add(1)
			return nil, false, nil
		}
		c.countError(ctx, st)
		return nil, false, opError("get", key, err)
	}
	_, payload, found = c.usableEntry(st, key, b)
	if found {
		obs.sawUsable(b)
	} else {
		obs.saw(b)
	}
	return payload, found, nil
}

// usableEntry parses a stored value, counting a miss (and for a foreign
// value an error) when it cannot be served.
func (c *Cache) usableEntry(st *prefixState, key string, b []byte) (gen int64, payload []byte, ok bool) {
	gen, payload, err := decodeEntry(b)
	if err == keyspace.ErrNegative {
		payload, err = negativePayload, nil
	}
	if errors.Is(err, keyspace.ErrTombstone) {
		st.misses.Add(1) // deleted: a plain miss
		return 0, nil, false
	}
	if err != nil {
		// Someone else's value under our key: not ours to decode. Reported as
		// an error in the stats so that it gets noticed, served as a miss so
		// that a loader overwrites it.
		st.misses.Add(1)
		st.errors.Add(1)
		c.warn("cache: foreign value under key; treating it as a miss", "key", key)
		return 0, nil, false
	}
	if gen < st.gen.Load() {
		st.misses.Add(1) // written before the prefix's last invalidation
		return 0, nil, false
	}
	return gen, payload, true
}

// generationsKnown makes sure the generations are known before an entry of
// st's prefix is served or written (knowGenerations): an entry is never
// judged against a generation this process has not read, or not heard
// confirmed within the events lease. Its cost on the hot path is two atomic
// loads and a clock read (genKnown).
func (c *Cache) generationsKnown(ctx context.Context, st *prefixState, op, key string) error {
	if c.genKnown() {
		return nil
	}
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return c.unavailable()
	}
	if err := c.knowGenerations(ctx, cl); err != nil {
		c.countError(ctx, st)
		return opError(op, key, err)
	}
	return nil
}

// read returns key's payload from the near-cache or from Redis. local
// reports a near-cache hit. Counting is as in getEntry.
func (c *Cache) read(ctx context.Context, st *prefixState, key string, obs *observation) (payload []byte, local, found bool, err error) {
	n := c.near
	if n == nil {
		payload, found, err = c.getEntry(ctx, st, key, obs)
		return payload, false, found, err
	}
	now := mono.Now()
	if !n.serving(now) || !n.covers(keyspace.PrefixOf(key)) || st.near.Load() == nearOff {
		// Off, or without a current lease: neither served nor filled (a
		// fill would be safe, see nearstore.Store.Fill's reservation, but the
		// channel that keeps it fresh is in doubt).
		payload, found, err = c.getEntry(ctx, st, key, obs)
		return payload, false, found, err
	}
	if e := n.store.GetAt(key, now); e != nil {
		// The lease is checked again: setOff may be emptying the shards
		// right now.
		if e.Gen >= st.gen.Load() && n.serving(now) {
			return e.Payload, true, true, nil
		}
		n.store.Drop(e) // invalidated by the policy since it was stored
	}
	epoch := n.epoch.Load()
	token := n.tokens.Add(1)
	if !n.on.Load() || !n.store.Reserve(key, token) {
		payload, found, err = c.getEntry(ctx, st, key, obs)
		return payload, false, found, err
	}
	gen, payload, ttl, found, err := c.getEntryTTL(ctx, st, key, obs)
	if !found {
		n.store.Cancel(key, token)
		return nil, false, false, err
	}
	life := n.cfg.TTL
	switch {
	case ttl > 0:
		life = min(life, ttl) // never outlive the key in Redis
	case ttl != noExpiry:
		// Expiring within the millisecond (PTTL 0) or expired between the GET
		// and the PTTL (keyGone): serve this read, keep nothing; kept for the
		// near-cache's TTL, it would outlive the key.
		n.store.Cancel(key, token)
		return payload, false, true, nil
	}
	n.store.Fill(key, token, nearCopy(payload), gen, mono.Now()+int64(life), func() bool {
		return n.on.Load() && n.epoch.Load() == epoch
	})
	return payload, false, true, nil
}

// getEntryTTL is getEntry that also returns the entry's generation and the
// key's remaining TTL, read in the same round trip: -1 for none, keyGone when
// the key expired between the two commands.
func (c *Cache) getEntryTTL(ctx context.Context, st *prefixState, key string, obs *observation) (gen int64, payload []byte, ttl time.Duration, found bool, err error) {
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return 0, nil, 0, false, c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	get, pttl, err := c.redisGetPTTL(octx, cl, c.space.DataKey(key))
	var b []byte
	if err == nil {
		b, err = get.Bytes()
		if err == redis.Nil {
			obs.saw(nil)
			st.misses.Add(1)
			return 0, nil, 0, false, nil
		}
	}
	if err != nil {
		c.countError(ctx, st)
		return 0, nil, 0, false, opError("get", key, err)
	}
	gen, payload, ok := c.usableEntry(st, key, b)
	if !ok {
		obs.saw(b)
		return 0, nil, 0, false, nil
	}
	obs.sawUsable(b)
	return gen, payload, pttl.Val(), true, nil
}
