// Package cache is a Redis cache for Go services: typed Get/Set with TTLs,
// loaders with stampede protection, batch reads and writes, write
// invalidation, an optional in-process near-cache, an HTTP middleware and
// hit/miss statistics. It fails open: when Redis is down or slow, loaders,
// wrappers and the middleware still serve data from their source, and no call
// waits on Redis longer than Config.SocketTimeout.
//
// A cache follows the CachePolicy that the cacheplane operator publishes for
// its KeyPrefix: per-prefix TTLs, and invalidations that take effect in every
// process within milliseconds. Without an operator it is a plain Redis cache.
//
// # Opening a cache
//
// Open validates the Config and returns at once; it connects in the
// background, so a service starts (and serves from its source) while Redis is
// unreachable. Ready waits for the first connection, as long as its context
// allows:
//
//	c, err := cache.Open(ctx, cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: "myapp"})
//	if err != nil {
//		return err // a configuration error, naming the Config field
//	}
//	defer c.Close()
//	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
//	defer cancel()
//	_ = c.Ready(wait) // optional: until Redis answers, calls fail open
//
// A service that must not start without Redis uses New and Connect instead:
// Connect returns an error when Redis cannot be reached. Config.Client hands
// the cache a go-redis client the service already has (with its hooks);
// Config.Mode, Addrs and MasterName select Redis Cluster or Sentinel.
// InitDefault and Default keep one package-level cache.
//
// # Keys and prefixes
//
// Keys given to the API are relative to Config.KeyPrefix: with KeyPrefix
// "myapp", the key "user:123" is stored in Redis as "myapp:user:123", and
// caches with different non-empty KeyPrefixes never see each other's keys. A
// key's prefix, its first ':'-separated segment ("user" in "user:123"), is the
// unit of statistics, policy TTLs and invalidation. GenerateKey builds a key
// from a prefix and parameters, independent of their order:
//
//	key := cache.GenerateKey("tasks", map[string]any{"user_id": 1, "status": "active"})
//	// "tasks:" followed by a hash of the parameters
//
// Values are encoded with Config.Codec (JSON by default). Set, Get, Exists,
// TTL and Delete work on single keys; a TTL of 0 takes the policy's TTL for the
// prefix, or Config.DefaultTTL when the policy sets none.
//
// # Loading
//
// GetOrLoad returns the cached value or calls the loader, caches its result
// and returns it; concurrent misses of one key in a process share one load,
// and a load that raced a write is never stored behind it:
//
//	u, err := cache.GetOrLoad(ctx, c, "user:"+id, 10*time.Minute,
//		func(ctx context.Context) (User, error) { return db.User(ctx, id) })
//
// Cached wraps a whole function, deriving each call's key with GenerateKey
// from the parameters that shape its result:
//
//	getUser := cache.Cached(c, "users", 10*time.Minute,
//		func(id int) map[string]any { return map[string]any{"id": id} },
//		db.User) // func(context.Context, int) (User, error)
//
// # Batches
//
// GetMany reads many keys in one round trip (keys not cached are absent from
// its map), SetMany writes many, and GetOrLoadMany loads only the missing
// keys, with one call of its loader:
//
//	products, err := cache.GetOrLoadMany(ctx, c, keys, 10*time.Minute,
//		func(ctx context.Context, missing []string) (map[string]Product, error) {
//			return db.Products(ctx, missing) // SELECT ... WHERE id IN (...)
//		})
//
// # Invalidation
//
// InvalidatePrefix makes every entry of a prefix stale in every process, in
// one round trip whatever the number of keys. InvalidateOnWrite wraps a write
// function so that its success does the same:
//
//	updateUser := cache.InvalidateOnWrite(c, "users", db.UpdateUser)
//	_, err := updateUser(ctx, u) // on success, users:* is stale everywhere
//
// Delete removes single keys, leaving a short tombstone (Config.TombstoneTTL)
// so that a load that raced the delete cannot store what it read before.
// Invalidate deletes the keys matching a glob pattern; QuotePattern escapes
// the parts of a pattern that come from input:
//
//	n, err := c.Invalidate(ctx, "session:"+cache.QuotePattern(userID)+":*")
//
// # Negative caching
//
// A loader that finds nothing returns an error wrapping ErrNoValue; that
// answer is cached for Config.NegativeTTL, so repeated lookups of a missing
// row do not reach the database, and every such call returns an error for
// which errors.Is(err, ErrNoValue) holds:
//
//	func(ctx context.Context) (User, error) {
//		u, ok, err := db.FindUser(ctx, id)
//		if err == nil && !ok {
//			err = fmt.Errorf("user %s: %w", id, cache.ErrNoValue)
//		}
//		return u, err
//	}
//
// A GetOrLoadMany loader returns its map with an error wrapping ErrNoValue to
// have the keys it left out cached the same way.
//
// # Compression
//
// Config.CompressAbove stores encoded values longer than that many bytes
// compressed with S2. Entries are flagged, so caches with and without the
// option share data: every reader decompresses, whatever its own setting.
//
// # Near-cache
//
// Config.NearCache adds a bounded in-process tier in front of Redis for hot
// keys. Redis broadcasts every change to the cached prefixes (client-side
// caching), so a write by any process evicts the copy, typically in well under
// a millisecond and never later than NearCacheConfig.Lease; a process always
// reads its own writes. NearCacheStats tells whether the tier is serving.
//
//	cfg.NearCache = &cache.NearCacheConfig{Prefixes: []string{"config", "user"}}
//
// # HTTP middleware
//
// HTTPMiddleware caches the 200 responses of GET handlers registered on an
// http.ServeMux, keyed by route and chosen path or query parameters, and
// invalidates the prefix after a successful POST, PUT, PATCH or DELETE:
//
//	users := cache.HTTPMiddleware(c, "users", time.Minute, "id")
//	mux.Handle("GET /users/{id}", users(getUserHandler))
//	mux.Handle("PUT /users/{id}", users(putUserHandler))
//
// # Statistics
//
// Stats returns this process's hit, miss and error counters by prefix;
// StatsHandler serves them as JSON, and NewCollector exports them to
// Prometheus:
//
//	prometheus.MustRegister(cache.NewCollector(c))
//
// The cache also flushes its counters to Redis every
// Config.StatsFlushInterval, where the operator aggregates those of every
// process into the CachePolicy's status.
//
// # Following the operator
//
// The operator's CachePolicy for a KeyPrefix sets per-prefix TTLs (used when a
// call passes a TTL of 0), turns the near-cache off for chosen prefixes, and
// runs invalidations (on a schedule, when a watched ConfigMap or Secret
// changes, or on demand through a token) that every process honours
// as it honours InvalidatePrefix. A cache re-reads the policy every
// Config.PolicyRefresh as a fallback for missed change events; a negative
// PolicyRefresh stops following it altogether.
//
// # Consistency
//
// An invalidation is visible to the process that made it as soon as the call
// returns, and to every other process within Config.EventsLease (sub-
// millisecond while its events connection is healthy); a loader's write-back
// never lands over a Delete, Set or prefix invalidation it raced; the
// near-cache hides a write for at most NearCacheConfig.Lease. Caches with
// different non-empty key prefixes cannot reach each other's keys. The full
// contract, with every bound and what is not guaranteed, is docs/consistency.md
// in the repository; a multi-process checker with injected faults tests it.
package cache
