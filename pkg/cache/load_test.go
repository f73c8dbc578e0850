package cache_test

import (
	"context"
	"crypto/sha1" //nolint:gosec // Redis's script hash
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

func TestGetOrLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	var calls atomic.Int32
	load := func(context.Context) (user, error) {
		calls.Add(1)
		return user{ID: 1, Name: "Ada"}, nil
	}
	for i := range 3 {
		got, err := cache.GetOrLoad(ctx, c, "user:1", time.Minute, load)
		if err != nil || got.Name != "Ada" {
			t.Fatalf("call %d: %+v, %v", i, got, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("loader called %d times, want 1", n)
	}
	if ttl, _ := c.TTL(ctx, "user:1"); ttl <= 50*time.Second || ttl > time.Minute {
		t.Errorf("loaded value stored with TTL %v, want 1m", ttl)
	}
	if s := c.Stats(); s.Hits != 2 || s.Misses != 1 {
		t.Errorf("stats = %+v, want 2 hits, 1 miss", s)
	}

	// Loader errors are returned and not cached.
	errDB := errors.New("db down")
	for i := range 2 {
		_, err := cache.GetOrLoad(ctx, c, "user:2", 0, func(context.Context) (user, error) {
			calls.Add(1)
			return user{}, errDB
		})
		if !errors.Is(err, errDB) {
			t.Fatalf("call %d: %v, want the loader's error", i, err)
		}
	}
	if ok, _ := c.Exists(ctx, "user:2"); ok {
		t.Error("a loader error was cached")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("loader called %d times in all, want 3 (errors are not cached)", n)
	}

	// A nil cache just loads.
	if v, err := cache.GetOrLoad(ctx, nil, "user:1", 0, load); err != nil || v.ID != 1 {
		t.Errorf("nil cache: %+v, %v", v, err)
	}
}

func TestGetOrLoadOneLoadPerKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	const callers = 50
	var calls atomic.Int32
	release := make(chan struct{})
	load := func(context.Context) (int, error) {
		calls.Add(1)
		<-release
		return 42, nil
	}
	var wg sync.WaitGroup
	results := make([]int, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { results[i], errs[i] = cache.GetOrLoad(ctx, c, "hot:1", 0, load) })
	}
	waitFor(t, 10*time.Second, "all callers to wait on one load", func() bool {
		return cache.FlightWaiters(c, "hot:1") == callers
	})
	close(release)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || results[i] != 42 {
			t.Fatalf("caller %d: %d, %v", i, results[i], errs[i])
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("loader called %d times by %d concurrent callers, want 1", n, callers)
	}
}

func TestGetOrLoadWaiterCancels(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	release := make(chan struct{})
	loadCtx := make(chan context.Context, 1)
	load := func(ctx context.Context) (string, error) {
		loadCtx <- ctx
		<-release
		return "v", ctx.Err()
	}

	// The first caller starts the load, the second joins it and gives up.
	first := make(chan error, 1)
	go func() {
		v, err := cache.GetOrLoad(context.Background(), c, "w:1", 0, load)
		if err == nil && v != "v" {
			err = fmt.Errorf("got %q", v)
		}
		first <- err
	}()
	lctx := <-loadCtx
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() {
		_, err := cache.GetOrLoad(ctx, c, "w:1", 0, load)
		second <- err
	}()
	waitFor(t, 5*time.Second, "the second caller to join", func() bool { return cache.FlightWaiters(c, "w:1") == 2 })
	cancel()
	select {
	case err := <-second:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled waiter: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled waiter kept waiting for the load")
	}
	if lctx.Err() != nil {
		t.Fatal("one waiter's cancellation cancelled the load")
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first caller: %v", err)
	}
	if found, _ := c.Get(context.Background(), "w:1", nil); !found {
		t.Error("the load's result was not cached")
	}
}

func TestGetOrLoadAllWaitersCancel(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	loadCtx := make(chan context.Context, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := cache.GetOrLoad(ctx, c, "w:2", 0, func(ctx context.Context) (int, error) {
			loadCtx <- ctx
			<-ctx.Done()
			return 0, ctx.Err()
		})
		done <- err
	}()
	lctx := <-loadCtx
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("GetOrLoad: %v, want context.Canceled", err)
	}
	select {
	case <-lctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the load was not cancelled when its last waiter left")
	}
	// A later call starts a fresh load rather than joining the cancelled one.
	v, err := cache.GetOrLoad(context.Background(), c, "w:2", 0, func(context.Context) (int, error) { return 7, nil })
	if err != nil || v != 7 {
		t.Errorf("next GetOrLoad = %d, %v", v, err)
	}
}

func TestGetOrLoadPanic(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	func() {
		defer func() {
			r := recover()
			if r == nil || !strings.Contains(fmt.Sprint(r), "boom") {
				t.Errorf("recovered %v, want the loader's panic", r)
			}
		}()
		_, _ = cache.GetOrLoad(context.Background(), c, "p:1", 0, func(context.Context) (int, error) { panic("boom") })
	}()
	v, err := cache.GetOrLoad(context.Background(), c, "p:1", 0, func(context.Context) (int, error) { return 1, nil })
	if err != nil || v != 1 {
		t.Errorf("after a panic: %d, %v", v, err)
	}
}

func TestCached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	type query struct {
		UserID         int
		IncludeDetails bool
	}
	var calls atomic.Int32
	getUser := cache.Cached(c, "users", time.Minute,
		func(q query) map[string]any { return map[string]any{"user_id": q.UserID} },
		func(_ context.Context, q query) (user, error) {
			calls.Add(1)
			return user{ID: q.UserID}, nil
		})

	for _, q := range []query{{1, false}, {1, true}, {2, false}, {1, false}} {
		u, err := getUser(ctx, q)
		if err != nil || u.ID != q.UserID {
			t.Fatalf("getUser(%+v) = %+v, %v", q, u, err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("fn called %d times, want 2: IncludeDetails is not a key parameter", n)
	}
	key := cache.GenerateKey("users", map[string]any{"user_id": 1})
	if ok, _ := c.Exists(ctx, key); !ok {
		t.Errorf("result not stored under GenerateKey(users, {user_id: 1}) = %s", key)
	}

	// Without keyParams the whole argument is the key.
	var wholeCalls atomic.Int32
	whole := cache.Cached(c, "whole", 0, nil, func(_ context.Context, q query) (int, error) {
		wholeCalls.Add(1)
		return q.UserID, nil
	})
	for _, q := range []query{{1, false}, {1, true}, {1, false}} {
		if _, err := whole(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if n := wholeCalls.Load(); n != 2 {
		t.Errorf("nil keyParams: fn called %d times, want 2", n)
	}
}

func TestInvalidateOnWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	for _, k := range []string{"users:1", "users:2", "usersx:1", "orders:1"} {
		if err := c.Set(ctx, k, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	errWrite := errors.New("write failed")
	update := cache.InvalidateOnWrite(c, "users", func(_ context.Context, fail bool) (string, error) {
		if fail {
			return "", errWrite
		}
		return "ok", nil
	})

	if _, err := update(ctx, true); !errors.Is(err, errWrite) {
		t.Fatalf("failing write: %v", err)
	}
	if ok, _ := c.Exists(ctx, "users:1"); !ok {
		t.Error("a failed write invalidated the prefix")
	}

	// The write's invalidation is visible when it returns; the keys
	// themselves go in the background.
	if r, err := update(ctx, false); err != nil || r != "ok" {
		t.Fatalf("write = %q, %v", r, err)
	}
	for k, want := range map[string]bool{"users:1": false, "users:2": false, "usersx:1": true, "orders:1": true} {
		if hit(c, k) != want {
			t.Errorf("right after the write, Get(%s) hit = %v, want %v", k, !want, want)
		}
	}
	waitFor(t, 5*time.Second, "the invalidated keys to be deleted", func() bool {
		n, _ := c.Exists(ctx, "users:1")
		m, _ := c.Exists(ctx, "users:2")
		return !n && !m
	})
	for _, k := range []string{"usersx:1", "orders:1"} {
		if ok, _ := c.Exists(ctx, k); !ok {
			t.Errorf("%s was deleted by the invalidation of users", k)
		}
	}

	// A context cancelled after the write must not leave stale entries: the
	// invalidation goes on without the caller.
	if err := c.Set(ctx, "users:3", 3, 0); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if r, err := update(cctx, false); err != nil || r != "ok" {
		t.Fatalf("write = %q, %v", r, err)
	}
	waitFor(t, 5*time.Second, "users:3 to be invalidated", func() bool { return !hit(c, "users:3") })
}

// A load that read its source before a write must not be cached once the
// write's invalidation has run in this process: neither written back (it
// would be served for a whole TTL) nor handed to callers that arrive after
// the write.
func TestInvalidateOnWriteDuringLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	var db atomic.Value
	db.Store("v1")
	loading, release := make(chan struct{}), make(chan struct{})
	var loads atomic.Int32
	load := func(context.Context) (string, error) {
		v := db.Load().(string) // read before the write...
		if loads.Add(1) == 1 {
			close(loading)
			<-release // ...and returned after its invalidation
		}
		return v, nil
	}
	first := make(chan string, 1)
	go func() {
		v, _ := cache.GetOrLoad(ctx, c, "users:1", time.Hour, load)
		first <- v
	}()
	<-loading
	update := cache.InvalidateOnWrite(c, "users", func(_ context.Context, v string) (string, error) {
		db.Store(v)
		return v, nil
	})
	if _, err := update(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	// A read that starts after the write returned.
	after := make(chan string, 1)
	go func() {
		v, _ := cache.GetOrLoad(ctx, c, "users:1", time.Hour, load)
		after <- v
	}()
	select {
	case v := <-after:
		if v != "v2" {
			t.Errorf("GetOrLoad after the write = %q, want v2", v)
		}
	case <-time.After(time.Second):
		t.Error("GetOrLoad after the write waited for a load that started before it")
	}
	close(release)
	if v := <-first; v != "v1" {
		t.Errorf("the load in flight returned %q, want what it read, v1", v)
	}
	var got string
	if found, err := c.Get(ctx, "users:1", &got); err != nil || (found && got != "v2") {
		t.Errorf("after the write, the cache holds %q (found %v, %v), want v2 or nothing", got, found, err)
	}
}

// invalidateBeforeSet runs an Invalidate just before the first write-back
// of key goes out (a SET, or the compare-and-set script): the interleaving
// in which the invalidation's SCAN has passed before the write-back lands.
type invalidateBeforeSet struct {
	key  string
	once sync.Once
	run  func()
}

func (h *invalidateBeforeSet) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *invalidateBeforeSet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *invalidateBeforeSet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isWriteBack(cmd, h.key) {
			h.once.Do(h.run)
		}
		return next(ctx, cmd)
	}
}

// isWriteBack reports whether cmd writes key: a SET, or the write-back's
// compare-and-set script (keyspace.WriteBackLua).
func isWriteBack(cmd redis.Cmder, key string) bool {
	args := cmd.Args()
	switch cmd.Name() {
	case "set":
		return fmt.Sprint(args[1]) == key
	case "evalsha", "eval":
		sum := sha1.Sum([]byte(keyspace.WriteBackLua))
		script := fmt.Sprint(args[1])
		return len(args) > 3 && fmt.Sprint(args[3]) == key &&
			(script == hex.EncodeToString(sum[:]) || script == keyspace.WriteBackLua)
	}
	return false
}

func TestInvalidateDuringWriteBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	h := &invalidateBeforeSet{key: testPrefix(t) + ":users:1"}
	h.run = func() {
		if _, err := c.Invalidate(ctx, "users:*"); err != nil {
			t.Error(err)
		}
	}
	c.Client().AddHook(h)
	v, err := cache.GetOrLoad(ctx, c, "users:1", time.Hour, func(context.Context) (string, error) { return "read before", nil })
	if err != nil || v != "read before" {
		t.Fatalf("GetOrLoad = %q, %v", v, err)
	}
	if ok, err := c.Exists(ctx, "users:1"); err != nil || ok {
		t.Errorf("a value loaded before an invalidation is stored after it (exists %v, %v)", ok, err)
	}
	// The same with a Delete of the key.
	h2 := &invalidateBeforeSet{key: testPrefix(t) + ":users:3"}
	h2.run = func() {
		if _, err := c.Delete(ctx, "users:3"); err != nil {
			t.Error(err)
		}
	}
	c.Client().AddHook(h2)
	if _, err := cache.GetOrLoad(ctx, c, "users:3", time.Hour, func(context.Context) (string, error) { return "read before", nil }); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Exists(ctx, "users:3"); err != nil || ok {
		t.Errorf("a value loaded before a Delete is stored after it (exists %v, %v)", ok, err)
	}
	// Without an invalidation the write-back stays.
	if _, err := cache.GetOrLoad(ctx, c, "users:2", time.Hour, func(context.Context) (string, error) { return "x", nil }); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Exists(ctx, "users:2"); !ok {
		t.Error("write-back without an invalidation was not stored")
	}
}
