package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/internal/keyspace"
	"github.com/cacheplane/cacheplane/internal/redisconn"
)

// Defaults of NearCacheConfig's zero fields.
const (
	DefaultNearCacheMaxEntries = 10_000
	DefaultNearCacheMaxBytes   = 64 << 20
	DefaultNearCacheTTL        = time.Minute
)

// NearCacheConfig enables the near-cache: a bounded in-process tier in front
// of Redis for Get and GetOrLoad (and Cached, which uses it), so that a hot
// key is read from memory instead of over the network.
//
// It stays correct across processes: a dedicated connection asks Redis to
// broadcast every change to keys under the cached prefixes (RESP3 CLIENT
// TRACKING in BCAST mode), so a Set, Delete, Invalidate or expiry anywhere,
// by any client, evicts the key here within the notification delay
// (typically well under a millisecond on a LAN), and the policy generations
// the operator publishes make invalidated entries misses as they do for
// Redis reads. Writes through this Cache evict its own copy before they
// return, and Invalidate waits until the invalidations of the keys it deleted
// have been applied, so a process always reads its own writes.
//
// When the tracking connection is lost, the tier is emptied and bypassed
// until tracking is re-established (entries it can no longer hear about are
// never served). A server that refuses tracking (no RESP3, CLIENT renamed or
// forbidden by ACL, as on some managed services) turns the tier off for the
// life of the Cache, with a logged warning; the Cache then works as without
// it. The tier needs Standalone mode for now: in Cluster and Sentinel mode it
// stays off with a warning (tracking would have to follow each master).
//
// Entries are the stored bytes, decoded on every hit, so a caller never
// shares a decoded value with another. Redis names invalidated keys without
// their database, so a write to the same key name in another database of the
// server evicts here too: a wasted entry, never a stale one.
type NearCacheConfig struct {
	// MaxEntries bounds the number of entries. Default
	// DefaultNearCacheMaxEntries.
	MaxEntries int
	// MaxBytes bounds the memory of the entries: keys, stored values and a
	// fixed overhead of about 112 bytes each. A value larger than a
	// sixteenth of MaxBytes (or MaxBytes, below 1 MiB) is not kept. Default
	// DefaultNearCacheMaxBytes.
	MaxBytes int64
	// TTL is the longest an entry is served from memory: a safety net for
	// invalidations that could not arrive, not the way freshness is kept.
	// An entry never outlives the key's TTL in Redis either. Default
	// DefaultNearCacheTTL.
	TTL time.Duration
	// Prefixes lists the key prefixes (first ':'-separated segments) the
	// tier holds; empty means all. Tracking is registered for these
	// prefixes only, so writes to other prefixes cost this process nothing.
	//
	// The list is fixed for the life of the Cache. A CachePolicy's per-prefix
	// nearCache choice selects among the tracked prefixes: false keeps a
	// prefix out of memory, true (or unset) keeps it in. It cannot add a
	// prefix the list leaves out: Redis registers BCAST prefixes per
	// connection, so this process would not hear of that prefix's writes.
	Prefixes []string
}

// NearCacheStats describe the near-cache's state.
type NearCacheStats struct {
	// Enabled reports that tracking is established and the tier serves hits.
	Enabled bool `json:"enabled"`
	// Disabled says why the tier is off for good ("" while it may serve).
	Disabled string `json:"disabled,omitempty"`
	// Entries and Bytes are what the tier holds now.
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// Evictions counts entries dropped to stay within the bounds.
	Evictions int64 `json:"evictions"`
	// Invalidations counts entries dropped because their key changed.
	Invalidations int64 `json:"invalidations"`
	// Flushes counts times the whole tier was emptied: a lost tracking
	// connection, a FLUSHDB/FLUSHALL, an Invalidate that could not confirm
	// its invalidations arrived.
	Flushes int64 `json:"flushes"`
}

// nearCache is the near-cache of one Cache.
type nearCache struct {
	cfg      NearCacheConfig
	prefixes map[string]bool // nil: every prefix
	store    *nearStore

	// on is true while tracking is established: only then are entries
	// served or filled. epoch changes whenever on does and at every flush; a
	// read fills its entry only if the epoch it started in is still current,
	// so a value read while invalidations could have been missed never
	// lands.
	on     atomic.Bool
	epoch  atomic.Uint64
	tokens atomic.Uint64

	conn     atomic.Pointer[trackConn]
	disabled atomic.Pointer[string]
	flushes  atomic.Int64
}

// newNearCache validates cfg and applies its defaults.
func newNearCache(cfg NearCacheConfig) (*nearCache, error) {
	switch {
	case cfg.MaxEntries == 0:
		cfg.MaxEntries = DefaultNearCacheMaxEntries
	case cfg.MaxEntries < 0:
		return nil, fmt.Errorf("cache: NearCache.MaxEntries is negative (%d)", cfg.MaxEntries)
	}
	switch {
	case cfg.MaxBytes == 0:
		cfg.MaxBytes = DefaultNearCacheMaxBytes
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("cache: NearCache.MaxBytes is negative (%d)", cfg.MaxBytes)
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultNearCacheTTL
	case cfg.TTL < 0:
		return nil, fmt.Errorf("cache: NearCache.TTL is negative (%v)", cfg.TTL)
	}
	n := &nearCache{store: newNearStore(cfg.MaxEntries, cfg.MaxBytes)}
	if len(cfg.Prefixes) > 0 {
		cfg.Prefixes = slices.Clone(cfg.Prefixes)
		n.prefixes = make(map[string]bool, len(cfg.Prefixes))
		for _, p := range cfg.Prefixes {
			if strings.Contains(p, keyspace.Separator) {
				return nil, fmt.Errorf("cache: NearCache.Prefixes: %q is not a prefix (it contains %q)", p, keyspace.Separator)
			}
			n.prefixes[p] = true
		}
	}
	n.cfg = cfg
	return n, nil
}

// covers reports whether the tier holds keys of prefix.
func (n *nearCache) covers(prefix string) bool {
	return n.prefixes == nil || n.prefixes[prefix]
}

// trackPrefixes are the Redis key prefixes to track: each cached prefix's
// data keys, or the whole key space of the Cache.
func (n *nearCache) trackPrefixes(space keyspace.Space) []string {
	if n.prefixes == nil {
		if space.KeyPrefix() == "" {
			return nil // BCAST without PREFIX: every key
		}
		return []string{space.DataKey("")}
	}
	var ps []string
	for p := range n.prefixes {
		ps = append(ps, space.DataKey(p+keyspace.Separator))
	}
	slices.Sort(ps)
	return ps
}

// setOn and setOff move the epoch with the state (see nearCache.on): setOn
// first, so a read that sees on already holds the new epoch; setOff after,
// so a read that started before cannot fill.
func (n *nearCache) setOn() {
	n.epoch.Add(1)
	n.on.Store(true)
}

func (n *nearCache) setOff() {
	n.on.Store(false)
	n.flush()
}

// flush empties the tier and voids the reads in flight.
func (n *nearCache) flush() {
	n.epoch.Add(1)
	n.store.clear()
	n.flushes.Add(1)
}

// invalidate applies one invalidation push: Redis keys, or nil for all.
func (n *nearCache) invalidate(space keyspace.Space, keys []string) {
	if keys == nil {
		n.flush()
		return
	}
	for _, k := range keys {
		if rel, ok := space.Relative(k); ok {
			n.store.invalidate(rel)
		}
	}
}

// run keeps a tracking connection open until ctx ends, serving the tier
// while it is up.
func (n *nearCache) run(ctx context.Context, c *Cache) {
	dial, err := c.nearDialer()
	if err != nil {
		n.disable(c, err)
		return
	}
	prefixes := n.trackPrefixes(c.space)
	backoff := time.Duration(0)
	lost := false
	for ctx.Err() == nil {
		t, err := dialTracker(ctx, dial, c.cfg.Username, c.cfg.Password, prefixes, c.timeout)
		if err != nil {
			if errors.Is(err, errTrackingRefused) {
				n.disable(c, err)
				return
			}
			if ctx.Err() == nil {
				c.warn("cache: near-cache cannot open its tracking connection; retrying, the tier stays off meanwhile", "err", err)
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if lost {
			c.log.Info("cache: near-cache tracking re-established; the tier serves again")
		}
		n.conn.Store(t)
		n.setOn()
		err = t.serve(ctx, func(keys []string) { n.invalidate(c.space, keys) })
		n.setOff()
		n.conn.Store(nil)
		if ctx.Err() == nil {
			lost = true
			c.warn("cache: near-cache lost its tracking connection; the tier is flushed and off until it is back", "err", err)
		}
	}
}

func (n *nearCache) disable(c *Cache, err error) {
	msg := err.Error()
	n.disabled.Store(&msg)
	n.setOff()
	// Once per Cache, so not through the rate-limited warn.
	c.log.Warn("cache: near-cache disabled; reads go to Redis", "err", err)
}

// nearDialer returns how to dial the tracking connection: like the pool's
// connections (address, TLS, keep-alive, dial timeout).
func (c *Cache) nearDialer() (func(context.Context) (net.Conn, error), error) {
	if c.cfg.Mode != ModeStandalone {
		return nil, fmt.Errorf("the near-cache needs Standalone mode, not %s", c.cfg.Mode)
	}
	opts, err := redisconn.ClientOptions(c.conn)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (net.Conn, error) {
		if opts.Dialer != nil {
			return opts.Dialer(ctx, opts.Network, opts.Addr)
		}
		return redis.NewDialer(opts)(ctx, opts.Network, opts.Addr)
	}, nil
}

// read returns key's payload from the near-cache or from Redis. local
// reports a near-cache hit. Counting is as in getEntry.
func (c *Cache) read(ctx context.Context, st *prefixState, key string) (payload []byte, local, found bool, err error) {
	n := c.near
	if n == nil || !n.on.Load() || !n.covers(keyspace.PrefixOf(key)) || st.near.Load() == nearOff {
		payload, found, err = c.getEntry(ctx, st, key)
		return payload, false, found, err
	}
	if e := n.store.get(key); e != nil {
		// on is checked again: a flush may be emptying the shards right now.
		if e.gen >= st.gen.Load() && n.on.Load() {
			return e.payload, true, true, nil
		}
		n.store.drop(e) // invalidated by the policy since it was stored
	}
	epoch := n.epoch.Load()
	token := n.tokens.Add(1)
	if !n.on.Load() || !n.store.reserve(key, token) {
		payload, found, err = c.getEntry(ctx, st, key)
		return payload, false, found, err
	}
	gen, payload, ttl, found, err := c.getEntryTTL(ctx, st, key)
	if !found {
		n.store.cancel(key, token)
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
		n.store.cancel(key, token)
		return payload, false, true, nil
	}
	// A copy: payload may alias the client's buffers (see Codec).
	n.store.fill(key, token, slices.Clone(payload), gen, monoNow()+int64(life), func() bool {
		return n.on.Load() && n.epoch.Load() == epoch
	})
	return payload, false, true, nil
}

// PTTL's answers for a key without a TTL, and for a key that does not exist
// (any more).
const (
	noExpiry = -1
	keyGone  = -2
)

// getEntryTTL is getEntry that also returns the entry's generation and the
// key's remaining TTL, read in the same round trip: -1 for none, keyGone when
// the key expired between the two commands.
func (c *Cache) getEntryTTL(ctx context.Context, st *prefixState, key string) (gen int64, payload []byte, ttl time.Duration, found bool, err error) {
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
		return 0, nil, 0, false, nil
	}
	return gen, payload, pttl.Val(), true, nil
}

// allHits is every hit of the prefix: from Redis and from the near-cache.
func (st *prefixState) allHits() int64 { return st.hits.Load() + st.localHits.Load() }

// nearEvict drops key from the near-cache after this process wrote it, so
// that its next read goes to Redis without waiting for the invalidation.
func (c *Cache) nearEvict(key string) {
	if n := c.near; n != nil {
		n.store.invalidate(key)
	}
}

// nearSync returns once the invalidations of the keys an Invalidate deleted
// have been applied here. If that cannot be confirmed, the tier is flushed.
func (c *Cache) nearSync(ctx context.Context) {
	n := c.near
	if n == nil || !n.on.Load() {
		return // off: emptied, and fills only start after it is back on
	}
	t := n.conn.Load()
	if t == nil {
		n.flush()
		return
	}
	bctx, cancel := c.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := t.barrier(bctx); err != nil {
		n.flush()
	}
}

// NearCacheStats returns the near-cache's state; the zero value when the
// Cache has none.
func (c *Cache) NearCacheStats() NearCacheStats {
	if c == nil || c.near == nil {
		return NearCacheStats{}
	}
	n := c.near
	s := NearCacheStats{
		Enabled:       n.on.Load(),
		Evictions:     n.store.evictions.Load(),
		Invalidations: n.store.invalidations.Load(),
		Flushes:       n.flushes.Load(),
	}
	if d := n.disabled.Load(); d != nil {
		s.Disabled = *d
	}
	s.Entries, s.Bytes = n.store.size()
	return s
}
