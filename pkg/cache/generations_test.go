package cache_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Issue 9, item 3: process A's loader reads v1; process B writes v2 and
// invalidates; A then writes v1 back. Neither A nor B nor a process started
// afterwards may read v1 again.
func TestWriteBackFencedAcrossProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := uniquePrefix(t)
	a := newCache(t, cache.Config{KeyPrefix: kp})
	b := newCache(t, cache.Config{KeyPrefix: kp})
	var db atomic.Value
	db.Store("v1")
	read := func(context.Context) (string, error) { return db.Load().(string), nil }

	loading, release := make(chan struct{}), make(chan struct{})
	done := make(chan string, 1)
	go func() {
		v, _ := cache.GetOrLoad(ctx, a, "users:1", time.Hour, func(ctx context.Context) (string, error) {
			v, _ := read(ctx)
			close(loading)
			<-release
			return v, nil
		})
		done <- v
	}()
	<-loading
	update := cache.InvalidateOnWrite(b, "users", func(_ context.Context, v string) (string, error) {
		db.Store(v)
		return v, nil
	})
	if _, err := update(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if v := <-done; v != "v1" {
		t.Fatalf("A's load returned %q, want what it read, v1", v)
	}
	fresh := newCache(t, cache.Config{KeyPrefix: kp})
	for name, c := range map[string]*cache.Cache{"B": b, "A": a, "a fresh process": fresh} {
		if name == "A" {
			// A learns of B's invalidation from the events channel.
			waitFor(t, 5*time.Second, "A to see B's invalidation", func() bool {
				var v string
				found, _ := a.Get(ctx, "users:1", &v)
				return !found || v != "v1"
			})
		}
		if v, err := cache.GetOrLoad(ctx, c, "users:1", time.Hour, read); err != nil || v != "v2" {
			t.Errorf("%s reads %q (%v) after B's write, want v2", name, v, err)
		}
	}
}

// The same with autopipelining (the default): A's write-back times out while the network is
// stalled, B invalidates meanwhile, and A's SET lands afterwards. Its
// generation tag keeps it from being served by whoever knows the new one.
func TestLateWriteBackFencedByGeneration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := uniquePrefix(t)
	proxy := startStallProxy(t, srv.Addr())
	a := newCache(t, cache.Config{KeyPrefix: kp, URL: proxy.URL(), SocketTimeout: 300 * time.Millisecond})
	b := newCache(t, cache.Config{KeyPrefix: kp})
	newOperator(t, kp).waitSubscribed(2)
	rc := rawClient(t)
	var db atomic.Value
	db.Store("v1")
	read := func(context.Context) (string, error) { return db.Load().(string), nil }

	var other sync.WaitGroup
	v, err := cache.GetOrLoad(ctx, a, "users:1", time.Hour, func(ctx context.Context) (string, error) {
		v, _ := read(ctx)
		proxy.Stall()
		// A call in flight, so that the write-back goes through the
		// autopipeliner.
		other.Go(func() { _, _ = a.Get(context.Background(), "users:other", nil) })
		waitFor(t, 5*time.Second, "a concurrent call", func() bool { return cache.PipelineInflight(a) > 0 })
		return v, nil
	})
	if err != nil || v != "v1" {
		t.Fatalf("A's GetOrLoad = %q, %v", v, err)
	}
	other.Wait()
	if exists := rc.Exists(ctx, keyspace.New(kp).DataKey("users:1")).Val(); exists != 0 {
		t.Fatal("the write-back landed while the network was stalled")
	}
	update := cache.InvalidateOnWrite(b, "users", func(_ context.Context, v string) (string, error) {
		db.Store(v)
		return v, nil
	})
	if _, err := update(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	// B's reclaim of the prefix has nothing to delete yet; then A's SET lands.
	waitFor(t, 5*time.Second, "B's reclaim", func() bool { return !cache.Reclaiming(b, "users") })
	proxy.Resume()
	waitFor(t, 5*time.Second, "A's late SET to land", func() bool {
		return rc.Exists(ctx, keyspace.New(kp).DataKey("users:1")).Val() == 1
	})
	fresh := newCache(t, cache.Config{KeyPrefix: kp})
	for name, c := range map[string]*cache.Cache{"B": b, "a fresh process": fresh} {
		if v, err := cache.GetOrLoad(ctx, c, "users:1", time.Hour, read); err != nil || v != "v2" {
			t.Errorf("%s reads %q (%v) after the late write-back, want v2", name, v, err)
		}
	}
	waitFor(t, 5*time.Second, "A to read v2", func() bool {
		v, err := cache.GetOrLoad(ctx, a, "users:1", time.Hour, read)
		return err == nil && v == "v2"
	})
}

// InvalidateOnWrite is one round trip: it returns while the SCAN that
// deletes the keys is still held up, and the invalidation is visible then.
func TestInvalidatePrefixDoesNotWaitForTheScan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{KeyPrefix: uniquePrefix(t)})
	if err := c.Set(ctx, "users:1", "old", 0); err != nil {
		t.Fatal(err)
	}
	scans := &holdScans{release: make(chan struct{})}
	c.Client().AddHook(scans)
	update := cache.InvalidateOnWrite(c, "users", func(context.Context, int) (int, error) { return 1, nil })
	returned := make(chan error, 1)
	go func() {
		_, err := update(ctx, 1)
		returned <- err
	}()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(scans.release)
		t.Fatal("InvalidateOnWrite waited for a SCAN")
	}
	if hit(c, "users:1") {
		t.Error("users:1 is served after its invalidation returned")
	}
	if ok, _ := c.Exists(ctx, "users:1"); !ok {
		t.Error("users:1 was deleted while every SCAN was held")
	}
	close(scans.release)
	waitFor(t, 5*time.Second, "the background reclaim", func() bool {
		ok, _ := c.Exists(ctx, "users:1")
		return !ok
	})
}

// holdScans holds every pipeline with a SCAN until release is closed.
type holdScans struct{ release chan struct{} }

func (h *holdScans) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *holdScans) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *holdScans) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if cmd.Name() == "scan" {
				<-h.release
				break
			}
		}
		return next(ctx, cmds)
	}
}

// The caller's context bounds InvalidatePrefix; the bump goes on without it.
func TestInvalidatePrefixBoundedByContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := uniquePrefix(t)
	proxy := startStallProxy(t, srv.Addr())
	c := newCache(t, cache.Config{KeyPrefix: kp, URL: proxy.URL(), SocketTimeout: 5 * time.Second})
	if err := c.Set(ctx, "users:1", "old", 0); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.InvalidatePrefix(short, "users"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("InvalidatePrefix on a stalled server with a 50ms context: %v, want its deadline", err)
	}
	proxy.Resume()
	fresh := newCache(t, cache.Config{KeyPrefix: kp})
	waitFor(t, 10*time.Second, "the bump to land after all", func() bool { return !hit(fresh, "users:1") })
}

// With the near-cache on, an Invalidate against a stalled server takes one
// SocketTimeout, not one for the SCAN and another for the near-cache's
// barrier (issue 9, item 6).
func TestInvalidateStalledOneDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	proxy := startStallProxy(t, srv.Addr())
	const timeout = 500 * time.Millisecond
	c := newNearCache(t, cache.Config{URL: proxy.URL(), SocketTimeout: timeout})
	mustSet(t, c, "user:1", "v")
	barrier(t, c)
	cacheLocally(t, c, "user:1", "v")
	proxy.Stall()
	for _, pattern := range []string{"user:*", "us*"} {
		start := time.Now()
		_, err := c.Invalidate(ctx, pattern)
		elapsed := time.Since(start)
		t.Logf("Invalidate(%q) with Redis stalled: %v after %v", pattern, err, elapsed)
		if err == nil {
			t.Errorf("Invalidate(%q) succeeded against a stalled server", pattern)
		}
		// Allow scheduling slack only, as checkStalled does.
		if limit := timeout + 400*time.Millisecond; elapsed > limit {
			t.Errorf("Invalidate(%q) with Redis stalled took %v, want at most SocketTimeout %v (+ slack)", pattern, elapsed, timeout)
		}
	}
	if st := c.NearCacheStats(); st.Entries != 0 {
		t.Errorf("the near-cache still holds %d entries after a failed Invalidate", st.Entries)
	}
}

// Issue 9, item 10: the generations hash is lost (evicted, deleted). The
// process that knew the bump keeps it, and a fresh process cannot serve an
// entry written before the bump either.
func TestGenerationsSurviveALostHash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := uniquePrefix(t)
	space := keyspace.New(kp)
	rc := rawClient(t)
	a := newCache(t, cache.Config{KeyPrefix: kp})
	if err := a.Set(ctx, "users:1", "before", 0); err != nil {
		t.Fatal(err)
	}
	stale, err := rc.Get(ctx, space.DataKey("users:1")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.InvalidatePrefix(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the reclaim", func() bool { return rc.Exists(ctx, space.DataKey("users:1")).Val() == 0 })
	// An invalidated entry not deleted yet (its SET was late, say), and
	// the hash gone.
	if err := rc.Set(ctx, space.DataKey("users:1"), stale, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Del(ctx, space.GenKey()).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := newCache(t, cache.Config{KeyPrefix: kp})
	for name, c := range map[string]*cache.Cache{"the invalidating process": a, "a fresh process": fresh} {
		if hit(c, "users:1") {
			t.Errorf("%s serves an entry written before the invalidation after the hash was lost", name)
		}
	}
	if err := fresh.Set(ctx, "users:2", "after", 0); err != nil {
		t.Fatal(err)
	}
	if !hit(fresh, "users:2") || !hit(a, "users:2") {
		t.Error("an entry written after the hash was recreated is not served")
	}
}

// Issue 9, item 10: a process that cannot read the generations serves
// nothing (it fails open) rather than entries it cannot judge.
func TestNoEntryServedBeforeGenerationsAreKnown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := uniquePrefix(t)
	space := keyspace.New(kp)
	op := newOperator(t, kp)
	gen := op.bump("users")
	// The policy hash as the operator used to publish generations, for the
	// code before the generations hash.
	op.setPolicyEntry("users", keyspace.PrefixPolicy{TTLMillis: 60000, Generation: gen})
	stale := keyspace.AppendEntry(nil, gen-1, []byte(`"stale"`))
	if err := op.rc.Set(ctx, space.DataKey("users:1"), stale, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// A user that may read data keys but not the control keys.
	u := redistest.CacheUser("genunknown", "pw", kp)
	var rules []string
	for _, r := range u.Rules {
		if !strings.HasPrefix(r, "~{cacheplane:") {
			rules = append(rules, r)
		}
	}
	u.Rules = rules
	if err := srv.SetUser(u); err != nil {
		t.Fatal(err)
	}
	c := newCache(t, cache.Config{KeyPrefix: kp, Username: u.Name, Password: u.Password})
	var v string
	found, err := c.Get(ctx, "users:1", &v)
	if found {
		t.Fatalf("Get served %q without knowing the prefix's generation", v)
	}
	if err == nil {
		t.Error("Get without the generations reported a plain miss, want an error (fail open)")
	}
	loaded, err := cache.GetOrLoad(ctx, c, "users:1", 0, func(context.Context) (string, error) { return "source", nil })
	if err != nil || loaded != "source" {
		t.Errorf("GetOrLoad = %q, %v; want the source", loaded, err)
	}
	// Rights restored: the generations load on the next read.
	if err := srv.SetUser(redistest.CacheUser(u.Name, u.Password, kp)); err != nil {
		t.Fatal(err)
	}
	if found, err := c.Get(ctx, "users:1", &v); found || err != nil {
		t.Errorf("Get once the generations are readable = %v %q, %v; want a miss", found, v, err)
	}
}

// Issue 9, item 11: a stats flush whose reply is lost after Redis applied it
// is re-sent; the counts in Redis must still equal the real ones.
func TestStatsFlushReplyLostCountsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := uniquePrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp, StatsFlushInterval: time.Hour})
	_ = c.Set(ctx, "user:1", 1, 0)
	for range 3 {
		hit(c, "user:1")
	}
	hit(c, "user:missing")
	lose := &loseReply{}
	lose.armed.Store(true)
	c.Client().AddHook(lose)
	if err := cache.FlushStats(c); err == nil {
		t.Fatal("the flush with its reply lost reported success")
	}
	if lose.armed.Load() {
		t.Fatal("no flush command went through the hook")
	}
	hit(c, "user:1") // counted since: goes with the next batch
	if err := cache.FlushStats(c); err != nil {
		t.Fatal(err)
	}
	want := c.Stats().Prefixes["user"]
	got := rawClient(t).HGetAll(ctx, keyspace.New(kp).StatsKey("user")).Val()
	if got["hits"] != itoa(want.Hits) || got["misses"] != itoa(want.Misses) {
		t.Errorf("stats hash %v, want the real counts %+v", got, want)
	}
}

// loseReply lets the first stats flush reach Redis and then fails it as a
// read timeout would: Redis has applied it, the client does not know.
type loseReply struct{ armed atomic.Bool }

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout (injected)" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

func isFlush(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hincrby":
		return true
	case "evalsha", "eval":
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, ":flushed:") {
				return true
			}
		}
	}
	return false
}

func (h *loseReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *loseReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && isFlush(cmd) && h.armed.CompareAndSwap(true, false) {
			cmd.SetErr(timeoutError{})
			return cmd.Err()
		}
		return err
	}
}

func (h *loseReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err == nil && len(cmds) > 0 && isFlush(cmds[0]) && h.armed.CompareAndSwap(true, false) {
			for _, cmd := range cmds {
				cmd.SetErr(timeoutError{})
			}
			return timeoutError{}
		}
		return err
	}
}

// Issue 9, item 12: Redis is down when the app starts. Connect says so, and
// the cache connects by itself once Redis is up: loaders start caching
// without a restart, and the recovery is logged.
func TestConnectRetriesInTheBackground(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	own.Stop()
	logs := &recordingHandler{}
	c, err := cache.New(cache.Config{URL: own.URL(0), KeyPrefix: uniquePrefix(t), SocketTimeout: time.Second, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(ctx); err == nil {
		t.Fatal("Connect to a stopped server succeeded")
	}
	var loads atomic.Int32
	load := func(context.Context) (string, error) { loads.Add(1); return "v", nil }
	if v, err := cache.GetOrLoad(ctx, c, "user:1", 0, load); err != nil || v != "v" {
		t.Fatalf("GetOrLoad while Redis is down = %q, %v; want the loader's value", v, err)
	}
	waitFor(t, 10*time.Second, "a warning about the failed attempts", func() bool { return logs.has(slog.LevelWarn, "unreachable") })

	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the cache to connect by itself", func() bool { return c.Client() != nil })
	before := loads.Load()
	for range 3 {
		if v, err := cache.GetOrLoad(ctx, c, "user:1", 0, load); err != nil || v != "v" {
			t.Fatalf("GetOrLoad after the recovery = %q, %v", v, err)
		}
	}
	if n := loads.Load() - before; n != 1 {
		t.Errorf("the loader ran %d times for 3 calls once Redis was up, want 1 (cached)", n)
	}
	if !logs.has(slog.LevelInfo, "connected") {
		t.Error("the recovery was not logged")
	}
	if err := c.Connect(ctx); err != nil {
		t.Errorf("Connect once connected: %v", err)
	}
}

// Close stops the retries of a cache that never connected.
func TestCloseStopsConnectRetries(t *testing.T) {
	t.Parallel()
	c, err := cache.New(cache.Config{URL: blackhole(t), SocketTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(context.Background()); err == nil {
		t.Fatal("Connect to a server that never answers succeeded")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Connect(context.Background()); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Connect after Close: %v, want ErrClosed", err)
	}
	if c.Client() != nil {
		t.Error("a closed cache connected")
	}
}

// uniquePrefix is testPrefix made unique to each run of the test (-count).
func uniquePrefix(t *testing.T) string { return testPrefix(t) + "-" + keyspace.NewProcessID()[:8] }

// recordingHandler keeps log records for assertions.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) has(level slog.Level, substr string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			return true
		}
	}
	return false
}
