package cache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// missingRow is a loader of a row that does not exist: it counts its calls.
func missingRow(calls *atomic.Int64) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		calls.Add(1)
		return "", fmt.Errorf("user 42: %w", cache.ErrNoValue)
	}
}

// getOrLoadMissing runs GetOrLoad with load and checks it reports no value.
func getOrLoadMissing(t *testing.T, c *cache.Cache, key string, ttl time.Duration, load func(context.Context) (string, error)) {
	t.Helper()
	v, err := cache.GetOrLoad(context.Background(), c, key, ttl, load)
	if !errors.Is(err, cache.ErrNoValue) || v != "" {
		t.Fatalf("GetOrLoad(%s) = %q, %v; want \"\" and an error wrapping ErrNoValue", key, v, err)
	}
}

// A hot missing row reaches the loader once per NegativeTTL, not once per
// request; once the negative entry expires the next call loads again.
func TestNegativeHotMissingRow(t *testing.T) {
	c := newCache(t, cache.Config{NegativeTTL: 300 * time.Millisecond})
	rc := rawClient(t)
	kp := testPrefix(t)
	var calls atomic.Int64
	load := missingRow(&calls)

	getOrLoadMissing(t, c, "user:42", time.Minute, load)
	var wg sync.WaitGroup
	for range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 11 {
				getOrLoadMissing(t, c, "user:42", time.Minute, load)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("100 calls loaded %d times; want 1", n)
	}
	// Counted as hits (the cache answered), Get sees a miss.
	if s := c.Stats(); s.Hits != 99 || s.Misses != 1 {
		t.Errorf("hits %d, misses %d; want 99 and 1", s.Hits, s.Misses)
	}
	var dst string
	if found, err := c.Get(context.Background(), "user:42", &dst); found || err != nil {
		t.Errorf("Get of a negative entry = %v, %v; want false, nil", found, err)
	}

	waitFor(t, 5*time.Second, "the negative entry to expire", func() bool {
		return rc.Exists(context.Background(), kp+":user:42").Val() == 0
	})
	getOrLoadMissing(t, c, "user:42", time.Minute, load)
	if n := calls.Load(); n != 2 {
		t.Fatalf("after NegativeTTL: %d loads; want 2", n)
	}
}

// A negative entry ends like any entry: Delete, InvalidatePrefix,
// Invalidate, and a Set replaces it.
func TestNegativeEndsLikeAnEntry(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	other := newCache(t, cache.Config{KeyPrefix: testPrefix(t)}) // another process
	var calls atomic.Int64
	load := missingRow(&calls)
	for i, end := range []func() error{
		func() error { _, err := other.Delete(ctx, "user:1"); return err },
		func() error { return other.InvalidatePrefix(ctx, "user") },
		func() error { _, err := other.Invalidate(ctx, "user:*"); return err },
	} {
		getOrLoadMissing(t, c, "user:1", time.Minute, load)
		loads := calls.Load()
		getOrLoadMissing(t, c, "user:1", time.Minute, load)
		if n := calls.Load(); n != loads {
			t.Fatalf("case %d: a cached negative entry was loaded again", i)
		}
		if err := end(); err != nil {
			t.Fatal(err)
		}
		// Another process's invalidation: c applies it once its events
		// channel delivers it.
		waitFor(t, 5*time.Second, "the invalidation", func() bool {
			getOrLoadMissing(t, c, "user:1", time.Minute, load)
			return calls.Load() > loads
		})
	}

	if err := other.Set(ctx, "user:1", "found", time.Minute); err != nil {
		t.Fatal(err)
	}
	v, err := cache.GetOrLoad(ctx, c, "user:1", time.Minute, load)
	if err != nil || v != "found" {
		t.Fatalf("after Set: %q, %v; want found", v, err)
	}
}

// A load that overlaps a Delete of its key stores no negative entry: the
// write-back fence applies to "no value" as to a value.
func TestNegativeFenced(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	other := newCache(t, cache.Config{KeyPrefix: testPrefix(t)})
	var calls atomic.Int64
	load := func(ctx context.Context) (string, error) {
		calls.Add(1)
		if _, err := other.Delete(ctx, "user:7"); err != nil {
			t.Error(err)
		}
		return "", cache.ErrNoValue
	}
	getOrLoadMissing(t, c, "user:7", time.Minute, load)
	if ok, err := c.Exists(ctx, "user:7"); ok || err != nil {
		t.Fatal("a negative entry was stored over the Delete")
	}
	getOrLoadMissing(t, c, "user:7", time.Minute, load)
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d loads; want 2 (nothing cached)", n)
	}
}

// NegativeTTL defaults to 10s and never outlives the TTL a value would get.
func TestNegativeEntryTTL(t *testing.T) {
	ctx := context.Background()
	rc := rawClient(t)
	var calls atomic.Int64
	for _, tc := range []struct {
		name     string
		negative time.Duration
		ttl      time.Duration
		max      time.Duration
	}{
		{"default", 0, time.Minute, cache.DefaultNegativeTTL},
		{"capped", time.Hour, 2 * time.Second, 2 * time.Second},
		{"set", 3 * time.Second, time.Minute, 3 * time.Second},
	} {
		kp := testPrefix(t) + "-" + tc.name
		c := newCache(t, cache.Config{KeyPrefix: kp, NegativeTTL: tc.negative})
		getOrLoadMissing(t, c, "user:1", tc.ttl, missingRow(&calls))
		pttl := rc.PTTL(ctx, kp+":user:1").Val()
		if pttl <= tc.max-time.Second || pttl > tc.max {
			t.Errorf("%s: PTTL %v; want just under %v", tc.name, pttl, tc.max)
		}
	}
	_, err := cache.New(cache.Config{NegativeTTL: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "Config.NegativeTTL") {
		t.Errorf("New with a negative NegativeTTL: %v; want an error naming Config.NegativeTTL", err)
	}
}

// Cached caches a "no value" of its function like GetOrLoad.
func TestNegativeCached(t *testing.T) {
	c := newCache(t, cache.Config{})
	var calls atomic.Int64
	find := cache.Cached(c, "user", time.Minute, nil, func(_ context.Context, id int) (string, error) {
		calls.Add(1)
		if id == 2 {
			return "", fmt.Errorf("user %d: %w", id, cache.ErrNoValue)
		}
		return "u1", nil
	})
	for range 5 {
		if _, err := find(context.Background(), 2); !errors.Is(err, cache.ErrNoValue) {
			t.Fatalf("find(2) = %v; want ErrNoValue", err)
		}
	}
	if v, err := find(context.Background(), 1); v != "u1" || err != nil {
		t.Fatalf("find(1) = %q, %v", v, err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls; want 2 (one per argument)", n)
	}
}

// With the near-cache on, negative entries are served from memory and
// invalidated there by another process's writes.
func TestNegativeNearCache(t *testing.T) {
	ctx := context.Background()
	prefix := testPrefix(t)
	a := newNearCache(t, cache.Config{KeyPrefix: prefix})
	b := newNearCache(t, cache.Config{KeyPrefix: prefix})
	var calls atomic.Int64
	load := missingRow(&calls)

	getOrLoadMissing(t, a, "user:9", time.Minute, load) // loads, stores
	// The first read from Redis fills memory; under load the tier's lease
	// can lapse between reads, so wait for one served from memory.
	waitFor(t, 5*time.Second, "the negative entry to be served from memory", func() bool {
		before := a.Stats().LocalHits
		getOrLoadMissing(t, a, "user:9", time.Minute, load)
		return a.Stats().LocalHits == before+1
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d loads; want 1", n)
	}

	// Another process's Set reaches a's memory.
	if err := b.Set(ctx, "user:9", "now here", time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the Set to reach the near-cache", func() bool {
		v, err := cache.GetOrLoad(ctx, a, "user:9", time.Minute, load)
		return err == nil && v == "now here"
	})

	// And its Delete: a negative entry cached in memory again, then dropped.
	if _, err := b.Delete(ctx, "user:9"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the Delete to reach the near-cache", func() bool {
		_, err := cache.GetOrLoad(ctx, a, "user:9", time.Minute, load)
		return errors.Is(err, cache.ErrNoValue)
	})
	waitFor(t, 5*time.Second, "the negative entry to be served from memory again", func() bool {
		before := a.Stats().LocalHits
		getOrLoadMissing(t, a, "user:9", time.Minute, load)
		return a.Stats().LocalHits == before+1
	})
	loads := calls.Load()
	if err := b.InvalidatePrefix(ctx, "user"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the invalidation to reach the near-cache", func() bool {
		getOrLoadMissing(t, a, "user:9", time.Minute, load)
		return calls.Load() > loads
	})
}

// GetOrLoadMany's loader returns ErrNoValue with its map to declare the keys
// it left out missing at the source: they are cached as "no value" (with
// NegativeTTL) and not loaded again; without ErrNoValue they would be.
func TestNegativeGetOrLoadMany(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, cache.Config{NegativeTTL: 5 * time.Second})
	var calls [][]string
	load := func(_ context.Context, missing []string) (map[string]string, error) {
		calls = append(calls, slices.Clone(missing))
		m := map[string]string{}
		for _, k := range missing {
			if k != "nlm:absent" {
				m[k] = "row " + k
			}
		}
		return m, fmt.Errorf("some rows missing: %w", cache.ErrNoValue)
	}
	keys := []string{"nlm:1", "nlm:absent"}
	for range 2 {
		got, err := cache.GetOrLoadMany(ctx, c, keys, time.Minute, load)
		if err != nil || len(got) != 1 || got["nlm:1"] != "row nlm:1" {
			t.Fatalf("GetOrLoadMany = %v, %v; want only nlm:1 and no error", got, err)
		}
	}
	if fmt.Sprint(calls) != "[[nlm:1 nlm:absent]]" {
		t.Errorf("load calls = %v, want one: the missing row is cached", calls)
	}
	if _, err := cache.GetOrLoad(ctx, c, "nlm:absent", time.Minute, func(context.Context) (string, error) {
		t.Error("GetOrLoad loaded a key cached as no value")
		return "", nil
	}); !errors.Is(err, cache.ErrNoValue) {
		t.Errorf("GetOrLoad of the missing row = %v, want ErrNoValue", err)
	}
	ttl, err := c.TTL(ctx, "nlm:absent")
	if err != nil || ttl <= 0 || ttl > 5*time.Second {
		t.Errorf("TTL of the negative entry = %v, %v; want at most NegativeTTL", ttl, err)
	}
}
