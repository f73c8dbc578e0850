package cache_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Concurrent GetManys beside the autopipelined Gets of the default
// configuration: each gets exactly its own values and stats count per key.
func TestGetManyConcurrent(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, cache.Config{}) // autopipelined: the default
	const callers, keys, rounds = 32, 40, 20
	items := map[string]any{}
	for g := range callers {
		for i := range keys {
			items["a:"+strconv.Itoa(g)+":"+strconv.Itoa(i)] = g*1000 + i
		}
	}
	if err := c.SetMany(ctx, items, time.Minute); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			ks := []string{"a:none"}
			for i := range keys {
				ks = append(ks, "a:"+strconv.Itoa(g)+":"+strconv.Itoa(i))
			}
			for range rounds {
				got, err := cache.GetMany[int](ctx, c, ks)
				if err != nil || len(got) != keys {
					t.Errorf("GetMany = %d values, %v; want %d", len(got), err, keys)
					return
				}
				for i, k := range ks[1:] {
					if got[k] != g*1000+i {
						t.Errorf("%s = %d, want %d", k, got[k], g*1000+i)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if s := c.Stats().Prefixes["a"]; s.Hits != callers*keys*rounds || s.Misses != callers*rounds {
		t.Errorf("stats = %+v, want %d hits, %d misses", s, callers*keys*rounds, callers*rounds)
	}
}

// A stalled server: GetManys give up within their context and report the
// error; once the server answers again they read normally.
func TestGetManyStalled(t *testing.T) {
	t.Parallel()
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	proxy := startStallProxy(t, own.Addr())
	c := newCache(t, cache.Config{URL: proxy.URL(), SocketTimeout: 500 * time.Millisecond})
	ctx := context.Background()
	if err := c.SetMany(ctx, map[string]any{"s:1": 1, "s:2": 2}, time.Minute); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			if got, err := cache.GetMany[int](short, c, []string{"s:1", "s:2"}); err == nil || len(got) != 0 {
				t.Errorf("GetMany against a stalled server = %v, %v; want an error", got, err)
			}
		})
	}
	wg.Wait()
	proxy.Resume()
	waitFor(t, 10*time.Second, "GetMany to read again", func() bool {
		got, err := cache.GetMany[int](ctx, c, []string{"s:1", "s:2"})
		return err == nil && got["s:1"] == 1 && got["s:2"] == 2
	})
}
