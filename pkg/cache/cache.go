package cache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/flight"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultURL                = "redis://localhost:6379/0"
	DefaultMaxConnections     = 50
	DefaultSocketTimeout      = 5 * time.Second
	DefaultKeepAlive          = 30 * time.Second
	DefaultTTL                = 5 * time.Minute
	DefaultPolicyRefresh      = 5 * time.Second
	DefaultStatsFlushInterval = 5 * time.Second
	DefaultTombstoneTTL       = time.Minute
	DefaultNegativeTTL        = 10 * time.Second
	DefaultEventsLease        = time.Second
)

// MinEventsLease is the shortest Config.EventsLease: the events subscription
// is PINGed four times per lease.
const MinEventsLease = 10 * time.Millisecond

// Topologies for Config.Mode.
const (
	// ModeStandalone is one Redis server, reached at Config.URL.
	ModeStandalone = redisconn.ModeStandalone
	// ModeCluster is a Redis Cluster, discovered from Config.Addrs.
	ModeCluster = redisconn.ModeCluster
	// ModeSentinel is a master watched by Redis Sentinel: the cache asks the
	// sentinels in Config.Addrs for Config.MasterName and follows failovers.
	ModeSentinel = redisconn.ModeSentinel
)

// Config configures a Cache. The zero value is usable: every zero field takes
// its default.
type Config struct {
	// Mode is the Redis topology: ModeStandalone (the default, also ""),
	// ModeCluster or ModeSentinel. The cache behaves the same on all three.
	Mode string
	// URL is redis://host:port/db, or rediss:// for TLS. Default DefaultURL
	// in Standalone mode. It must not contain a password: set Password
	// instead. In Cluster and Sentinel mode it is optional: its scheme
	// selects TLS, its database applies (Sentinel; a cluster has only 0) and
	// its host:port joins Addrs.
	URL string
	// Addrs are the seed nodes of a Redis Cluster, or the sentinels, as
	// host:port (Cluster and Sentinel mode).
	Addrs []string
	// MasterName is the name under which the sentinels monitor the master
	// (Sentinel mode).
	MasterName string
	// Username and Password authenticate (an ACL user, or a password alone).
	Username string
	Password string
	// TLSConfig overrides the TLS settings of a rediss:// URL; set without
	// one it turns TLS on all the same (how Cluster and Sentinel mode get
	// TLS without a URL). Leave ServerName empty in those modes: each node
	// is then verified against the host it is dialed at.
	TLSConfig *tls.Config
	// MaxConnections is the pool size. Default 50.
	MaxConnections int
	// SocketTimeout bounds dialing, each read and write, and every call as a
	// whole (Invalidate: each round trip): no call waits on Redis longer than
	// this, or than the caller's context if that ends first. Default 5s.
	SocketTimeout time.Duration
	// KeepAlive is the TCP keep-alive period. Default 30s; negative disables.
	KeepAlive time.Duration
	// DefaultTTL is the TTL of a Set with ttl <= 0 when the policy sets none
	// for the key's prefix. Default 5m.
	DefaultTTL time.Duration
	// KeyPrefix namespaces every key ("myapp" stores "user:1" as
	// "myapp:user:1"). It is 1 to 64 letters, digits and . _ - / and never
	// contains ':' (New rejects what a CachePolicy's spec.keyPrefix would
	// reject), so key prefixes cannot nest: caches with different non-empty
	// KeyPrefixes on one Redis database never read, write or invalidate
	// each other's keys, whatever keys and patterns they are given.
	//
	// "" means no prefix: keys are used as given, so such a cache reaches
	// the whole database, including every prefixed tenant's keys
	// (Get("myapp:user:1"), Invalidate("*")) and the operator's control
	// keys. Isolation holds only among caches that all set a KeyPrefix; to
	// confine an unprefixed cache, give it a Redis ACL user instead.
	KeyPrefix string
	// Codec encodes values. Default JSON (encoding/json).
	Codec Codec
	// Logger receives fail-open and background errors at Warn, at most one
	// a second, and recoveries at Info. Default slog.Default() (as of New),
	// so that a cache that cannot reach Redis says so; to silence it, pass
	// slog.New(slog.DiscardHandler).
	Logger *slog.Logger
	// PolicyRefresh is how often the policy is re-read from Redis, as a
	// fallback for missed change events. Default 5s; negative disables policy
	// following altogether (no policy TTLs, no generations: InvalidatePrefix
	// and InvalidateOnWrite then SCAN, like Invalidate).
	PolicyRefresh time.Duration
	// StatsFlushInterval is how often per-prefix counters are added to Redis
	// for the operator. Default 5s; negative disables flushing.
	StatsFlushInterval time.Duration
	// TombstoneTTL is how long Delete (and Invalidate of a single key)
	// leaves a tombstone under each deleted key. While it is there, a
	// GetOrLoad, Cached or middleware write-back in any process whose
	// lookup came before the Delete finds the key changed and stores
	// nothing; a load that takes longer than TombstoneTTL may store what
	// it read before the Delete. Readers take a tombstone for a miss,
	// Exists and TTL for a missing key; each costs a few dozen bytes of
	// Redis memory until it expires. Default DefaultTombstoneTTL (1m).
	TombstoneTTL time.Duration
	// NegativeTTL is how long a loader's "no value" (an error wrapping
	// ErrNoValue) is cached, at most the TTL the call would give a value.
	// Default DefaultNegativeTTL (10s).
	NegativeTTL time.Duration
	// LoadLease, when above 0, makes one process in the whole fleet load a
	// missing key where each would otherwise load it (a stampede of pods
	// on one hot key). On a miss, after this process's concurrent calls
	// for the key have joined one load, GetOrLoad and Cached take a lease
	// on the key in Redis for LoadLease (SET NX PX with a token of their
	// own, in the key's cluster slot: keyspace.Space.LeaseKey). The holder
	// loads and stores; its store lands unless another process took the
	// lease over, so a holder slower than LoadLease never overwrites the
	// next holder's value (alone, it still stores). The
	// other processes poll for the value (2ms, doubling, at most 50ms or
	// LoadLease/10) and serve it when it appears; if the lease ends
	// without one (the holder crashed, or its load failed), one of them
	// takes it over; after waiting twice LoadLease in all they load
	// themselves (fail open). Each caller waits at most as long as its own
	// context allows. When Redis fails, the call loads at once, as
	// without a lease. A caller served the holder's value counts the miss
	// its read saw and nothing more: Stats read as without the lease, and
	// the saved loads show in the load-duration histogram. A cached "no
	// value" (ErrNoValue) is shared like a value. Hits never touch the
	// lease. Set it above the slowest load worth sharing: waiters stop
	// waiting for a load longer than LoadLease. The HTTP middleware streams its
	// handler's response and takes no lease. 0 (the default): off;
	// negative is an error. See docs/load-lease.md.
	LoadLease time.Duration
	// EventsLease bounds how long this process trusts the generations it
	// knows without hearing from the events channel, which carries other
	// processes' invalidations (InvalidatePrefix, InvalidateOnWrite, the
	// operator's runs). The channel is PINGed every EventsLease/4; once no
	// answer to a PING sent within the last EventsLease has arrived (a
	// stalled connection, say), the next read re-reads the generations
	// (one round trip, shared by concurrent callers) before it serves.
	// So an invalidation that returned at time T is honoured by reads of
	// every process that start after T+EventsLease, whatever the channel
	// does; while it is healthy, after its delivery delay (well under a
	// millisecond on a LAN). Default DefaultEventsLease (1s), at least
	// MinEventsLease. Unused when PolicyRefresh is negative.
	EventsLease time.Duration
	// DisableAutoPipeline turns off autopipelining, which is on by
	// default: while calls run concurrently, the commands of Get, Set and
	// GetOrLoad go through go-redis's autopipeliner, so concurrent calls
	// share round trips instead of each taking a pooled connection (under
	// many parallel callers, remote hits cost a fraction of a plain
	// command); a call alone takes the plain path. Semantics stay: each
	// call still waits at most SocketTimeout (or its context), and one
	// goroutine's commands run in the order it issued them. The
	// consistency checker (test/consistency) runs with it on and off.
	// go-redis marks the autopipeliner experimental: this is the way back
	// to plain commands.
	DisableAutoPipeline bool
	// Deprecated: autopipelining is the default; AutoPipeline changes
	// nothing and is kept so that existing configurations compile. Set
	// DisableAutoPipeline to turn it off (setting both is an error).
	AutoPipeline bool
	// DisableReadCoalescing makes every remote read send a GET of its own.
	// By default, concurrent reads of one key in this process (Get,
	// GetOrLoad, Cached, the middleware) share GETs: a caller that arrives
	// while a GET of the key is in flight waits for the next one, sent as
	// soon as that one completes and shared by every caller arriving
	// meanwhile. No caller gets a reply Redis produced before it arrived,
	// so every guarantee of docs/consistency.md holds either way; the
	// price is that such a caller may wait up to about two round trips
	// instead of one, against one GET per round trip whatever the number
	// of callers.
	DisableReadCoalescing bool
	// Client, when set, is the Redis client the cache uses instead of
	// opening its own pool: a *redis.Client (Standalone, or a failover
	// client from redis.NewFailoverClient) or a *redis.ClusterClient. Its
	// hooks (redisotel tracing and metrics, say) see the cache's commands,
	// and Close leaves it open: it stays the caller's. URL, Addrs,
	// MasterName, Username, Password, TLSConfig, MaxConnections and
	// KeepAlive must then be unset (the client's own options apply), and
	// Mode unset or matching the client.
	//
	// The events subscription and the near-cache's tracking connections
	// are dedicated connections dialed with the client's options; the
	// near-cache needs a Standalone or cluster client (it cannot follow a
	// failover client's master, nor authenticate with a
	// CredentialsProvider in place of a password, and stays off). The
	// cache adds no hook to the client, so SocketTimeout bounds each call
	// through its context: set ContextTimeoutEnabled on the client, or its
	// own read and write timeouts bound the round trips instead.
	Client redis.UniversalClient
	// NearCache, when set, keeps hot entries in process memory in front of
	// Redis, invalidated by Redis itself across processes (see
	// NearCacheConfig). nil: off.
	NearCache *NearCacheConfig
	// CompressAbove, when above 0, stores encoded values longer than this
	// many bytes compressed with S2 (flagged in the entry, so caches with
	// and without it share data: every reader decompresses). A value that
	// does not shrink is stored plain. 0: off; negative is an error.
	CompressAbove int
	// TracerProvider gives the OpenTelemetry spans of GetOrLoad and Cached
	// ("cache.GetOrLoad"), the middleware's lookups ("cache.http") and the
	// invalidations ("cache.Invalidate", "cache.InvalidatePrefix",
	// "cache.InvalidateOnWrite"), children of the caller's span, with the
	// outcome (hit, near-hit, negative-hit, miss), the key's prefix and on
	// a miss the load's duration. Plain Get and Set have none: a redisotel
	// hook on the client covers them. nil: the global provider
	// (otel.GetTracerProvider); while none is registered, no span is
	// started at all, so tracing costs nothing.
	TracerProvider trace.TracerProvider
	// TraceKeys adds the key (or the invalidated pattern) to the spans as
	// "cache.key". Off by default: keys often carry user data.
	TraceKeys bool
}

// Codec turns values into bytes and back.
type Codec interface {
	Marshal(v any) ([]byte, error)
	// Unmarshal must not modify data nor keep it after returning: it may
	// alias memory owned by the Redis client.
	Unmarshal(data []byte, v any) error
}

var (
	// ErrNotFound reports that a key does not exist.
	ErrNotFound = errors.New("cache: key not found")
	// ErrNotConnected reports a call before Connect succeeded.
	ErrNotConnected = errors.New("cache: not connected")
	// ErrClosed reports a call after Close.
	ErrClosed = errors.New("cache: closed")
)

// Cache is a Redis cache. Its methods are safe for concurrent use.
type Cache struct {
	tracing tracerCache
	cfg     Config
	conn    redisconn.Options
	space   keyspace.Space
	codec   Codec
	log     *slog.Logger
	timeout time.Duration
	bound   *deadlines // SocketTimeout, per call

	client atomic.Pointer[universal]
	closed atomic.Bool

	mu       sync.Mutex // serialises Connect and Close
	bg       sync.WaitGroup
	closeErr error
	// life ends with Close: it stops the background work (policy
	// following, stats, reclaims, connect retries).
	life     context.Context
	lifeStop context.CancelFunc
	// dialing is the client Connect made, not yet answering: the retry
	// loop (retryConnect) keeps pinging it. Guarded by mu.
	dialing  *universal
	retrying bool // guarded by mu
	retryWG  sync.WaitGroup
	// ready is closed once the cache first connects (Ready).
	ready chan struct{}
	// external: the client is Config.Client, the caller's to close.
	external bool

	prefixes

	policyMu sync.Mutex // serialises policy re-reads
	flushMu  sync.Mutex // serialises stats flushes; guards the flushed counters

	// Stats flushes are applied at most once (flushStats): pid names this
	// Cache in Redis, flushSeq numbers its batches, pendingFlush is a batch
	// whose reply was lost. The last two are guarded by flushMu.
	pid          string
	flushSeq     int64
	pendingFlush *flushBatch

	// The generations are known when genLoaded >= genEpoch: genEpoch rises
	// when they may have been missed (at start, when the events
	// subscription is lost), genLoaded when a read of them that started in
	// that epoch succeeds (knowGenerations).
	genEpoch, genLoaded atomic.Int64
	// genLeaseEnd (mono.Now) is when the generations stop being known
	// without news from Redis (Config.EventsLease): the send time of the
	// newest answered PING of the events subscription, or of the newest
	// read of the generations, plus the lease.
	genLeaseEnd atomic.Int64
	// eventsAddr, when set (by tests, before Connect), is where the events
	// subscription dials instead of the pool's address: a stall proxy.
	eventsAddr string
	genMu      sync.Mutex
	genCall    *genCall // a read of the generations in flight; guarded by genMu

	// reclaims are the prefixes whose old keys a background SCAN deletes
	// (reclaim); true: run once more when done.
	reclaimMu sync.Mutex
	reclaims  map[string]bool
	reclaimWG sync.WaitGroup

	flights  flight.Group
	loadTime *prometheus.HistogramVec
	logLimit logLimiter
	near     *nearCache // nil without Config.NearCache
	pipe     pipeState  // autopipelining (pipeline.go)
	reads    readGroup  // GETs in flight, for read coalescing (coalesce.go)

	// globInvalidations counts the Invalidate calls whose pattern has a
	// glob in its prefix, so could reach every prefix.
	globInvalidations atomic.Int64
}

// New validates cfg and applies defaults. It does not dial: call Connect,
// which reports an unreachable Redis (a hard start-up failure); Open does
// both without waiting.
func New(cfg Config) (*Cache, error) {
	external := cfg.Client != nil
	if external {
		mode, err := checkClient(cfg)
		if err != nil {
			return nil, err
		}
		cfg.Mode = mode
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeStandalone
	}
	// Only a standalone server has a default location; a cluster or
	// sentinels without addresses are a configuration error.
	if cfg.URL == "" && cfg.Mode == ModeStandalone && !external {
		cfg.URL = DefaultURL
	}
	cfg.Addrs = slices.Clone(cfg.Addrs) // the caller may reuse its slice
	// "" is the library's own: no prefix. Anything else is what a
	// CachePolicy could hold.
	if cfg.KeyPrefix != "" {
		if err := keyspace.ValidateKeyPrefix(cfg.KeyPrefix); err != nil {
			return nil, fmt.Errorf("cache: Config.KeyPrefix: %w", err)
		}
	}
	for _, d := range []struct {
		name  string
		value *time.Duration
		def   time.Duration
		neg   bool // a negative value means "off"
	}{
		{"SocketTimeout", &cfg.SocketTimeout, DefaultSocketTimeout, false},
		{"KeepAlive", &cfg.KeepAlive, DefaultKeepAlive, true},
		{"DefaultTTL", &cfg.DefaultTTL, DefaultTTL, false},
		{"PolicyRefresh", &cfg.PolicyRefresh, DefaultPolicyRefresh, true},
		{"StatsFlushInterval", &cfg.StatsFlushInterval, DefaultStatsFlushInterval, true},
		{"TombstoneTTL", &cfg.TombstoneTTL, DefaultTombstoneTTL, false},
		{"NegativeTTL", &cfg.NegativeTTL, DefaultNegativeTTL, false},
		{"EventsLease", &cfg.EventsLease, DefaultEventsLease, false},
		{"LoadLease", &cfg.LoadLease, 0, false}, // 0: off
	} {
		switch {
		case *d.value == 0:
			*d.value = d.def
		case *d.value < 0 && !d.neg:
			return nil, fmt.Errorf("cache: Config.%s is negative (%v)", d.name, *d.value)
		}
	}
	if cfg.EventsLease < MinEventsLease {
		return nil, fmt.Errorf("cache: Config.EventsLease %v is shorter than %v (the events channel is PINGed four times per lease)", cfg.EventsLease, MinEventsLease)
	}
	switch {
	case cfg.MaxConnections == 0 && !external:
		cfg.MaxConnections = DefaultMaxConnections
	case cfg.MaxConnections < 0:
		return nil, fmt.Errorf("cache: Config.MaxConnections is negative (%d)", cfg.MaxConnections)
	}
	if cfg.AutoPipeline && cfg.DisableAutoPipeline {
		return nil, errors.New("cache: Config.AutoPipeline (deprecated, the default) and DisableAutoPipeline are both set")
	}
	if err := checkCompressAbove(cfg.CompressAbove); err != nil {
		return nil, err
	}
	if cfg.Codec == nil {
		cfg.Codec = jsonCodec{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	conn := redisconn.Options{
		Mode:       cfg.Mode,
		URL:        cfg.URL,
		Addrs:      cfg.Addrs,
		MasterName: cfg.MasterName,
		Username:   cfg.Username,
		Password:   cfg.Password,
		PoolSize:   cfg.MaxConnections,
		Timeout:    cfg.SocketTimeout,
		KeepAlive:  cfg.KeepAlive,
		TLS:        cfg.TLSConfig,
		// One dial attempt per connection: go-redis would retry a refused
		// dial five times, 100ms apart, inside every call, while a cache
		// that fails open wants to give up at once. The per-call retries
		// remain.
		DialerRetries: 1,
	}
	db := redisconn.DB(cfg.URL)
	if external {
		db = clientDB(cfg.Client)
	} else if err := validateConn(cfg, conn); err != nil {
		return nil, err
	}
	c := &Cache{
		cfg:      cfg,
		conn:     conn,
		external: external,
		ready:    make(chan struct{}),
		space:    keyspace.New(cfg.KeyPrefix).InDB(db),
		codec:    cfg.Codec,
		log:      cfg.Logger,
		timeout:  cfg.SocketTimeout,
		bound:    newDeadlines(cfg.SocketTimeout),
		loadTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "cacheplane_cache_load_duration_seconds",
			Help:        "Time spent in loaders after a cache miss, by key prefix.",
			ConstLabels: prometheus.Labels{"key_prefix": labelValue(cfg.KeyPrefix)},
			Buckets:     prometheus.ExponentialBuckets(0.0005, 4, 9), // 0.5ms .. 33s
		}, []string{"prefix"}),
	}
	c.prefixes.init()
	c.reads.init()
	c.life, c.lifeStop = context.WithCancel(context.Background())
	c.pid = keyspace.NewProcessID()
	c.reclaims = map[string]bool{}
	c.genEpoch.Store(1) // unknown until first read
	if cfg.NearCache != nil {
		near, err := newNearCache(*cfg.NearCache)
		if err != nil {
			return nil, err
		}
		c.near = near
	}
	return c, nil
}

// Connect dials Redis and pings it, loads the policy of the key prefix and
// starts following it. An unreachable server is reported within SocketTimeout,
// and the Cache keeps trying in the background (backing off to every 5s,
// logging failures and the recovery) until it connects or is closed: calls
// fail with ErrNotConnected until then (loaders, wrappers and the middleware
// fail open), and start caching as soon as Redis answers, without a restart.
// Connecting a connected Cache does nothing.
func (c *Cache) Connect(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	if c.client.Load() != nil {
		return nil
	}
	if err := c.dial(); err != nil {
		return err
	}
	if err := c.ping(ctx, c.dialing); err != nil {
		c.retryInBackground()
		return fmt.Errorf("cache: connect to %s (retrying in the background): %w", c.target(), err)
	}
	c.start(ctx)
	return nil
}

// dial makes the client Connect pings, unless there is one. Called with mu
// held.
func (c *Cache) dial() error {
	if c.dialing != nil {
		return nil
	}
	if c.external {
		// The caller's client, as it is: no hook of ours on it.
		c.dialing = &universal{c.cfg.Client}
		return nil
	}
	rc, err := redisconn.NewUniversal(c.conn)
	if err != nil {
		return fmt.Errorf("cache: %w", err) // a configuration error: retrying cannot help
	}
	rc.AddHook(roundTripDeadline{c.bound})
	if cc, ok := rc.(*redis.ClusterClient); ok {
		// Invalidate talks to each master's own client (ForEachMaster),
		// which the cluster client's hooks do not cover.
		cc.OnNewNode(func(node *redis.Client) { node.AddHook(roundTripDeadline{c.bound}) })
	}
	c.dialing = &universal{rc}
	return nil
}

// retryInBackground starts retryConnect unless it runs. Called with mu held.
func (c *Cache) retryInBackground() {
	if !c.retrying {
		c.retrying = true
		c.retryWG.Go(c.retryConnect)
	}
}

func (c *Cache) ping(ctx context.Context, cl *universal) error {
	pctx, cancel := c.opCtx(ctx)
	defer cancel()
	return cl.Ping(pctx).Err()
}

// retryConnect pings the dialed client with exponential backoff until Redis
// answers, then starts the cache as Connect would have; Close stops it.
// Failures are logged at most twice a minute, the recovery once.
func (c *Cache) retryConnect() {
	backoff := 50 * time.Millisecond
	var failures int
	var lastLog time.Time
	for {
		select {
		case <-c.life.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		c.mu.Lock()
		cl := c.dialing
		c.mu.Unlock()
		if cl == nil {
			return
		}
		err := c.ping(c.life, cl)
		if c.life.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if time.Since(lastLog) >= 30*time.Second {
				lastLog = time.Now()
				c.log.Warn("cache: Redis still unreachable; calls fail open until it answers", "target", c.target(), "attempts", failures, "err", err)
			}
			continue
		}
		c.mu.Lock()
		if c.closed.Load() || c.client.Load() != nil || c.dialing != cl {
			c.retrying = false
			c.mu.Unlock()
			return
		}
		c.start(c.life)
		c.retrying = false
		c.mu.Unlock()
		c.log.Info("cache: connected to Redis", "target", c.target(), "attempts", failures+1)
		return
	}
}

// start begins following the policy, flushing stats and (if configured)
// the near-cache, on the client that has just answered a PING. Called with mu
// held.
func (c *Cache) start(ctx context.Context) {
	cl := c.dialing
	c.dialing = nil
	bg := c.life
	if c.cfg.PolicyRefresh > 0 {
		// Loaded before Connect returns, so the first Set already uses the
		// policy's TTL and generation.
		if err := c.refreshPolicy(ctx, cl); err != nil {
			c.warn("cache: cannot read the policy; retrying in the background", "err", err)
		}
		sub, err := c.eventsClient(cl)
		if err != nil {
			c.warn("cache: cannot build the events client; using the pool's", "err", err)
			sub = cl
		}
		c.bg.Go(func() {
			c.subscribe(bg, cl, sub)
			if sub != cl {
				_ = sub.Close()
			}
		})
		c.bg.Go(func() { c.every(bg, c.cfg.PolicyRefresh, func() { c.refreshPolicyLogged(bg, cl) }) })
	}
	if c.cfg.StatsFlushInterval > 0 {
		c.bg.Go(func() {
			c.every(bg, c.cfg.StatsFlushInterval, func() {
				if err := c.flushStats(bg, cl); err != nil {
					c.warn("cache: cannot flush stats; keeping them for the next flush", "err", err)
				}
			})
		})
	}
	if c.near != nil {
		c.bg.Go(func() { c.near.run(bg, c) })
	}
	c.client.Store(cl)
	close(c.ready)
}

// Close stops following the policy, flushes pending statistics and closes the
// connection pool (not a Config.Client, which stays the caller's). It is idempotent; later calls return the first one's result.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	// Before taking mu: the retry loop takes it to start the cache.
	c.lifeStop()
	c.retryWG.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Swap(true) {
		return c.closeErr
	}
	// No reclaim starts after this (reclaim checks life under reclaimMu).
	c.reclaimMu.Lock()
	c.reclaimMu.Unlock() //nolint:staticcheck // a barrier
	c.reclaimWG.Wait()
	if c.dialing != nil {
		if !c.external {
			_ = c.dialing.Close()
		}
		c.dialing = nil
	}
	cl := c.client.Swap(nil)
	if cl == nil {
		return nil
	}
	c.bg.Wait()
	var flushErr error
	if c.cfg.StatsFlushInterval > 0 {
		if err := c.flushStats(context.Background(), cl); err != nil {
			flushErr = fmt.Errorf("cache: flush stats: %w", err)
		}
	}
	var closeErr error
	if !c.external {
		closeErr = cl.Close()
	}
	c.closeErr = errors.Join(flushErr, closeErr)
	return c.closeErr
}

// Client returns the underlying Redis client, nil before Connect and after
// Close: a *redis.Client (Standalone, and Sentinel's failover client) or a
// *redis.ClusterClient. Keys passed to it are absolute: they do not get the
// KeyPrefix.
func (c *Cache) Client() redis.UniversalClient {
	if cl := c.client.Load(); cl != nil {
		return cl.UniversalClient
	}
	return nil
}

// universal holds the client of any topology behind a pointer, so it can be
// swapped atomically and tested against nil. Code that must see the concrete
// type (purge.All looks for a *redis.ClusterClient) takes the embedded field.
type universal struct{ redis.UniversalClient }

// target describes where the cache connects, without credentials, for errors.
func (c *Cache) target() string {
	if c.external {
		return clientTarget(c.cfg.Client)
	}
	switch c.cfg.Mode {
	case ModeCluster:
		return fmt.Sprintf("Redis Cluster %v", c.seeds())
	case ModeSentinel:
		return fmt.Sprintf("master %q of sentinels %v", c.cfg.MasterName, c.seeds())
	}
	return redisconn.Redact(c.cfg.URL)
}

func (c *Cache) seeds() []string {
	addrs := slices.Clone(c.cfg.Addrs)
	if c.cfg.URL != "" {
		addrs = append(addrs, redisconn.Redact(c.cfg.URL))
	}
	return addrs
}

// unavailable is the error of a call made without a client.
func (c *Cache) unavailable() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return ErrNotConnected
}

// opCtx bounds one call by SocketTimeout. go-redis's own timeouts bound each
// read, but retries and pool waits could add up to several of them.
func (c *Cache) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return c.bound.bound(ctx)
}

func noop() {}

// roundTripDeadline bounds each pipeline round trip (Invalidate's SCAN pages,
// stats flushes) by the socket timeout, so a stalled server cannot hold them
// for several read timeouts through retries.
type roundTripDeadline struct{ d *deadlines }

func (h roundTripDeadline) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h roundTripDeadline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h roundTripDeadline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := h.d.bound(ctx)
		defer cancel()
		return next(ctx, cmds)
	}
}

// every calls fn every d until ctx ends.
func (c *Cache) every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// opError wraps a Redis error with the operation and key.
func opError(op, key string, err error) error {
	if errors.Is(err, redis.ErrClosed) {
		err = ErrClosed
	}
	return fmt.Errorf("cache: %s %q: %w", op, key, err)
}

// isRedisFailure reports whether err means Redis could not be used (as opposed
// to a bad value): after one, fail-open paths skip their write-back, so a down
// server costs one timeout, not two.
func isRedisFailure(err error) bool {
	var ne net.Error
	return errors.Is(err, ErrNotConnected) || errors.Is(err, ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) ||
		// A peer that closes the connection mid-reply (a proxy in front of a
		// dead server, a killed Redis) is as down as one that refuses.
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// logLimiter lets one message a second through, so an outage does not flood
// the log with one line per request.
type logLimiter struct {
	next       atomic.Int64
	suppressed atomic.Int64
}

func (c *Cache) warn(msg string, args ...any) {
	if !c.log.Enabled(context.Background(), slog.LevelWarn) {
		return
	}
	now := time.Now().UnixNano()
	next := c.logLimit.next.Load()
	if now < next || !c.logLimit.next.CompareAndSwap(next, now+int64(time.Second)) {
		c.logLimit.suppressed.Add(1)
		return
	}
	if n := c.logLimit.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	c.log.Warn(msg, args...)
}
