package cache

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// GetOrLoad returns the cached value of key, or calls load, caches its result
// for ttl (0: as in Set) and returns it. A negative ttl is an error wrapping
// ErrInvalidTTL, before anything is read or loaded.
//
// Concurrent calls for one key in this process share one load; each waits
// only as long as its own ctx allows, while the load goes on for the others
// (its context keeps the first caller's values, not its cancellation, and is
// cancelled once no caller is waiting). The waiters share the loaded value:
// treat it as read-only.
//
// A load that overlaps an Invalidate or Delete in this process reaching key's
// prefix is not written back, and callers that arrive after such a call start
// a load of their own instead of joining it: what load read before a write
// is never cached behind the write's invalidation. Across processes, the
// write-back is a compare-and-set against what this call's miss saw under the
// key: a Set or Delete of the key by any process in between (Delete leaves a
// tombstone for Config.TombstoneTTL, so even a key that did not exist
// changes) makes it store nothing. And it is tagged with the prefix's
// generation read before load ran: if any process invalidates the prefix
// meanwhile (InvalidatePrefix, InvalidateOnWrite, the middleware's writes,
// Invalidate of a whole prefix, an operator's run), the entry is stale for
// every process that knows the new generation (the invalidating one before
// its call returns, the others within Config.EventsLease), and this process
// takes it back if it learns of the invalidation before its write returns.
// Glob Invalidates of another process (other than "prefix:*") are not
// fenced. See docs/generations.md.
//
// With Config.LoadLease, the load is also one across processes: see there.
//
// Errors of load are returned and never cached, except one wrapping
// ErrNoValue, which is cached for Config.NegativeTTL (see ErrNoValue). Redis errors are not
// returned: they are counted and logged, and the call falls through to load
// (fail open); after a failed read the result is not written back, so a down
// Redis costs at most one SocketTimeout per call.
//
// A nil *Cache calls load directly.
func GetOrLoad[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, load func(context.Context) (T, error)) (T, error) {
	if err := checkTTL("load", key, ttl); err != nil {
		var zero T
		return zero, err
	}
	if c == nil {
		return load(ctx)
	}
	if t := c.tracer(); t != nil {
		ctx, span := c.startSpan(ctx, t, spanGetOrLoad, keyspace.PrefixOf(key), key)
		var info spanInfo
		v, err := getOrLoad(ctx, c, key, ttl, load, &info)
		endSpan(span, &info, err)
		return v, err
	}
	return getOrLoad(ctx, c, key, ttl, load, nil)
}

// getOrLoad is GetOrLoad of a non-nil c, reporting to info (nil: untraced).
func getOrLoad[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, load func(context.Context) (T, error), info *spanInfo) (T, error) {
	st := c.state(keyspace.PrefixOf(key))
	var v T
	var obs observation // what the miss saw: the write-back compares with it
	found, err := c.get(ctx, st, key, &v, &obs)
	if found {
		if obs.local {
			info.setOutcome(outcomeNearHit)
		} else {
			info.setOutcome(outcomeHit)
		}
		return v, nil
	}
	if isNegativeHit(err) {
		info.setOutcome(outcomeNegativeHit)
		var zero T
		return zero, err
	}
	info.setOutcome(outcomeMiss)
	writeBack := obs.ok
	if err != nil {
		if ctx.Err() != nil {
			var zero T
			return zero, ctx.Err()
		}
		c.warn("cache: read failed; loading from the source", "key", key, "err", err)
		writeBack = writeBack && !isRedisFailure(err)
	}

	// Before the load reads its source: an invalidation after this point
	// voids its write-back, and keeps later callers from joining it.
	seq := c.invalidationSeq(st)
	var waited time.Time
	if info != nil {
		waited = time.Now()
	}
	res, err := c.flights.Do(ctx, c.space.DataKey(key), seq, func(lctx context.Context) (any, error) {
		obs, writeBack := obs, writeBack // the lease may change them
		if writeBack && c.cfg.LoadLease > 0 {
			var served any
			var servedErr error
			switch c.awaitLease(lctx, st, key, &obs, func(b []byte) bool {
				served, servedErr = leaseValue[T](c, st, key, b)
				return served != nil || servedErr != nil
			}) {
			case leaseServed:
				return served, servedErr
			case leaseFailed:
				writeBack = false
			case leaseHeld:
				defer c.releaseLease(lctx, obs.lease)
			}
		}
		gen := st.gen.Load() // before loading: see setEntry
		start := time.Now()
		v, err := load(lctx)
		c.loadTime.WithLabelValues(st.label).Observe(time.Since(start).Seconds())
		if err != nil {
			if writeBack {
				c.storeNoValue(lctx, st, key, gen, seq, obs, err, ttl)
			}
			return nil, err
		}
		if writeBack {
			if err := c.setLoaded(lctx, st, key, gen, seq, obs, v, ttl); err != nil {
				c.warn("cache: write-back failed; value served uncached", "key", key, "err", err)
			}
		}
		return &v, nil
	})
	if info != nil {
		info.setLoad(time.Since(waited))
	}
	if err != nil {
		var zero T
		return zero, err
	}
	if p, ok := res.(*T); ok {
		return *p, nil
	}
	// Another call site loads the same key into a different type.
	return load(ctx)
}

// leaseValue decodes b, a value another process stored while this one
// waited on its load lease, if it is one to serve: an entry of the current
// generation that decodes into a T (a *T), or a negative entry (a
// *noValueError). Anything else is nil, nil. It counts nothing: the call
// counted its miss when its read found nothing (see Config.LoadLease).
func leaseValue[T any](c *Cache, st *prefixState, key string, b []byte) (any, error) {
	gen, payload, err := decodeEntry(b)
	switch {
	case err == keyspace.ErrNegative && gen >= st.gen.Load():
		return nil, &noValueError{key: key}
	case err != nil || gen < st.gen.Load():
		return nil, nil
	}
	var v T
	if c.codec.Unmarshal(payload, &v) != nil {
		return nil, nil
	}
	return &v, nil
}

// Cached wraps fn so that its results are cached: the key of a call is
// GenerateKey(prefix, keyParams(arg)), so only the parameters keyParams picks
// shape it (nil keyParams: the whole argument, as {"arg": arg}). The key sees
// what encoding/json sees: unexported and `json:"-"` fields do not shape it,
// so an argument whose identity lives in such fields needs keyParams (or all
// calls would share one entry). Loading follows GetOrLoad, including fail
// open, a nil *Cache and a negative ttl (each call returns ErrInvalidTTL).
func Cached[A, R any](c *Cache, prefix string, ttl time.Duration, keyParams func(A) map[string]any,
	fn func(context.Context, A) (R, error)) func(context.Context, A) (R, error) {
	return func(ctx context.Context, arg A) (R, error) {
		var params map[string]any
		if keyParams != nil {
			params = keyParams(arg)
		} else {
			params = map[string]any{"arg": arg}
		}
		return GetOrLoad(ctx, c, GenerateKey(prefix, params), ttl, func(ctx context.Context) (R, error) {
			return fn(ctx, arg)
		})
	}
}

// InvalidateOnWrite wraps fn so that every key of prefix ("prefix:*", the
// prefix taken literally) is invalidated after fn succeeds, not when it fails,
// as InvalidatePrefix does: one round trip, bounded by ctx. If ctx ends first,
// the invalidation goes on in the background, so a write is not left with
// stale reads behind it; its failure is counted and logged, not returned
// (fail open).
func InvalidateOnWrite[A, R any](c *Cache, prefix string,
	fn func(context.Context, A) (R, error)) func(context.Context, A) (R, error) {
	return func(ctx context.Context, arg A) (R, error) {
		r, err := fn(ctx, arg)
		if err == nil {
			c.invalidatePrefix(ctx, prefix)
		}
		return r, err
	}
}

// invalidatePrefix invalidates prefix:* after a successful write.
func (c *Cache) invalidatePrefix(ctx context.Context, prefix string) {
	if c == nil {
		return
	}
	if err := c.tracedInvalidatePrefix(ctx, spanInvalidateOnWrite, prefix); err != nil {
		c.warn("cache: invalidation after a write failed or goes on in the background", "prefix", prefix, "err", err)
	}
}

// InvalidatePrefix makes every entry of prefix ("prefix:*", the prefix taken
// literally) stale in every process at once, in one round trip whatever the
// size of the database: it bumps the prefix's generation in Redis, which
// every Cache of the KeyPrefix honours (the bump is published; this process
// applies it before returning). The keys themselves are deleted later, off
// the caller's path, by a background SCAN (one per prefix at a time).
//
// It waits at most as long as ctx and SocketTimeout allow; if ctx ends
// first, it returns ctx's error and the bump goes on in the background (its
// failure is counted and logged). A prefix is a key's first ':'-separated
// segment; for a prefix containing ':' (a narrower set of keys), and when
// Config.PolicyRefresh disables generations, it runs Invalidate instead.
func (c *Cache) InvalidatePrefix(ctx context.Context, prefix string) error {
	if c == nil {
		return nil
	}
	return c.tracedInvalidatePrefix(ctx, spanInvalidatePrefix, prefix)
}

// tracedInvalidatePrefix is InvalidatePrefix in a span of the given name
// when tracing is on.
func (c *Cache) tracedInvalidatePrefix(ctx context.Context, name, prefix string) error {
	t := c.tracer()
	if t == nil {
		return c.invalidatePrefixNow(ctx, prefix)
	}
	ctx, span := c.startSpan(ctx, t, name, prefix, prefixPattern(prefix))
	err := c.invalidatePrefixNow(ctx, prefix)
	endSpan(span, nil, err)
	return err
}

// invalidatePrefixNow is InvalidatePrefix of a non-nil c, untraced.
func (c *Cache) invalidatePrefixNow(ctx context.Context, prefix string) error {
	if c.cfg.PolicyRefresh < 0 || strings.Contains(prefix, keyspace.Separator) {
		_, err := c.invalidate(ctx, prefixPattern(prefix))
		return err
	}
	st := c.addState(prefix, true) // its own generation, not otherPrefix's
	cl := c.client.Load()
	if cl == nil {
		st.errors.Add(1)
		return c.unavailable()
	}
	st.invalidations.Add(1) // before the bump: see invalidationSeq
	if err := c.bumpWithin(ctx, cl, st); err != nil {
		return opError("invalidate", prefixPattern(prefix), err)
	}
	return nil
}

// bumpWithin bumps st's generation (bump), waiting at most as ctx allows;
// the bump itself is bounded by SocketTimeout only, so a caller that gives
// up does not undo the invalidation its write needs.
func (c *Cache) bumpWithin(ctx context.Context, cl *universal, st *prefixState) error {
	if ctx.Done() == nil {
		bctx, cancel := c.opCtx(ctx)
		err := c.bump(bctx, cl, st, true)
		cancel()
		if err != nil {
			st.errors.Add(1)
		}
		return err
	}
	done := make(chan error, 1)
	var abandoned, counted atomic.Bool
	// count counts a failure once, by whichever side sees it first.
	count := func(err error) {
		if err != nil && counted.CompareAndSwap(false, true) {
			st.errors.Add(1)
		}
	}
	go func() {
		bctx, cancel := c.opCtx(context.WithoutCancel(ctx))
		err := c.bump(bctx, cl, st, true)
		cancel()
		if err != nil && abandoned.Load() {
			count(err)
			c.warn("cache: invalidation failed after its caller gave up", "prefix", st.name, "err", err)
		}
		done <- err
	}()
	select {
	case err := <-done:
		count(err)
		return err
	case <-ctx.Done():
		abandoned.Store(true)
		select {
		case err := <-done: // finished meanwhile: its result is the answer
			count(err)
			return err
		default:
		}
		return ctx.Err()
	}
}

// bump raises the generation of st's prefix in Redis (published to every
// process) and here; with reclaim it then has the old keys deleted in the
// background.
func (c *Cache) bump(ctx context.Context, cl *universal, st *prefixState, reclaim bool) error {
	// What this process knows is a floor: the hash may have lost a bump.
	gens, err := c.space.BumpGenerations(ctx, cl, []string{st.name}, map[string]int64{st.name: st.gen.Load()})
	if err != nil {
		return err
	}
	raiseGeneration(st, gens[st.name])
	if reclaim {
		c.reclaim(cl, st.name)
	}
	return nil
}

// reclaim deletes the keys of prefix in the background after a bump made
// them stale: SCAN + UNLINK, off the request path. One reclaim per prefix
// runs at a time; a bump during one has it run once more when done (the
// running SCAN may have passed keys written before that bump). Close stops
// it; keys left behind expire with their TTL.
func (c *Cache) reclaim(cl *universal, prefix string) {
	c.reclaimMu.Lock()
	defer c.reclaimMu.Unlock()
	if c.life.Err() != nil {
		return
	}
	if _, running := c.reclaims[prefix]; running {
		c.reclaims[prefix] = true
		return
	}
	c.reclaims[prefix] = false
	c.reclaimWG.Add(1)
	go func() {
		defer c.reclaimWG.Done()
		for {
			// Entries written since the bump, and tombstones, stay: see
			// purge.Options.Keep.
			keep := c.state(prefix).gen.Load()
			_, err := purge.All(c.life, cl.UniversalClient, c.space.PrefixPattern(prefix), purge.Options{Keep: &keep})
			if err != nil && c.life.Err() == nil {
				c.warn("cache: deleting invalidated keys failed; they expire with their TTL", "prefix", prefix, "err", err)
			}
			c.reclaimMu.Lock()
			again := c.reclaims[prefix] && c.life.Err() == nil
			if !again {
				delete(c.reclaims, prefix)
				c.reclaimMu.Unlock()
				return
			}
			c.reclaims[prefix] = false
			c.reclaimMu.Unlock()
		}
	}()
}
