package cache_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// The near-cache tests run two Cache instances against one redis-server, as
// two pods of one service would, and check that neither serves from memory
// what another has changed, beyond the time the invalidation takes to arrive.

// newNearCache returns a connected cache with a near-cache, once its
// tracking connection is up.
func newNearCache(t *testing.T, cfg cache.Config) *cache.Cache {
	t.Helper()
	if cfg.NearCache == nil {
		cfg.NearCache = &cache.NearCacheConfig{}
	}
	c := newCache(t, cfg)
	waitNearOn(t, c)
	return c
}

func waitNearOn(t *testing.T, c *cache.Cache) {
	t.Helper()
	waitFor(t, 10*time.Second, "near-cache tracking", func() bool { return c.NearCacheStats().Enabled })
}

// getString reads key; "" means a miss.
func getString(t *testing.T, c *cache.Cache, key string) string {
	t.Helper()
	var v string
	found, err := c.Get(context.Background(), key, &v)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	if !found {
		return ""
	}
	return v
}

func mustSet(t *testing.T, c *cache.Cache, key, value string) {
	t.Helper()
	if err := c.Set(context.Background(), key, value, time.Hour); err != nil {
		t.Fatal(err)
	}
}

// cacheLocally reads key until the near-cache serves it, and checks it
// serves want.
func cacheLocally(t *testing.T, c *cache.Cache, key, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := c.Stats().LocalHits
		got := getString(t, c, key)
		if got != want {
			t.Fatalf("Get %s = %q, want %q", key, got, want)
		}
		if c.Stats().LocalHits > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never served from the near-cache", key)
		}
	}
}

// waitValue polls c until key reads want and returns how long that took.
func waitValue(t *testing.T, c *cache.Cache, key, want string, allowed ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := getString(t, c, key)
		if got == want {
			return time.Since(start)
		}
		if !slices.Contains(allowed, got) {
			t.Fatalf("Get %s = %q while waiting for %q", key, got, want)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("Get %s still %q after 2s, want %q", key, got, want)
		}
	}
}

// barrier waits until c has applied the invalidations Redis sent it so far,
// through an Invalidate that matches nothing.
func barrier(t *testing.T, c *cache.Cache) {
	t.Helper()
	if _, err := c.Invalidate(context.Background(), "no-such-prefix:*"); err != nil {
		t.Fatal(err)
	}
}

func TestNearCacheCrossPodWrites(t *testing.T) {
	prefix := testPrefix(t)
	a := newNearCache(t, cache.Config{KeyPrefix: prefix})
	b := newNearCache(t, cache.Config{KeyPrefix: prefix})
	const key = "user:1"

	// Set in one pod: the other stops serving its copy.
	var delays []time.Duration
	mustSet(t, a, key, "v0")
	for i := 1; i <= 50; i++ {
		prev, next := fmt.Sprint("v", i-1), fmt.Sprint("v", i)
		cacheLocally(t, b, key, prev)
		mustSet(t, a, key, next)
		// Until the invalidation arrives b may still serve prev, never
		// anything else.
		delays = append(delays, waitValue(t, b, key, next, prev))
	}
	slices.Sort(delays)
	t.Logf("cross-pod Set visible after: p50 %v, p90 %v, max %v (50 writes, each read from the near-cache before)",
		delays[len(delays)/2], delays[len(delays)*9/10], delays[len(delays)-1])
	if slowest := delays[len(delays)-1]; slowest > time.Second {
		t.Errorf("slowest invalidation took %v", slowest)
	}

	// Delete in one pod.
	cacheLocally(t, b, key, "v50")
	if _, err := a.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	t.Logf("cross-pod Delete visible after %v", waitValue(t, b, key, "", "v50"))

	// Invalidate (SCAN + UNLINK) in one pod.
	mustSet(t, a, "user:2", "w")
	mustSet(t, a, "order:1", "o")
	// b's own Invalidate returns once b has applied every invalidation Redis
	// sent it before: here, those of the two Sets, which could otherwise
	// arrive after b cached the values and evict them.
	barrier(t, b)
	cacheLocally(t, b, "user:2", "w")
	cacheLocally(t, b, "order:1", "o")
	if _, err := a.Invalidate(context.Background(), "user:*"); err != nil {
		t.Fatal(err)
	}
	t.Logf("cross-pod Invalidate visible after %v", waitValue(t, b, "user:2", "", "w"))
	barrier(t, b)
	// Other prefixes keep their entries.
	before := b.Stats().LocalHits
	if got := getString(t, b, "order:1"); got != "o" || b.Stats().LocalHits != before+1 {
		t.Errorf("order:1 = %q, local hits +%d; want o from the near-cache", got, b.Stats().LocalHits-before)
	}
}

// A process reads its own writes at once: no waiting for the notification.
func TestNearCacheReadsOwnWrites(t *testing.T) {
	c := newNearCache(t, cache.Config{})
	ctx := context.Background()
	for i := range 20 {
		mustSet(t, c, "k:1", fmt.Sprint("a", i))
		cacheLocally(t, c, "k:1", fmt.Sprint("a", i))
		mustSet(t, c, "k:1", fmt.Sprint("b", i))
		if got := getString(t, c, "k:1"); got != fmt.Sprint("b", i) {
			t.Fatalf("Get after Set = %q, want b%d", got, i)
		}
		cacheLocally(t, c, "k:1", fmt.Sprint("b", i))
		if _, err := c.Delete(ctx, "k:1"); err != nil {
			t.Fatal(err)
		}
		if got := getString(t, c, "k:1"); got != "" {
			t.Fatalf("Get after Delete = %q", got)
		}
		mustSet(t, c, "k:2", "x")
		cacheLocally(t, c, "k:2", "x")
		if _, err := c.Invalidate(ctx, "k:*"); err != nil {
			t.Fatal(err)
		}
		if got := getString(t, c, "k:2"); got != "" {
			t.Fatalf("Get after Invalidate = %q", got)
		}
	}
	// GetOrLoad goes through the tier too.
	loads := 0
	load := func(context.Context) (string, error) { loads++; return "loaded", nil }
	for range 3 {
		v, err := cache.GetOrLoad(ctx, c, "k:3", time.Hour, load)
		if err != nil || v != "loaded" {
			t.Fatalf("GetOrLoad = %q, %v", v, err)
		}
	}
	// The load's own SET sends an invalidation that may evict the first
	// copy; once it is applied, the value is cached for good.
	barrier(t, c)
	cacheLocally(t, c, "k:3", "loaded")
	before := c.Stats().LocalHits
	if v, _ := cache.GetOrLoad(ctx, c, "k:3", time.Hour, load); v != "loaded" || loads != 1 {
		t.Fatalf("GetOrLoad = %q after %d loads", v, loads)
	}
	if c.Stats().LocalHits != before+1 {
		t.Error("GetOrLoad hit was not served from the near-cache")
	}
}

// An invalidation published by the operator (a generation bump) makes the
// near-cache's entries of that prefix misses, as it does for Redis reads.
func TestNearCacheFollowsGenerations(t *testing.T) {
	prefix := testPrefix(t)
	op := newOperator(t, prefix)
	a := newNearCache(t, cache.Config{KeyPrefix: prefix})
	op.waitSubscribed(1)
	mustSet(t, a, "user:1", "old")
	mustSet(t, a, "order:1", "kept")
	barrier(t, a) // the Sets' own invalidations must not evict what follows
	cacheLocally(t, a, "user:1", "old")
	cacheLocally(t, a, "order:1", "kept")

	op.publish(keyspace.Event{Type: keyspace.EventInvalidated, Prefix: "user", Generation: 1})
	waitFor(t, 2*time.Second, "the generation bump to evict user:1", func() bool { return getString(t, a, "user:1") == "" })
	before := a.Stats().LocalHits
	if getString(t, a, "order:1") != "kept" || a.Stats().LocalHits != before+1 {
		t.Error("another prefix's entry did not survive the bump")
	}
	// Written under the new generation, it is served from memory again.
	mustSet(t, a, "user:1", "new")
	cacheLocally(t, a, "user:1", "new")
}

// Killing the tracking connection flushes the tier; values written while it
// was down are never hidden by what it held before.
func TestNearCacheTrackingLossFlushes(t *testing.T) {
	prefix := testPrefix(t)
	a := newNearCache(t, cache.Config{KeyPrefix: prefix})
	writer := newCache(t, cache.Config{KeyPrefix: prefix})
	rc := rawClient(t)
	ctx := context.Background()
	prev := ""
	for round := range 5 {
		old, next := fmt.Sprint("old", round), fmt.Sprint("new", round)
		mustSet(t, writer, "user:1", old)
		waitValue(t, a, "user:1", old, prev) // the previous round's value until the invalidation lands
		cacheLocally(t, a, "user:1", old)
		flushes := a.NearCacheStats().Flushes
		id := cache.NearTrackerID(a)
		if err := rc.ClientKillByFilter(ctx, "ID", fmt.Sprint(id)).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the flush", func() bool { return a.NearCacheStats().Flushes > flushes })
		// Written while the tracker may still be reconnecting: the
		// invalidation may be lost, the old value must not come back.
		mustSet(t, writer, "user:1", next)
		if got := getString(t, a, "user:1"); got != next {
			t.Fatalf("round %d: after the tracking connection was killed, Get = %q, want %q", round, got, next)
		}
		waitNearOn(t, a)
		if cache.NearTrackerID(a) == id {
			t.Fatal("tracking connection not replaced")
		}
		cacheLocally(t, a, "user:1", next)
		prev = next
	}
}

// While the server is down the tier serves nothing, and after a restart
// (an empty server) nothing from before comes back.
func TestNearCacheServerRestart(t *testing.T) {
	s, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	cfg := cache.Config{URL: s.URL(0), KeyPrefix: "restart", SocketTimeout: 500 * time.Millisecond}
	a := newNearCache(t, cfg)
	cfg.NearCache = nil
	writer := newCache(t, cfg)
	mustSet(t, writer, "user:1", "before")
	cacheLocally(t, a, "user:1", "before")

	s.Stop()
	waitFor(t, 5*time.Second, "the tier to turn off", func() bool { return !a.NearCacheStats().Enabled })
	if st := a.NearCacheStats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("tier off but holds %d entries, %d bytes", st.Entries, st.Bytes)
	}
	var v string
	if found, err := a.Get(context.Background(), "user:1", &v); found || err == nil {
		t.Fatalf("Get with the server down = %v, %q, %v; want an error", found, v, err)
	}

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	// The restarted server is empty: what the tier held before is gone.
	waitFor(t, 5*time.Second, "a to reach the restarted server", func() bool {
		var v string
		found, err := a.Get(context.Background(), "user:1", &v)
		if found {
			t.Fatalf("Get after the restart = %q from an empty server", v)
		}
		return err == nil
	})
	waitFor(t, 5*time.Second, "the writer to reconnect", func() bool {
		return writer.Set(context.Background(), "user:1", "after", time.Hour) == nil
	})
	if got := getString(t, a, "user:1"); got != "after" {
		t.Fatalf("after the restart Get = %q, want after", got)
	}
	waitNearOn(t, a)
	if st := a.NearCacheStats(); st.State != cache.NearCacheActive || st.Disabled != "" {
		t.Fatalf("stats %+v after the restart", st)
	}
	cacheLocally(t, a, "user:1", "after")
	// Another process's write after the restart reaches the tier.
	mustSet(t, writer, "user:1", "later")
	waitValue(t, a, "user:1", "later", "after")
}

func TestNearCacheBoundedMemory(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		maxEntries int
		maxBytes   int64
		valueSize  int
	}{
		{"entries", 300, 1 << 20, 10},
		{"bytes", 10_000, 64 << 10, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newNearCache(t, cache.Config{NearCache: &cache.NearCacheConfig{MaxEntries: tc.maxEntries, MaxBytes: tc.maxBytes}})
			value := strings.Repeat("x", tc.valueSize)
			rc := rawClient(t)
			pipe := rc.Pipeline()
			space := keyspace.New(testPrefix(t))
			entry := keyspace.AppendEntry(nil, 1<<60, []byte(`"`+value+`"`)) // above any generation yet
			for i := range 3000 {
				pipe.Set(ctx, space.DataKey(fmt.Sprint("k:", i)), entry, time.Hour)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			peak := 0
			for range 2 {
				for i := range 3000 {
					if got := getString(t, c, fmt.Sprint("k:", i)); got != value {
						t.Fatalf("k:%d = %d bytes", i, len(got))
					}
					if i%100 == 0 {
						st := c.NearCacheStats()
						peak = max(peak, st.Entries)
						if st.Entries > tc.maxEntries || st.Bytes > tc.maxBytes {
							t.Fatalf("near-cache holds %d entries, %d bytes; bounds %d, %d", st.Entries, st.Bytes, tc.maxEntries, tc.maxBytes)
						}
					}
				}
			}
			st := c.NearCacheStats()
			t.Logf("%+v, peak %d entries", st, peak)
			if st.Evictions == 0 || st.Entries == 0 {
				t.Errorf("expected evictions and a non-empty tier: %+v", st)
			}
		})
	}
}

// A server that refuses CLIENT TRACKING (here an ACL user without the
// client command) leaves the tier off with a warning; the cache still works.
func TestNearCacheDisabledWhenTrackingRefused(t *testing.T) {
	ctx := context.Background()
	rc := rawClient(t)
	user := "near-refused"
	if err := rc.Do(ctx, "ACL", "SETUSER", user, "reset", "on", ">secret", "~*", "&*", "+@all", "-client").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Do(context.Background(), "ACL", "DELUSER", user) })
	logs := &logRecorder{}
	c := newCache(t, cache.Config{
		Username: user, Password: "secret",
		Logger:    slog.New(logs),
		NearCache: &cache.NearCacheConfig{},
	})
	waitFor(t, 5*time.Second, "the tier to disable itself", func() bool { return c.NearCacheStats().Disabled != "" })
	st := c.NearCacheStats()
	if st.Enabled || st.State != cache.NearCacheDisabled || !strings.Contains(st.Disabled, "NOPERM") {
		t.Errorf("stats %+v; want disabled with the server's NOPERM", st)
	}
	if !logs.contains(slog.LevelWarn, "near-cache disabled") {
		t.Errorf("no warning logged; got %q", logs.messages())
	}
	mustSet(t, c, "user:1", "v")
	for range 5 {
		if got := getString(t, c, "user:1"); got != "v" {
			t.Fatalf("Get = %q", got)
		}
	}
	if s := c.Stats(); s.Hits != 5 || s.LocalHits != 0 {
		t.Errorf("hits %d, local %d; want 5 from Redis", s.Hits, s.LocalHits)
	}
}

// Entries live no longer than NearCacheConfig.TTL, nor than the key in Redis.
func TestNearCacheTTL(t *testing.T) {
	c := newNearCache(t, cache.Config{NearCache: &cache.NearCacheConfig{TTL: 300 * time.Millisecond}})
	mustSet(t, c, "k:1", "v")
	barrier(t, c) // the Set's own invalidation must not evict the copy below
	cacheLocally(t, c, "k:1", "v")
	stored := time.Now()
	waitFor(t, 2*time.Second, "the local entry to expire", func() bool {
		before := c.Stats().LocalHits
		getString(t, c, "k:1")
		return c.Stats().LocalHits == before
	})
	if d := time.Since(stored); d < 250*time.Millisecond {
		t.Errorf("local entry gone after %v, before its TTL", d)
	}

	// A key expiring in Redis before the near-cache TTL.
	long := newNearCache(t, cache.Config{KeyPrefix: testPrefix(t) + "long", NearCache: &cache.NearCacheConfig{TTL: time.Hour}})
	if err := long.Set(context.Background(), "k:2", "v", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	barrier(t, long)
	cacheLocally(t, long, "k:2", "v")
	waitFor(t, 2*time.Second, "the key's expiry to reach the near-cache", func() bool { return getString(t, long, "k:2") == "" })
}

// Many readers in one pod and a writer in another: once the writes stop, the
// readers converge on the last value within the notification delay.
func TestNearCacheConcurrentReadersConverge(t *testing.T) {
	prefix := testPrefix(t)
	w := newCache(t, cache.Config{KeyPrefix: prefix})
	r := newNearCache(t, cache.Config{KeyPrefix: prefix})
	ctx := context.Background()
	const keys = 8
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				var v int
				if _, err := r.Get(ctx, fmt.Sprint("n:", i%keys), &v); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 300 {
		if err := w.Set(ctx, fmt.Sprint("n:", i%keys), i, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	final := map[string]int{}
	for i := 300 - keys; i < 300; i++ {
		final[fmt.Sprint("n:", i%keys)] = i
	}
	waitFor(t, 2*time.Second, "readers to converge", func() bool {
		for k, want := range final {
			var v int
			if found, _ := r.Get(ctx, k, &v); !found || v != want {
				return false
			}
		}
		return true
	})
	stop.Store(true)
	wg.Wait()
	// Converged values are served from memory, and stay.
	for k, want := range final {
		for range 3 {
			var v int
			if _, err := r.Get(ctx, k, &v); err != nil || v != want {
				t.Fatalf("%s = %d, %v; want %d", k, v, err, want)
			}
		}
	}
	if r.Stats().LocalHits == 0 {
		t.Error("no near-cache hits")
	}
}

func TestNearCacheConfigValidation(t *testing.T) {
	for _, nc := range []cache.NearCacheConfig{
		{MaxEntries: -1}, {MaxBytes: -1}, {TTL: -time.Second}, {Prefixes: []string{"a:b"}},
		{Lease: -time.Second}, {Lease: time.Millisecond},
	} {
		if _, err := cache.New(cache.Config{NearCache: &nc}); err == nil {
			t.Errorf("New accepted %+v", nc)
		}
	}
}

// Only the listed prefixes are held.
func TestNearCachePrefixes(t *testing.T) {
	c := newNearCache(t, cache.Config{NearCache: &cache.NearCacheConfig{Prefixes: []string{"hot"}}})
	mustSet(t, c, "hot:1", "h")
	mustSet(t, c, "cold:1", "c")
	cacheLocally(t, c, "hot:1", "h")
	for range 3 {
		getString(t, c, "cold:1")
	}
	if p := c.Stats().Prefixes["cold"]; p.Hits != 3 || p.LocalHits != 0 {
		t.Errorf("cold prefix stats %+v; want 3 hits from Redis", p)
	}
}

// logRecorder is a slog.Handler that keeps what is logged.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) contains(level slog.Level, substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Level == level && strings.Contains(r.Message, substr) {
			return true
		}
	}
	return false
}

func (l *logRecorder) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var m []string
	for _, r := range l.recs {
		m = append(m, r.Message)
	}
	return m
}

// A CachePolicy's per-prefix choice keeps a prefix out of (or back in) the
// near-cache of every pod, without touching their configuration.
func TestNearCachePolicyOptOut(t *testing.T) {
	prefix := testPrefix(t)
	op := newOperator(t, prefix)
	a := newNearCache(t, cache.Config{KeyPrefix: prefix})
	op.waitSubscribed(1)
	mustSet(t, a, "user:1", "u")
	mustSet(t, a, "order:1", "o")
	cacheLocally(t, a, "user:1", "u")

	off := false
	op.setPolicyEntry("user", keyspace.PrefixPolicy{TTLMillis: 60000, NearCache: &off})
	op.publish(keyspace.Event{Type: keyspace.EventPolicyChanged})
	// Waiting for the policy itself, not for a read from Redis: under load a
	// lapsed lease sends reads to Redis before the opt-out has arrived.
	waitFor(t, 2*time.Second, "the opt-out to be applied", func() bool { return cache.NearOptedOut(a, "user") })
	for range 5 {
		before := a.Stats().LocalHits
		if getString(t, a, "user:1") != "u" || a.Stats().LocalHits != before {
			t.Fatal("an opted-out prefix was served from memory")
		}
	}
	cacheLocally(t, a, "order:1", "o") // other prefixes keep their tier

	on := true
	op.setPolicyEntry("user", keyspace.PrefixPolicy{TTLMillis: 60000, NearCache: &on})
	op.publish(keyspace.Event{Type: keyspace.EventPolicyChanged})
	cacheLocally(t, a, "user:1", "u")
}

// A key equal to a listed prefix ("cfg" beside "cfg:1") is held like the
// prefix's other keys, so its changes must reach the tier too; and two listed
// prefixes where one starts the other ("cfg", "cfgx") must not stop tracking.
func TestNearCacheKeyEqualToPrefix(t *testing.T) {
	prefix := testPrefix(t)
	a := newNearCache(t, cache.Config{KeyPrefix: prefix, NearCache: &cache.NearCacheConfig{Prefixes: []string{"cfg", "cfgx"}}})
	b := newCache(t, cache.Config{KeyPrefix: prefix})
	for _, key := range []string{"cfg", "cfg:1", "cfgx", "cfgx:1"} {
		mustSet(t, b, key, "v1")
		barrier(t, a)
		cacheLocally(t, a, key, "v1")
		mustSet(t, b, key, "v2")
		t.Logf("%s: another process's Set visible after %v", key, waitValue(t, a, key, "v2", "v1"))
	}
}

// With its tracking connection stalled (no FIN, no answer), the tier stops
// serving from memory once its lease of silence lapses: another process's
// write is read within the lease, whatever SocketTimeout is.
func TestNearCacheStalledChannel(t *testing.T) {
	prefix := testPrefix(t)
	proxy := startStallProxy(t, srv.Addr())
	a, err := cache.New(cache.Config{URL: srv.URL(0), KeyPrefix: prefix, NearCache: &cache.NearCacheConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	cache.SetNearTrackerAddr(a, proxy.Addr())
	if err := a.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	waitNearOn(t, a)
	writer := newCache(t, cache.Config{KeyPrefix: prefix})
	mustSet(t, writer, "user:1", "v1")
	barrier(t, a)
	cacheLocally(t, a, "user:1", "v1")

	proxy.Stall()
	stalled := time.Now()
	mustSet(t, writer, "user:1", "v2")
	written := time.Now()
	const lease = cache.DefaultNearCacheLease
	for {
		got := getString(t, a, "user:1")
		if got == "v2" {
			break
		}
		if got != "v1" {
			t.Fatalf("Get = %q while waiting for v2", got)
		}
		if time.Since(stalled) > lease+500*time.Millisecond {
			t.Fatalf("still v1 from memory %v after the tracking connection stalled (lease %v)", time.Since(stalled), lease)
		}
	}
	t.Logf("stalled tracking connection: another process's write read after %v (%v after the stall began)", time.Since(written), time.Since(stalled))
	// Nothing is served from memory while the channel stays silent.
	if st := a.NearCacheStats(); st.State != cache.NearCacheStalled && st.State != cache.NearCacheRetrying {
		t.Errorf("stats %+v while stalled; want stalled or retrying", st)
	}
	before := a.Stats().LocalHits
	for range 5 {
		if got := getString(t, a, "user:1"); got != "v2" {
			t.Fatalf("Get = %q", got)
		}
	}
	if a.Stats().LocalHits != before {
		t.Error("served from memory while the tracking connection is stalled")
	}
	proxy.Resume()
	waitNearOn(t, a)
	cacheLocally(t, a, "user:1", "v2")
	mustSet(t, writer, "user:1", "v3")
	waitValue(t, a, "user:1", "v3", "v2")
}

// A server that turns the tracking connection away for a while (here: its
// client limit is reached) is tried again; the tier comes back by itself.
func TestNearCacheRetriesTransientRefusal(t *testing.T) {
	s, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	cfg := cache.Config{URL: s.URL(0), KeyPrefix: "maxclients"}
	a := newNearCache(t, cfg)
	mustSet(t, a, "user:1", "v1")
	barrier(t, a)
	cacheLocally(t, a, "user:1", "v1")

	admin := s.Client()
	t.Cleanup(func() { admin.Close() })
	// Connections already open stay; every new one is turned away with
	// "ERR max number of clients reached".
	if err := admin.ConfigSet(ctx, "maxclients", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ConfigSet(context.Background(), "maxclients", "10000") })
	if err := admin.ClientKillByFilter(ctx, "ID", fmt.Sprint(cache.NearTrackerID(a))).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the tracking connection to be turned away", func() bool {
		info, err := admin.Info(ctx, "stats").Result()
		return err == nil && !strings.Contains(info, "rejected_connections:0\r")
	})
	if st := a.NearCacheStats(); st.Disabled != "" || st.Enabled {
		t.Fatalf("stats %+v while the server turns connections away; want off, not disabled", st)
	}
	waitFor(t, 10*time.Second, "the refusal to show in the stats", func() bool {
		st := a.NearCacheStats()
		return st.State == cache.NearCacheRetrying && strings.Contains(st.LastError, "max number of clients")
	})

	if err := admin.ConfigSet(ctx, "maxclients", "10000").Err(); err != nil {
		t.Fatal(err)
	}
	waitNearOn(t, a)
	if st := a.NearCacheStats(); st.State != cache.NearCacheActive || st.LastError != "" {
		t.Errorf("stats %+v once the server takes connections again", st)
	}
	cfg.NearCache = nil
	writer := newCache(t, cfg)
	mustSet(t, writer, "user:1", "v2")
	waitValue(t, a, "user:1", "v2", "v1")
	cacheLocally(t, a, "user:1", "v2")
	mustSet(t, writer, "user:1", "v3")
	waitValue(t, a, "user:1", "v3", "v2")
}

// A server where the CLIENT command does not exist (renamed away, as some
// managed services do) turns the tier off for good, saying why.
func TestNearCacheDisabledWithoutClientCommand(t *testing.T) {
	s, err := redistest.Start("--rename-command", "CLIENT", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	c := newCache(t, cache.Config{URL: s.URL(0), KeyPrefix: "noclient", NearCache: &cache.NearCacheConfig{}})
	waitFor(t, 5*time.Second, "the tier to disable itself", func() bool { return c.NearCacheStats().Disabled != "" })
	if st := c.NearCacheStats(); st.State != cache.NearCacheDisabled || !strings.Contains(st.Disabled, "unknown command") {
		t.Errorf("stats %+v; want disabled by the unknown command", st)
	}
	mustSet(t, c, "user:1", "v")
	if got := getString(t, c, "user:1"); got != "v" {
		t.Fatalf("Get = %q", got)
	}
}

// The tracked prefixes cover every key the tier may hold, and never overlap
// (Redis refuses overlapping BCAST prefixes).
func TestNearCacheTrackPrefixes(t *testing.T) {
	for _, tc := range []struct {
		prefixes []string
		want     []string
	}{
		{[]string{"cfg"}, []string{"kp:cfg"}},
		{[]string{"cfgx", "cfg", "b"}, []string{"kp:b", "kp:cfg"}},
		{[]string{"a", "a0", "ab", "b"}, []string{"kp:a", "kp:b"}},
		{[]string{"ab", "a0"}, []string{"kp:a0", "kp:ab"}},
	} {
		got := cache.NearTrackPrefixes(t, "kp", tc.prefixes)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Prefixes %q track %q, want %q", tc.prefixes, got, tc.want)
		}
	}
}

// Only a server that will never track keys for this client disables the
// tier; every other refusal is retried.
func TestNearCachePermanentReplies(t *testing.T) {
	for msg, permanent := range map[string]bool{
		"NOPERM User u has no permissions to run the 'client|tracking' command":            true,
		"NOPROTO unsupported protocol version":                                             true,
		"ERR unknown command 'HELLO', with args beginning with: '3' ":                      true,
		"ERR unknown command 'CLIENT', with args beginning with: 'TRACKING' ":              true,
		"ERR unknown subcommand 'TRACKING'. Try CLIENT HELP.":                              true,
		"ERR max number of clients reached":                                                false,
		"LOADING Redis is loading the dataset in memory":                                   false,
		"WRONGPASS invalid username-password pair or user is disabled.":                    false,
		"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.": false,
	} {
		if got := cache.NearPermanentReply(msg); got != permanent {
			t.Errorf("%q: permanent %v, want %v", msg, got, permanent)
		}
	}
}
