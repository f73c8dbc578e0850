package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// Batch reads and writes: the pattern users write by hand around single-key
// caches, in one round trip per node. Each key is judged exactly as Get,
// Set and GetOrLoad judge it (generations, tombstones, the near-cache, the
// stats, the write-back's fence); only the transport is batched.

// mgetChunk bounds the keys of one MGET: a larger command would hold the
// server's single thread (and the reply buffer) for longer than other
// clients should wait.
const mgetChunk = 1000

// batchRead is what a batch read found under one key.
type batchRead struct {
	key     string
	st      *prefixState
	payload []byte
	found   bool
	local   bool // served by the near-cache
	obs     observation
}

// GetMany returns the values of keys that are cached: a key that is missing,
// invalidated, deleted (its tombstone) or does not decode is absent from the
// map. It reads the near-cache first (if enabled), then the rest with one
// MGET per 1,000 keys, all pipelined in one round trip per node (on a
// Cluster, one MGET per hash slot). Duplicate keys are read once. Stats count
// a hit or a miss per distinct key, as Get does; zero keys make no round trip.
//
// The map holds what was found even when err is not nil: err joins the
// decode errors and the Redis error (the keys it hid are absent, counted as
// errors, not misses). A nil *Cache returns an empty map.
func GetMany[T any](ctx context.Context, c *Cache, keys []string) (map[string]T, error) {
	if c == nil || len(keys) == 0 {
		return make(map[string]T), nil
	}
	keys = dedup(keys)
	out := make(map[string]T, len(keys)) // growing it costs more than a miss's slot
	reads, err := c.readMany(ctx, keys)
	derr := decodeMany(c, reads, out)
	return out, errors.Join(err, derr)
}

// decodeMany decodes the payloads found into out, counting a hit for each
// that decodes and a miss and an error for each that does not (as get does).
func decodeMany[T any](c *Cache, reads []batchRead, out map[string]T) error {
	var errs []error
	for i := range reads {
		r := &reads[i]
		if !r.found {
			continue
		}
		if isNegative(r.payload) {
			// A cached "no value" (see ErrNoValue): a hit, absent from the
			// map, and found, so GetOrLoadMany does not load it again.
			if r.local {
				r.st.localHits.Add(1)
			} else {
				r.st.hits.Add(1)
			}
			continue
		}
		var v T
		if err := c.codec.Unmarshal(r.payload, &v); err != nil {
			r.st.misses.Add(1)
			r.st.errors.Add(1)
			r.obs.settle() // a miss: a write-back replaces what did not decode
			r.found = false
			errs = append(errs, fmt.Errorf("cache: decode %q: %w", r.key, err))
			continue
		}
		if r.local {
			r.st.localHits.Add(1)
		} else {
			r.st.hits.Add(1)
		}
		out[r.key] = v
	}
	return errors.Join(errs...)
}

// dedup returns keys without repeats, in their first order: keys itself
// (not copied) if it has none.
func dedup(keys []string) []string {
	seen := make(map[string]struct{}, len(keys))
	var out []string // nil until the first repeat
	for i, k := range keys {
		if _, ok := seen[k]; ok {
			if out == nil {
				out = slices.Clone(keys[:i])
			}
			continue
		}
		seen[k] = struct{}{}
		if out != nil {
			out = append(out, k)
		}
	}
	if out == nil {
		return keys
	}
	return out
}

// readMany reads distinct keys: the near-cache first, then Redis. It counts
// misses and errors; the caller counts the hits once payloads decode. Each
// read's obs records what Redis returned, for a write-back; a key whose read
// failed has none (obs.ok false) and err says why.
func (c *Cache) readMany(ctx context.Context, keys []string) ([]batchRead, error) {
	reads := make([]batchRead, len(keys))
	for i, k := range keys {
		reads[i] = batchRead{key: k, st: c.state(keyspace.PrefixOf(k))}
	}
	if err := c.generationsKnown(ctx, reads[0].st, "get", keys[0]); err != nil {
		for _, r := range reads[1:] {
			c.countError(ctx, r.st) // one error per key, as one Get each would
		}
		return reads, err
	}
	// The near-cache serves what it holds, as read does; the keys it misses
	// are not filled from the batch (a fill needs each key's PTTL).
	remote := make([]int, 0, len(reads))
	if n := c.near; n != nil {
		now := mono.Now()
		for i := range reads {
			r := &reads[i]
			if n.serving(now) && n.covers(keyspace.PrefixOf(r.key)) && r.st.near.Load() != nearOff {
				if e := n.store.GetAt(r.key, now); e != nil {
					if e.Gen >= r.st.gen.Load() && n.serving(now) {
						r.payload, r.found, r.local = e.Payload, true, true
						continue
					}
					n.store.Drop(e) // invalidated by the policy since it was stored
				}
			}
			remote = append(remote, i)
		}
	} else {
		for i := range reads {
			remote = append(remote, i)
		}
	}
	if len(remote) == 0 {
		return reads, nil
	}
	cl := c.client.Load()
	if cl == nil {
		for _, i := range remote {
			reads[i].st.errors.Add(1)
		}
		return reads, c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	groups := c.mgetGroups(cl, reads, remote)
	dataKeys := func(idx []int) []string {
		rkeys := make([]string, len(idx))
		for j, i := range idx {
			rkeys[j] = c.space.DataKey(reads[i].key)
		}
		return rkeys
	}
	type reply struct {
		vals []any
		err  error
	}
	replies := make([]reply, len(groups))
	var err error
	if len(groups) == 1 {
		// One MGET (the common case): sent as it is, without a pipeline's
		// extra allocations and hooks.
		replies[0].vals, replies[0].err = c.redisMGet(octx, cl, dataKeys(groups[0]))
	} else {
		pipe := cl.Pipeline()
		cmds := make([]*redis.SliceCmd, len(groups))
		for g, idx := range groups {
			cmds[g] = pipe.MGet(octx, dataKeys(idx)...)
		}
		_, err = pipe.Exec(octx)
		for g, cmd := range cmds {
			replies[g].vals, replies[g].err = cmd.Result()
		}
	}
	var firstErr error
	for g, idx := range groups {
		vals, cerr := replies[g].vals, replies[g].err
		if cerr == nil && len(vals) != len(idx) {
			cerr = fmt.Errorf("MGET returned %d values for %d keys", len(vals), len(idx))
		}
		if cerr != nil {
			for _, i := range idx {
				c.countError(ctx, reads[i].st)
			}
			if firstErr == nil {
				firstErr = opError("get", reads[idx[0]].key, cerr)
			}
			continue
		}
		for j, i := range idx {
			r := &reads[i]
			s, ok := vals[j].(string)
			if !ok { // nil: missing
				r.obs.saw(nil)
				r.st.misses.Add(1)
				continue
			}
			b := replyBytes(s)
			if _, payload, usable := c.usableEntry(r.st, r.key, b); usable {
				r.obs.sawUsable(b)
				r.payload, r.found = payload, true
			} else {
				r.obs.saw(b)
			}
		}
	}
	if firstErr == nil && err != nil {
		firstErr = opError("get", keys[0], err)
	}
	return reads, firstErr
}

// redisMGet is MGET keys, never autopipelined: measured at 64 callers
// (docs/benchmarks.md), a 100-key MGET through the autopipeliner cost more
// than on a pooled connection, whose reply needs no hand-off.
func (c *Cache) redisMGet(ctx context.Context, cl *universal, keys []string) ([]any, error) {
	return cl.MGet(ctx, keys...).Result()
}

// mgetGroups splits the reads at positions idx into MGETs: one per hash slot
// on a Cluster (a multi-key command must stay within a slot; go-redis routes
// each MGET of the pipeline by its first key), each at most mgetChunk keys.
func (c *Cache) mgetGroups(cl *universal, reads []batchRead, idx []int) [][]int {
	var groups [][]int
	if _, cluster := cl.UniversalClient.(*redis.ClusterClient); !cluster {
		groups = [][]int{idx}
	} else {
		bySlot := map[int]int{} // slot → position in groups
		for _, i := range idx {
			s := purge.Slot(c.space.DataKey(reads[i].key))
			g, ok := bySlot[s]
			if !ok {
				g = len(groups)
				bySlot[s] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], i)
		}
	}
	var chunks [][]int
	for _, g := range groups {
		for len(g) > mgetChunk {
			chunks = append(chunks, g[:mgetChunk])
			g = g[mgetChunk:]
		}
		chunks = append(chunks, g)
	}
	return chunks
}

// SetMany stores every item for ttl, as Set stores one (ttl 0: the policy's
// TTL of each key's prefix, or DefaultTTL; negative: an error wrapping
// ErrInvalidTTL), in one pipelined round trip per node. Every value is
// encoded first: if the codec fails on any, its error is returned and
// nothing is stored. On a Redis error some items may have been stored.
func (c *Cache) SetMany(ctx context.Context, items map[string]any, ttl time.Duration) error {
	if len(items) == 0 {
		return nil
	}
	keys := make([]string, 0, len(items))
	for k := range items {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic errors
	if err := checkTTL("set", keys[0], ttl); err != nil {
		return err
	}
	payloads := make([][]byte, len(keys))
	sts := make([]*prefixState, len(keys))
	for i, k := range keys {
		sts[i] = c.state(keyspace.PrefixOf(k))
		p, err := c.codec.Marshal(items[k])
		if err != nil {
			sts[i].errors.Add(1)
			return fmt.Errorf("cache: encode %q: %w", k, err)
		}
		payloads[i] = p
	}
	if err := c.generationsKnown(ctx, sts[0], "set", keys[0]); err != nil {
		return err
	}
	cl := c.client.Load()
	if cl == nil {
		sts[0].errors.Add(1)
		return c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	pipe := cl.Pipeline()
	cmds := make([]*redis.StatusCmd, len(keys))
	for i, k := range keys {
		// Tagged with the generation now, as Set tags it.
		b := c.appendEntry(make([]byte, 0, len(payloads[i])+12), sts[i].gen.Load(), payloads[i])
		cmds[i] = pipe.Set(octx, c.space.DataKey(k), b, c.effectiveTTL(sts[i], ttl))
	}
	_, err := pipe.Exec(octx)
	// Even after an error: the writes may have landed.
	for _, k := range keys {
		c.nearEvict(k)
	}
	if err == nil {
		return nil
	}
	var first error
	for i, cmd := range cmds {
		if cerr := cmd.Err(); cerr != nil {
			c.countError(ctx, sts[i])
			if first == nil {
				first = opError("set", keys[i], cerr)
			}
		}
	}
	if first == nil {
		first = opError("set", keys[0], err)
	}
	return first
}

// GetOrLoadMany returns the cached values of keys, and calls load once with
// the keys that are not cached (in the order given, without duplicates) for
// the rest; what load returns for them is written back for ttl (0: as in
// Set) and returned. Keys load leaves out are absent from the map. A negative
// ttl is an error wrapping ErrInvalidTTL, before anything is read or loaded.
//
// Each write-back is fenced exactly as GetOrLoad's: the prefix's generation
// and this process's invalidations are read before load runs, and the write
// is a compare-and-set against what the key's miss saw, so an Invalidate,
// InvalidatePrefix, Set or Delete (in any process) that overlaps the load
// keeps that key's value out of the cache. The write-backs go out pipelined.
// Unlike GetOrLoad, concurrent calls do not share loads.
//
// A load that returns an error wrapping ErrNoValue together with its map
// declares the keys it left out missing at the source: those are cached as
// "no value" for Config.NegativeTTL (see ErrNoValue), so the next call does
// not load them again, and the call returns the map with a nil error. Keys
// left out without ErrNoValue are loaded again by the next call.
//
// Other errors of load are returned and never cached. Redis errors are not: they
// are counted and logged, and the keys whose read failed are loaded and not
// written back (fail open). A nil *Cache calls load with all keys.
func GetOrLoadMany[T any](ctx context.Context, c *Cache, keys []string, ttl time.Duration,
	load func(ctx context.Context, missing []string) (map[string]T, error)) (map[string]T, error) {
	if len(keys) == 0 {
		return make(map[string]T), nil
	}
	if err := checkTTL("load", keys[0], ttl); err != nil {
		return nil, err
	}
	keys = dedup(keys)
	if c == nil {
		return load(ctx, slices.Clone(keys)) // dedup may return the caller's slice
	}
	out := make(map[string]T, len(keys))
	reads, err := c.readMany(ctx, keys)
	_ = decodeMany(c, reads, out) // a value that does not decode is reloaded
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.warn("cache: batch read failed; loading from the source", "key", keys[0], "keys", len(keys), "err", err)
	}
	var missing []string
	var misses []*batchRead
	for i := range reads {
		if !reads[i].found {
			missing = append(missing, reads[i].key)
			misses = append(misses, &reads[i])
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	// Before the load reads its source: see GetOrLoad.
	type fence struct{ gen, seq int64 }
	fences := map[*prefixState]fence{}
	for _, r := range misses {
		if _, ok := fences[r.st]; !ok {
			fences[r.st] = fence{seq: c.invalidationSeq(r.st), gen: r.st.gen.Load()}
		}
	}
	start := time.Now()
	loaded, err := load(ctx, missing)
	elapsed := time.Since(start).Seconds()
	for st := range fences {
		c.loadTime.WithLabelValues(st.label).Observe(elapsed)
	}
	noValue := errors.Is(err, ErrNoValue)
	if err != nil && !noValue {
		return nil, err
	}
	var backs []writeBack
	for _, r := range misses {
		v, ok := loaded[r.key]
		if !ok && !noValue {
			continue
		}
		f := fences[r.st]
		cacheable := r.obs.ok && !c.invalidated(r.st, f.gen, f.seq) // else nothing observed, or invalidated during the load
		if !ok {
			if cacheable {
				backs = append(backs, writeBack{key: r.key, st: r.st, gen: f.gen, seq: f.seq, obs: r.obs.sum,
					entry: keyspace.AppendNegative(nil, f.gen), ttl: min(c.cfg.NegativeTTL, c.effectiveTTL(r.st, ttl))})
			}
			continue
		}
		out[r.key] = v
		if !cacheable {
			continue
		}
		payload, err := c.codec.Marshal(v)
		if err != nil {
			r.st.errors.Add(1)
			c.warn("cache: write-back failed; value served uncached", "key", r.key, "err", fmt.Errorf("cache: encode %q: %w", r.key, err))
			continue
		}
		backs = append(backs, writeBack{key: r.key, st: r.st, gen: f.gen, seq: f.seq, obs: r.obs.sum,
			entry: c.appendEntry(make([]byte, 0, len(payload)+12), f.gen, payload), ttl: c.effectiveTTL(r.st, ttl)})
	}
	if len(backs) > 0 {
		if err := c.storeLoadedMany(ctx, backs); err != nil {
			c.warn("cache: write-back failed; values served uncached", "key", backs[0].key, "err", err)
		}
	}
	return out, nil
}

// writeBack is one loaded entry to store after a miss (see storeLoaded).
type writeBack struct {
	key      string
	st       *prefixState
	gen, seq int64
	obs      string // the observation's sum
	entry    []byte
	ttl      time.Duration
}

// storeLoadedMany is storeLoaded for many keys, the compare-and-sets
// pipelined: each is stored only if its key still holds what its miss saw,
// and what landed while an invalidation in this process started is taken
// back.
func (c *Cache) storeLoadedMany(ctx context.Context, backs []writeBack) error {
	cl := c.client.Load()
	if cl == nil {
		backs[0].st.errors.Add(1)
		return c.unavailable()
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	pipe := cl.Pipeline()
	cmds := make([]*redis.Cmd, len(backs))
	for i, w := range backs {
		// EVAL, not EVALSHA: a NOSCRIPT inside a pipeline is not retried.
		cmds[i] = writeBackScript.Eval(octx, pipe, []string{c.space.DataKey(w.key)}, w.obs, w.entry, max(w.ttl.Milliseconds(), 1))
	}
	_, _ = pipe.Exec(octx) // each command's error is judged below
	var first error
	for i, w := range backs {
		// Even after an error: the write may have landed.
		c.nearEvict(w.key)
		n, err := cmds[i].Int64()
		wrote := n == 1
		if scriptRefused(err) {
			c.warn("cache: cannot run the write-back script; writing back unfenced", "err", err)
			err, wrote = cl.Set(octx, c.space.DataKey(w.key), w.entry, w.ttl).Err(), true
		}
		if err != nil {
			c.countError(ctx, w.st)
			if first == nil {
				first = opError("set", w.key, err)
			}
		}
		if (!wrote && err == nil) || !c.invalidated(w.st, w.gen, w.seq) {
			continue
		}
		// An invalidation started while the write was on its way: take back
		// what this call wrote (see storeLoaded).
		uerr := c.redisUnset(octx, cl, c.space.DataKey(w.key), w.entry)
		c.nearEvict(w.key)
		if uerr != nil {
			c.countError(ctx, w.st)
			if first == nil {
				first = opError("delete", w.key, uerr)
			}
		}
	}
	return first
}

// replyBytes is the bytes of an MGET reply's string without a copy: they are
// only read (a Codec must not modify what it decodes, see Codec), and a
// copy per key was a tenth of a batch's cost. An empty value is present, so
// it is not nil (nil stands for a missing key).
func replyBytes(s string) []byte {
	if s == "" {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
