package cache

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
	"github.com/cacheplane/cacheplane/pkg/cache/internal/nearstore"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Defaults of NearCacheConfig's zero fields.
const (
	DefaultNearCacheMaxEntries = 10_000
	DefaultNearCacheMaxBytes   = 64 << 20
	DefaultNearCacheTTL        = time.Minute
	DefaultNearCacheLease      = time.Second
)

// MinNearCacheLease is the shortest NearCacheConfig.Lease: each tracking
// connection is probed four times per lease.
const MinNearCacheLease = 10 * time.Millisecond

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
// Staleness bound. A hit is served from memory only while the tier holds a
// lease: the tracking connection is PINGed every Lease/4, and Redis answers
// a PING only after the invalidations of every write acknowledged before the
// PING was sent, on the same connection. The tier serves while the answer to
// a PING sent within the last Lease has arrived. So, whatever happens to the
// connection (healthy, stalled without a FIN, lost), a write acknowledged at
// time W is never hidden by this tier from a read that starts after W+Lease
// (1s at defaults, independent of SocketTimeout); with a healthy connection
// it is hidden only for the notification delay. While the lease has lapsed,
// reads go to Redis; the entries stay, and are served again once a fresh
// PING is answered (which proves the invalidations sent meanwhile have been
// applied). A connection that leaves a PING unanswered for SocketTimeout is
// replaced, and the tier emptied.
//
// A lost tracking connection is dialed again with exponential backoff; the
// tier is emptied and bypassed meanwhile, so entries it could not hear about
// are never served. Only a server that will never track keys for this
// client (no RESP3: NOPROTO; CLIENT renamed or missing: unknown command or
// subcommand; forbidden by ACL: NOPERM, as on some managed services) turns
// the tier off for the life of the Cache, with a logged warning; the Cache
// then works as without it. Any other refusal ("max number of clients
// reached", LOADING, a restarting server) is retried. NearCacheStats reports
// which of these states the tier is in.
//
// On a Redis Cluster the tier tracks every node, replicas included (a
// failover then promotes a node already tracked), probing each with CLUSTER
// NODES instead of PING: a hit is served only while every node's lease is
// current, a node new to the cluster empties the tier until it is tracked
// too, and a slot migration needs nothing more (whichever master
// acknowledges a write of the key reports it). Under Sentinel it tracks the
// master the sentinels name, probed with ROLE, and serves only while the
// sentinels, asked every Lease/4, confirm it; at a switch the tier is
// emptied and follows the new master. With Config.Client, a failover client
// cannot be followed (the tier stays off: give Addrs and MasterName
// instead). docs/near-cache.md has the argument.
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
	// Lease is how long the tier keeps serving from memory without proof
	// that its invalidation channel is live (see the staleness bound above):
	// the most a write by another process can stay hidden when that channel
	// stalls. Shorter costs more PINGs (four per Lease) and turns the tier
	// off on shorter hiccups. Default DefaultNearCacheLease, at least
	// MinNearCacheLease.
	Lease time.Duration
	// Prefixes lists the key prefixes (first ':'-separated segments) the
	// tier holds; empty means all. Tracking is registered for these
	// prefixes only, so writes to other prefixes cost this process nothing.
	// A key equal to a listed prefix ("cfg" for "cfg") is held too: what is
	// tracked is the prefix's key names without the separator, so its
	// invalidations also cover other prefixes that start with the same
	// letters ("cfgx"), a harmless extra message per such write.
	//
	// The list is fixed for the life of the Cache. A CachePolicy's per-prefix
	// nearCache choice selects among the tracked prefixes: false keeps a
	// prefix out of memory, true (or unset) keeps it in. It cannot add a
	// prefix the list leaves out: Redis registers BCAST prefixes per
	// connection, so this process would not hear of that prefix's writes.
	Prefixes []string
}

// NearCacheState is the state of a near-cache's invalidation channel, and
// so whether it serves hits.
type NearCacheState string

// The states of a near-cache.
const (
	// NearCacheConnecting: the first tracking connection is being set up.
	NearCacheConnecting NearCacheState = "connecting"
	// NearCacheActive: tracking is established and its lease is current;
	// the tier serves hits.
	NearCacheActive NearCacheState = "active"
	// NearCacheStalled: the tracking connection is open but has not answered
	// a PING within the lease; reads go to Redis until it does, or until it
	// is replaced after SocketTimeout.
	NearCacheStalled NearCacheState = "stalled"
	// NearCacheRetrying: the tracking connection was lost or refused for a
	// reason that may pass (LastError says which); it is dialed again with
	// backoff, and the tier is empty and bypassed meanwhile.
	NearCacheRetrying NearCacheState = "retrying"
	// NearCacheDisabled: the server will never track keys for this client
	// (Disabled says why), or the mode does not support it; the tier stays
	// off for the life of the Cache.
	NearCacheDisabled NearCacheState = "disabled"
	// NearCacheClosed: the Cache is closed.
	NearCacheClosed NearCacheState = "closed"
)

// NearCacheStats describe the near-cache's state.
type NearCacheStats struct {
	// State is where the tier stands; "" when the Cache has no near-cache.
	State NearCacheState `json:"state,omitempty"`
	// Enabled reports that the tier serves hits (State is active).
	Enabled bool `json:"enabled"`
	// Disabled says why the tier is off for good ("" while it may serve).
	Disabled string `json:"disabled,omitempty"`
	// LastError is why the last tracking connection failed or was refused,
	// while the tier is retrying ("" once it is established again).
	LastError string `json:"lastError,omitempty"`
	// LeaseLapses counts the times the tier stopped serving because its
	// tracking connection fell silent for longer than the lease.
	LeaseLapses int64 `json:"leaseLapses"`
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
	store    *nearstore.Store

	// on is true while tracking is established on every node the tier
	// follows: only then are entries filled. epoch changes whenever on does
	// and at every flush; a read fills its entry only if the epoch it
	// started in is still current, so a value read while invalidations
	// could have been missed never lands.
	on     atomic.Bool
	epoch  atomic.Uint64
	tokens atomic.Uint64
	// leaseEnd (mono.Now) is when the lease lapses: the earliest of the
	// nodes' leases (each the send time of its newest accepted probe plus
	// cfg.Lease) and the topology's; 0 while tracking is off. Hits are
	// served only before it. Written under mu (recompute).
	leaseEnd atomic.Int64

	// mu guards the nodes the tier follows, their leases and the
	// topology's (nearcache_topology.go).
	mu      sync.Mutex
	nodes   map[string]*nearNode // by address
	topoEnd int64                // the topology's lease (Sentinel); math.MaxInt64 elsewhere
	// follow starts a node's tracker; set by run before the first node.
	follow func(nd *nearNode)

	disabled atomic.Pointer[string]
	lastErr  atomic.Pointer[string] // while retrying; nil once established
	closed   atomic.Bool
	flushes  atomic.Int64
	lapses   atomic.Int64

	// trackAddr, when set (by tests, before Connect), is where the tracking
	// connection dials instead of the pool's address: a stall proxy
	// (Standalone).
	trackAddr string
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
	switch {
	case cfg.Lease == 0:
		cfg.Lease = DefaultNearCacheLease
	case cfg.Lease < MinNearCacheLease:
		return nil, fmt.Errorf("cache: NearCache.Lease %v is shorter than %v (the tracking connection is PINGed four times per lease)", cfg.Lease, MinNearCacheLease)
	}
	n := &nearCache{store: nearstore.New(cfg.MaxEntries, cfg.MaxBytes)}
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
//
// A cached prefix p is tracked as "KP:p", not "KP:p:": the tier holds the
// key "p" itself too (PrefixOf("p") is "p"), and "KP:p:" does not cover
// "KP:p", so another process's write to it would go unheard until the
// entry's TTL. The other way out, never holding such keys, would lose
// nothing in correctness either, but would quietly send a whole class of
// keys (a "config" key beside "config:db") to Redis on every read; the cost
// of this way is only extra invalidations for keys of unlisted prefixes that
// start with p's letters, which find nothing to drop. Redis refuses
// overlapping BCAST prefixes, so a prefix that another one starts ("cfgx"
// beside "cfg") is left out: the shorter one covers it.
func (n *nearCache) trackPrefixes(space keyspace.Space) []string {
	if n.prefixes == nil {
		if space.KeyPrefix() == "" {
			return nil // BCAST without PREFIX: every key
		}
		return []string{space.DataKey("")}
	}
	var ps []string
	for p := range n.prefixes {
		ps = append(ps, space.DataKey(p))
	}
	slices.Sort(ps)
	// Sorted, whatever lies between a prefix and a longer one it starts
	// also starts with it, so comparing with the last one kept suffices.
	var kept []string
	for _, p := range ps {
		if len(kept) > 0 && strings.HasPrefix(p, kept[len(kept)-1]) {
			continue
		}
		kept = append(kept, p)
	}
	return kept
}

// serving reports whether hits may be served at now (mono.Now): tracking is
// established and its lease is current.
func (n *nearCache) serving(now int64) bool { return now < n.leaseEnd.Load() }

// flush empties the tier and voids the reads in flight.
func (n *nearCache) flush() {
	n.epoch.Add(1)
	n.store.Clear()
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
			n.store.Invalidate(rel)
		}
	}
}

// nearBackoff is the pause before the next dial of the tracking connection
// after prev: doubling from 50ms up to 5s.
func nearBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, 50*time.Millisecond), 5*time.Second)
}

func (n *nearCache) setLastErr(err error) {
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
	}
	n.lastErr.Store(&msg)
}

// PTTL's answers for a key without a TTL, and for a key that does not exist
// (any more).
const (
	noExpiry = -1
	keyGone  = -2
)

// allHits is every hit of the prefix: from Redis and from the near-cache.
func (st *prefixState) allHits() int64 { return st.hits.Load() + st.localHits.Load() }

// nearEvict drops key from the near-cache after this process wrote it, so
// that its next read goes to Redis without waiting for the invalidation.
func (c *Cache) nearEvict(key string) {
	if n := c.near; n != nil {
		n.store.Invalidate(key)
	}
}

// nearSync returns once the invalidations of the keys an Invalidate deleted
// have been applied here. If that cannot be confirmed, the tier is flushed.
// It waits at most the lease (and the socket timeout): a tracking
// connection that does not answer within the lease is one the tier would
// stop trusting anyway, and a flush keeps the promise at once. On a cluster
// every node's connection is asked, at once: the keys were on all of them.
func (c *Cache) nearSync(ctx context.Context) {
	n := c.near
	if n == nil || !n.on.Load() {
		return // off: emptied, and fills only start after it is back on
	}
	conns := n.conns()
	if len(conns) == 0 || !n.serving(mono.Now()) {
		n.flush()
		return
	}
	bctx, cancel := c.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	bctx, cancelLease := context.WithTimeout(bctx, n.cfg.Lease)
	defer cancelLease()
	var failed atomic.Bool
	var wg sync.WaitGroup
	for _, t := range conns {
		wg.Go(func() {
			if err := t.Barrier(bctx); err != nil {
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	if failed.Load() {
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
		Evictions:     n.store.Evictions.Load(),
		Invalidations: n.store.Invalidations.Load(),
		Flushes:       n.flushes.Load(),
		LeaseLapses:   n.lapses.Load(),
	}
	switch d, e := n.disabled.Load(), n.lastErr.Load(); {
	case d != nil:
		s.State, s.Disabled = NearCacheDisabled, *d
	case n.closed.Load():
		s.State = NearCacheClosed
	case n.serving(mono.Now()):
		s.State = NearCacheActive
	case n.on.Load():
		s.State = NearCacheStalled
	case e != nil:
		s.State, s.LastError = NearCacheRetrying, *e
	default:
		s.State = NearCacheConnecting
	}
	s.Enabled = s.State == NearCacheActive
	s.Entries, s.Bytes = n.store.Size()
	return s
}
