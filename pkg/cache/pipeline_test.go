package cache_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// With autopipelining (the default), the operations behave as without: values, misses, TTLs,
// and each goroutine reading its own writes while many run at once.
func TestAutoPipelineSemantics(t *testing.T) {
	c := newCache(t, cache.Config{})
	ctx := context.Background()
	if err := c.Set(ctx, "user:ttl", "v", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := ttlOf(t, c, "user:ttl"); d <= time.Second || d > 1500*time.Millisecond {
		t.Errorf("TTL = %v, want (1s, 1.5s]", d)
	}
	if got := getString(t, c, "user:none"); got != "" {
		t.Errorf("missing key read %q", got)
	}
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			for i := range 50 {
				key, want := fmt.Sprint("user:", g), fmt.Sprint(g, "/", i)
				if err := c.Set(ctx, key, want, time.Minute); err != nil {
					t.Error(err)
					return
				}
				var got string
				if found, err := c.Get(ctx, key, &got); err != nil || !found || got != want {
					t.Errorf("after Set %q, Get = %q, %v, %v", want, got, found, err)
					return
				}
			}
		})
	}
	wg.Wait()
	loads := 0
	for range 3 {
		v, err := cache.GetOrLoad(ctx, c, "user:loaded", time.Minute, func(context.Context) (int, error) { loads++; return 7, nil })
		if err != nil || v != 7 {
			t.Fatalf("GetOrLoad = %d, %v", v, err)
		}
	}
	if loads != 1 {
		t.Errorf("loader ran %d times, want 1", loads)
	}
	if s := c.Stats(); s.Hits < 64*50+2 {
		t.Errorf("stats %+v", s)
	}
}

// Fail open with the autopipeliner and the near-cache on: no call waits
// longer than SocketTimeout when the server stalls or is down.
func TestAutoPipelineAndNearCacheFailOpen(t *testing.T) {
	t.Parallel()
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	proxy := startStallProxy(t, own.Addr())
	const timeout = 500 * time.Millisecond
	c := newCache(t, cache.Config{URL: proxy.URL(), SocketTimeout: timeout, NearCache: &cache.NearCacheConfig{}})
	waitNearOn(t, c)
	api := newMiddlewareAPI(t, c)
	ctx := context.Background()
	mustSet(t, c, "user:1", "cached")
	cacheLocally(t, c, "user:1", "cached")

	proxy.Stall()
	// The stalled tracking connection stops answering its PINGs: the tier
	// turns off rather than serve what it can no longer hear about.
	waitFor(t, 5*time.Second, "the stalled tier to turn off", func() bool { return !c.NearCacheStats().Enabled })
	checkStalled(t, c, api, timeout)
	proxy.Resume()
	waitFor(t, 10*time.Second, "writes to work again", func() bool { return c.Set(ctx, "user:1", "again", 0) == nil })
	waitNearOn(t, c)
	cacheLocally(t, c, "user:1", "again")

	// Down: nothing listens any more (through a proxy to a dead server,
	// calls would see EOFs instead of refused dials).
	proxy.Close()
	own.Stop()
	for name, r := range failOpenCalls(t, c, api) {
		if failOpen[name] != (r.err == nil) {
			t.Errorf("%s with Redis down: %v (fail open: %v)", name, r.err, failOpen[name])
		}
		if limit := timeout + 400*time.Millisecond; r.elapsed > limit {
			t.Errorf("%s with Redis down took %v", name, r.elapsed)
		}
	}
}
