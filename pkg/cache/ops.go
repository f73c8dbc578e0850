package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// countError counts an error unless it is the caller's own cancellation.
func (c *Cache) countError(ctx context.Context, st *prefixState) {
	if ctx.Err() == nil {
		st.errors.Add(1)
	}
}

// Set stores value under key for ttl; ttl 0 means the policy's TTL for the
// key's prefix, or DefaultTTL when the policy sets none. A negative ttl is an
// error wrapping ErrInvalidTTL and stores nothing. A value the codec cannot
// encode is an error.
func (c *Cache) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	if err := checkTTL("set", key, ttl); err != nil {
		return err
	}
	st := c.state(keyspace.PrefixOf(key))
	if err := c.generationsKnown(ctx, st, "set", key); err != nil {
		return err
	}
	return c.set(ctx, st, key, st.gen.Load(), value, ttl)
}

func (c *Cache) set(ctx context.Context, st *prefixState, key string, gen int64, value any, ttl time.Duration) error {
	payload, err := c.codec.Marshal(value)
	if err != nil {
		st.errors.Add(1)
		return fmt.Errorf("cache: encode %q: %w", key, err)
	}
	return c.setEntry(ctx, st, key, gen, payload, ttl)
}

// setLoaded is set for a loader's result: see storeLoaded.
func (c *Cache) setLoaded(ctx context.Context, st *prefixState, key string, gen, seq int64, obs observation, value any, ttl time.Duration) error {
	payload, err := c.codec.Marshal(value)
	if err != nil {
		st.errors.Add(1)
		return fmt.Errorf("cache: encode %q: %w", key, err)
	}
	return c.storeLoaded(ctx, st, key, gen, seq, obs, payload, ttl)
}

// entryPool recycles the buffers entries are assembled in: go-redis has
// written the bytes to the socket by the time Set returns.
var entryPool = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledEntry = 64 << 10

// setEntry stores payload under key, tagged with gen: the prefix's generation
// when the value was read from its source, so a value loaded before an
// invalidation cannot outlive it.
func (c *Cache) setEntry(ctx context.Context, st *prefixState, key string, gen int64, payload []byte, ttl time.Duration) error {
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return c.unavailable()
	}
	ttl = c.effectiveTTL(st, ttl)
	bp := entryPool.Get().(*[]byte)
	b := c.appendEntry((*bp)[:0], gen, payload)
	octx, cancel := c.opCtx(ctx)
	err := c.redisSet(octx, cl, c.space.DataKey(key), b, ttl)
	cancel()
	// Even after an error: the write may have landed.
	c.nearEvict(key)
	if cap(b) <= maxPooledEntry {
		*bp = b
		entryPool.Put(bp)
	}
	if err != nil {
		c.countError(ctx, st)
		return opError("set", key, err)
	}
	return nil
}

// Delete removes keys and returns how many existed. It leaves a tombstone
// under each key for Config.TombstoneTTL, which readers take for a miss and
// Exists and TTL for a missing key: a GetOrLoad in any process whose load
// began before the Delete then cannot store what it read (its write-back
// finds the key changed), provided it takes less than TombstoneTTL.
func (c *Cache) Delete(ctx context.Context, keys ...string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	st := c.state(keyspace.PrefixOf(keys[0]))
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return 0, c.unavailable()
	}
	redisKeys := make([]string, len(keys))
	for i, k := range keys {
		redisKeys[i] = c.space.DataKey(k)
		c.state(keyspace.PrefixOf(k)).invalidations.Add(1) // before the tombstones: see invalidationSeq
	}
	octx, cancel := c.opCtx(ctx)
	n, err := c.tombstone(octx, cl, redisKeys)
	cancel()
	for _, k := range keys {
		c.nearEvict(k)
	}
	if err != nil {
		c.countError(ctx, st)
		return 0, opError("delete", keys[0], err)
	}
	return n, nil
}

// Exists reports whether key is stored. It does not judge the entry's
// generation, so it also reports entries that Get would treat as invalidated
// until they are deleted; a deleted key (its tombstone) is not stored.
func (c *Cache) Exists(ctx context.Context, key string) (bool, error) {
	st := c.state(keyspace.PrefixOf(key))
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return false, c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	ok, err := c.redisExists(octx, cl, c.space.DataKey(key))
	cancel()
	if err != nil {
		c.countError(ctx, st)
		return false, opError("exists", key, err)
	}
	return ok, nil
}

// TTL returns the time key has left, to the millisecond. A missing key is
// ErrNotFound; a key without expiry (not written by Set) reports NoExpiry.
func (c *Cache) TTL(ctx context.Context, key string) (time.Duration, error) {
	st := c.state(keyspace.PrefixOf(key))
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return 0, c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	ms, err := c.redisPTTL(octx, cl, c.space.DataKey(key))
	cancel()
	switch {
	case err != nil:
		c.countError(ctx, st)
		return 0, opError("ttl", key, err)
	case ms == -2: // missing, or a tombstone
		return 0, fmt.Errorf("cache: ttl %q: %w", key, ErrNotFound)
	case ms < 0: // -1: no expiry
		return NoExpiry, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Invalidate deletes every key matching the glob pattern (Redis syntax: *, ?,
// [...], \ escapes), relative to the KeyPrefix, and returns how many it
// deleted. It walks the keyspace with SCAN and UNLINKs in batches, so it does
// not block Redis, but its time grows with the whole database, not just the
// matches; each round trip is bounded by SocketTimeout, the whole call only by
// ctx. When Redis fails it returns at once, after one SocketTimeout at most.
//
// A pattern that names a whole prefix, "prefix:*" with no glob characters in
// prefix, first bumps the prefix's generation as InvalidatePrefix does, so
// the invalidation is visible in every process before the SCAN starts, even
// if the SCAN then fails; other patterns are only as visible as the SCAN has
// got. (InvalidatePrefix skips the wait for the SCAN.) On Redis Cluster a
// key that a slot migration moves while the SCAN runs may escape it (see
// package purge); whole-prefix patterns do not depend on the SCAN. A pattern without
// glob characters names one key: it is deleted as Delete does, tombstone
// included, so that it fences other processes' loads of the key too. With an empty
// KeyPrefix a pattern such as "*" also matches the control keys of a
// CachePolicy (they start with "{cacheplane:").
func (c *Cache) Invalidate(ctx context.Context, pattern string) (int64, error) {
	if t := c.tracer(); t != nil {
		ctx, span := c.startSpan(ctx, t, spanInvalidate, keyspace.PrefixOf(pattern), pattern)
		n, err := c.invalidate(ctx, pattern)
		endSpan(span, nil, err)
		return n, err
	}
	return c.invalidate(ctx, pattern)
}

// invalidate is Invalidate, untraced.
func (c *Cache) invalidate(ctx context.Context, pattern string) (int64, error) {
	prefix, whole := wholePrefix(pattern)
	var st *prefixState
	if whole {
		st = c.addState(prefix, true) // its own generation, not otherPrefix's
	} else {
		st = c.state(statsPrefixOfPattern(pattern))
	}
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return 0, c.unavailable()
	}
	// Counted before the purge starts: see invalidationSeq.
	if p := keyspace.PrefixOf(pattern); strings.ContainsAny(p, `*?[]\`) {
		c.globInvalidations.Add(1)
	} else {
		st.invalidations.Add(1)
	}
	bumped := false
	if whole && c.cfg.PolicyRefresh >= 0 {
		octx, cancel := c.opCtx(ctx)
		err := c.bump(octx, cl, st, false) // the SCAN below deletes the keys
		cancel()
		bumped = err == nil
		if err != nil {
			c.countError(ctx, st)
			if isRedisFailure(err) {
				// The SCAN would wait out another timeout.
				c.nearDropAll()
				return 0, opError("invalidate", pattern, err)
			}
			// Refused (a user without EVAL, say): the SCAN still works.
			c.warn("cache: cannot bump the generation; invalidating by SCAN alone", "prefix", prefix, "err", err)
		}
	}
	if !strings.ContainsAny(pattern, `*?[]\`) {
		// One key: no SCAN, a tombstone (see Delete).
		octx, cancel := c.opCtx(ctx)
		n, err := c.tombstone(octx, cl, []string{c.space.DataKey(pattern)})
		cancel()
		c.nearEvict(pattern)
		if err != nil {
			c.countError(ctx, st)
			return 0, opError("invalidate", pattern, err)
		}
		return n, nil
	}
	// Tombstones stay, and after a bump the entries written since: see
	// purge.Options.Keep.
	var keep int64
	if whole && bumped {
		keep = st.gen.Load()
	}
	n, err := purge.All(ctx, cl.UniversalClient, c.space.Pattern(pattern), purge.Options{Keep: &keep})
	if err != nil {
		// Read-your-invalidation in this process even after a partial purge,
		// without a barrier: Redis just failed, and the barrier would wait
		// out a second timeout (one deadline per call).
		c.nearDropAll()
		c.countError(ctx, st)
		return n, opError("invalidate", pattern, err)
	}
	c.nearSync(ctx) // read-your-invalidation in this process
	return n, nil
}

// wholePrefix reports whether pattern is "prefix:*" for a literal prefix.
func wholePrefix(pattern string) (string, bool) {
	prefix, ok := strings.CutSuffix(pattern, keyspace.Separator+"*")
	if !ok || strings.ContainsAny(prefix, `*?[]\`+keyspace.Separator) {
		return "", false
	}
	return prefix, true
}

// nearDropAll empties the near-cache, where an invalidation cannot be
// confirmed with its tracking connection.
func (c *Cache) nearDropAll() {
	if n := c.near; n != nil {
		n.flush()
	}
}

// invalidationSeq changes whenever an Invalidate, InvalidatePrefix or Delete
// that may reach keys of st's prefix starts in this process. A loader's
// result is written back only if it has not changed since before the loader
// read its source (see storeLoaded): a value read before a write must not be
// cached after the write's invalidation, which would have nothing left to
// delete. Both counters only rise, so their sum changes exactly when one of
// them does.
func (c *Cache) invalidationSeq(st *prefixState) int64 {
	return st.invalidations.Load() + c.globInvalidations.Load()
}

// storeLoaded writes back payload, read from its source when the prefix had
// generation gen and invalidationSeq seq, after a miss that observed obs
// under the key, unless it has been invalidated since: in this process
// (seq), in any process whose bump this one has learnt of (gen), or in any
// process by a Set or Delete of the key (the write is a compare-and-set
// against obs: a Delete's tombstone or a newer value makes it a no-op). The
// entry is tagged with gen, so once every process knows a newer generation
// it is stale everywhere, even if the write lands late (a timed-out
// pipelined one may). If an invalidation in this process shows up while the
// write is on its way, or the write failed and may still land, what it wrote
// is deleted again (only if still there). One SocketTimeout bounds the whole
// call. Without an observation (the miss could not read the key) nothing is
// written.
func (c *Cache) storeLoaded(ctx context.Context, st *prefixState, key string, gen, seq int64, obs observation, payload []byte, ttl time.Duration) error {
	b := c.appendEntry(make([]byte, 0, len(payload)+12), gen, payload)
	return c.storeEntry(ctx, st, key, gen, seq, obs, b, ttl)
}

// storeEntry is storeLoaded of an assembled entry b.
func (c *Cache) storeEntry(ctx context.Context, st *prefixState, key string, gen, seq int64, obs observation, b []byte, ttl time.Duration) error {
	if !obs.ok || c.invalidated(st, gen, seq) {
		return nil
	}
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	rkey := c.space.DataKey(key)
	wrote, err := c.writeBackObserved(octx, cl, rkey, &obs, b, c.effectiveTTL(st, ttl))
	// Even after an error: the write may have landed.
	c.nearEvict(key)
	if err != nil {
		c.countError(ctx, st)
		err = opError("set", key, err)
	}
	if (!wrote && err == nil) || !c.invalidated(st, gen, seq) {
		// Any later invalidation starts after the write landed (or failed),
		// so its SCAN or tombstone finds the entry, and its bump covers it.
		return err
	}
	// One started while the write was on its way: its SCAN may have passed
	// the key before the write landed. Take back what this call wrote.
	uerr := c.redisUnset(octx, cl, rkey, b)
	c.nearEvict(key)
	if uerr != nil && err == nil {
		c.countError(ctx, st)
		return opError("delete", key, uerr)
	}
	return err
}

// invalidated reports whether st's prefix has been invalidated since it had
// generation gen and invalidationSeq seq.
func (c *Cache) invalidated(st *prefixState, gen, seq int64) bool {
	return c.invalidationSeq(st) != seq || st.gen.Load() > gen
}

// statsPrefixOfPattern attributes an Invalidate to the prefix its pattern
// names, or to otherPrefix when the glob reaches into the prefix itself.
func statsPrefixOfPattern(pattern string) string {
	p := keyspace.PrefixOf(pattern)
	if strings.ContainsAny(p, `*?[]\`) {
		return otherPrefix
	}
	return p
}

// prefixPattern is the relative glob of every key of prefix, taken literally.
func prefixPattern(prefix string) string {
	return keyspace.EscapeGlob(prefix) + keyspace.Separator + "*"
}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
