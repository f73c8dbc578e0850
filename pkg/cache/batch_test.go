package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// cmdCounter counts the commands a client sends, by name, and (with mark
// set) those with an argument containing mark, as count("").
type cmdCounter struct {
	mark string
	mu   sync.Mutex
	n    map[string]int
}

func (h *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cmdCounter) add(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	for _, c := range cmds {
		h.n[c.Name()]++
		if h.mark == "" {
			continue
		}
		for _, a := range c.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, h.mark) {
				h.n[""]++
				break
			}
		}
	}
}

func (h *cmdCounter) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[name]
}

func (h *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd)
		return next(ctx, cmd)
	}
}

func (h *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.add(cmds...)
		return next(ctx, cmds)
	}
}

// countedCache is a cache on srv through a client carrying a cmdCounter.
func countedCache(t *testing.T) (*cache.Cache, *cmdCounter) {
	t.Helper()
	client := srv.Client()
	t.Cleanup(func() { client.Close() })
	h := &cmdCounter{}
	client.AddHook(h)
	c, err := cache.New(cache.Config{Client: client, KeyPrefix: testPrefix(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, h
}

func TestGetManyHitsMissesStats(t *testing.T) {
	ctx := context.Background()
	c, h := countedCache(t)
	if err := c.SetMany(ctx, map[string]any{"u:1": "ann", "u:2": "bob", "o:1": "x"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// A foreign value, not decodable: a miss and an error.
	rc := rawClient(t)
	if err := rc.Set(ctx, testPrefix(t)+":u:3", "not an entry", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	before := h.count("mget")
	got, err := cache.GetMany[string](ctx, c, []string{"u:1", "u:2", "u:1", "u:none", "u:3", "o:1"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"u:1": "ann", "u:2": "bob", "o:1": "x"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GetMany = %v, want %v", got, want)
	}
	if n := h.count("mget") - before; n != 1 {
		t.Errorf("GetMany sent %d MGETs, want 1", n)
	}
	st := c.Stats()
	if u := st.Prefixes["u"]; u.Hits != 2 || u.Misses != 2 || u.Errors != 1 {
		t.Errorf("stats of u = %+v, want 2 hits (duplicate read once), 2 misses, 1 error", u)
	}
	if o := st.Prefixes["o"]; o.Hits != 1 || o.Misses != 0 {
		t.Errorf("stats of o = %+v, want 1 hit", o)
	}

	// A value that does not decode into T: absent, counted as Get counts it.
	got2, err := cache.GetMany[int](ctx, c, []string{"o:1"})
	if err == nil || len(got2) != 0 {
		t.Errorf("GetMany[int] of a string = %v, %v; want empty map and a decode error", got2, err)
	}
	if o := c.Stats().Prefixes["o"]; o.Misses != 1 || o.Errors != 1 {
		t.Errorf("stats of o after a decode error = %+v, want 1 miss, 1 error", o)
	}
}

func TestGetManyZeroKeysNoRoundTrip(t *testing.T) {
	ctx := context.Background()
	c, h := countedCache(t)
	// Only the commands of reads and writes: background work (stats
	// flushes, policy refreshes) may send others meanwhile.
	counts := func() string {
		h.mu.Lock()
		defer h.mu.Unlock()
		var s string
		for _, name := range []string{"mget", "get", "set", "pttl"} {
			s += fmt.Sprintf("%s=%d ", name, h.n[name])
		}
		return s
	}
	before := counts()
	for _, keys := range [][]string{nil, {}} {
		got, err := cache.GetMany[string](ctx, c, keys)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("GetMany(%v) = %v, %v; want an empty map", keys, got, err)
		}
		called := false
		got, err = cache.GetOrLoadMany(ctx, c, keys, 0, func(context.Context, []string) (map[string]string, error) {
			called = true
			return nil, nil
		})
		if err != nil || got == nil || len(got) != 0 || called {
			t.Errorf("GetOrLoadMany(%v) = %v, %v, load called %v; want an empty map, no load", keys, got, err, called)
		}
	}
	if err := c.SetMany(ctx, nil, 0); err != nil {
		t.Errorf("SetMany(nil) = %v", err)
	}
	if after := counts(); after != before {
		t.Errorf("commands sent for zero keys: %s, before %s", after, before)
	}
}

func TestGetMany100kChunked(t *testing.T) {
	ctx := context.Background()
	c, h := countedCache(t)
	const n = 100_000
	items := make(map[string]any, n)
	keys := make([]string, n)
	for i := range n {
		keys[i] = "k:" + strconv.Itoa(i)
		items[keys[i]] = i
	}
	if err := c.SetMany(ctx, items, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := cache.GetMany[int](ctx, c, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("GetMany returned %d values, want %d", len(got), n)
	}
	for i, k := range keys {
		if got[k] != i {
			t.Fatalf("%s = %d, want %d", k, got[k], i)
		}
	}
	if m := h.count("mget"); m != n/1000 {
		t.Errorf("GetMany of %d keys sent %d MGETs, want %d (1,000 keys each)", n, m, n/1000)
	}
	if s := c.Stats().Prefixes["k"]; s.Hits != n {
		t.Errorf("hits = %d, want %d", s.Hits, n)
	}
}

// failingCodec is JSON that refuses to encode the string "bad".
type failingCodec struct{}

var errBadValue = errors.New("refusing to encode")

func (failingCodec) Marshal(v any) ([]byte, error) {
	if v == "bad" {
		return nil, errBadValue
	}
	return fmt.Appendf(nil, "%q", v), nil
}

func (failingCodec) Unmarshal(data []byte, v any) error {
	s, err := strconv.Unquote(string(data))
	*v.(*string) = s
	return err
}

func TestSetManyFailingCodecStoresNothing(t *testing.T) {
	ctx := context.Background()
	kp := testPrefix(t)
	c := newCache(t, cache.Config{Codec: failingCodec{}})
	items := map[string]any{"a:1": "ok", "a:2": "bad", "a:3": "fine"}
	if err := c.SetMany(ctx, items, time.Minute); !errors.Is(err, errBadValue) {
		t.Fatalf("SetMany = %v, want the codec's error", err)
	}
	rc := rawClient(t)
	if n, err := rc.Exists(ctx, kp+":a:1", kp+":a:2", kp+":a:3").Result(); err != nil || n != 0 {
		t.Errorf("%d keys stored after a failing codec (%v), want none", n, err)
	}
	if err := c.SetMany(ctx, items, -time.Second); !errors.Is(err, cache.ErrInvalidTTL) {
		t.Errorf("SetMany with a negative ttl = %v, want ErrInvalidTTL", err)
	}
	delete(items, "a:2")
	if err := c.SetMany(ctx, items, 0); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.TTL(ctx, "a:1")
	if err != nil || ttl <= time.Minute || ttl > cache.DefaultTTL {
		t.Errorf("TTL after SetMany with ttl 0 = %v, %v; want DefaultTTL (%v)", ttl, err, cache.DefaultTTL)
	}
	got, err := cache.GetMany[string](ctx, c, []string{"a:1", "a:3"})
	if err != nil || got["a:1"] != "ok" || got["a:3"] != "fine" {
		t.Errorf("GetMany = %v, %v", got, err)
	}
}

func TestGetManyHonoursGenerations(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	if err := c.SetMany(ctx, map[string]any{"g:1": 1, "g:2": 2, "h:1": 3}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := cache.GetMany[int](ctx, c, []string{"g:1", "g:2", "h:1"}); err != nil || len(got) != 3 {
		t.Fatalf("GetMany before the invalidation = %v, %v", got, err)
	}
	if err := c.InvalidatePrefix(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	got, err := cache.GetMany[int](ctx, c, []string{"g:1", "g:2", "h:1"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(map[string]int{"h:1": 3}) {
		t.Errorf("GetMany after InvalidatePrefix(g) = %v, want only h:1", got)
	}
	if g := c.Stats().Prefixes["g"]; g.Misses != 2 {
		t.Errorf("misses of g = %d, want 2", g.Misses)
	}
	// A deleted key (its tombstone) is a miss too.
	if _, err := c.Delete(ctx, "h:1"); err != nil {
		t.Fatal(err)
	}
	if got, err := cache.GetMany[int](ctx, c, []string{"h:1"}); err != nil || len(got) != 0 {
		t.Errorf("GetMany of a deleted key = %v, %v", got, err)
	}
}

func TestGetManyNearCache(t *testing.T) {
	ctx := context.Background()
	c := newNearCache(t, cache.Config{})
	if err := c.SetMany(ctx, map[string]any{"n:1": "a", "n:2": "b"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	barrier(t, c) // SetMany's own invalidations have arrived
	cacheLocally(t, c, "n:1", "a")
	// Under load the tier's lease can lapse between two reads (reads then go
	// to Redis, correctly): wait for a GetMany that finds n:1 in memory.
	waitFor(t, 5*time.Second, "GetMany to serve n:1 from the near-cache", func() bool {
		before := c.Stats().LocalHits
		got, err := cache.GetMany[string](ctx, c, []string{"n:1", "n:2"})
		if err != nil || got["n:1"] != "a" || got["n:2"] != "b" {
			t.Fatalf("GetMany = %v, %v", got, err)
		}
		return c.Stats().LocalHits == before+1
	})
	// SetMany evicts what it overwrites.
	if err := c.SetMany(ctx, map[string]any{"n:1": "A"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _ := cache.GetMany[string](ctx, c, []string{"n:1"}); got["n:1"] != "A" {
		t.Errorf("GetMany after SetMany = %v, want the new value", got)
	}
}

func TestGetOrLoadMany(t *testing.T) {
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	if err := c.Set(ctx, "p:1", "cached", time.Minute); err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	load := func(_ context.Context, missing []string) (map[string]string, error) {
		calls = append(calls, slices.Clone(missing))
		m := map[string]string{}
		for _, k := range missing {
			if k != "p:absent" {
				m[k] = "loaded " + k
			}
		}
		return m, nil
	}
	keys := []string{"p:1", "p:2", "p:3", "p:2", "p:absent"}
	got, err := cache.GetOrLoadMany(ctx, c, keys, time.Minute, load)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"p:1": "cached", "p:2": "loaded p:2", "p:3": "loaded p:3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GetOrLoadMany = %v, want %v", got, want)
	}
	if fmt.Sprint(calls) != "[[p:2 p:3 p:absent]]" {
		t.Errorf("load calls = %v, want one with the misses", calls)
	}
	calls = nil
	got, err = cache.GetOrLoadMany(ctx, c, keys, time.Minute, load)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("second GetOrLoadMany = %v, %v", got, err)
	}
	if fmt.Sprint(calls) != "[[p:absent]]" {
		t.Errorf("second load calls = %v, want only the key load left out", calls)
	}
	if s := c.Stats().Prefixes["p"]; s.Hits != 1+3 || s.Misses != 3+1 {
		t.Errorf("stats = %+v, want 4 hits, 4 misses", s)
	}

	// A loader's error is returned; a negative ttl fails before anything.
	boom := errors.New("boom")
	if _, err := cache.GetOrLoadMany(ctx, c, []string{"p:9"}, 0, func(context.Context, []string) (map[string]string, error) {
		return nil, boom
	}); !errors.Is(err, boom) {
		t.Errorf("loader error = %v, want boom", err)
	}
	if _, err := cache.GetOrLoadMany(ctx, c, []string{"p:9"}, -1, load); !errors.Is(err, cache.ErrInvalidTTL) {
		t.Errorf("negative ttl = %v, want ErrInvalidTTL", err)
	}
	// A nil *Cache loads everything.
	calls = nil
	got, err = cache.GetOrLoadMany(ctx, (*cache.Cache)(nil), []string{"p:1", "p:1", "p:2"}, 0, load)
	if err != nil || len(got) != 2 || fmt.Sprint(calls) != "[[p:1 p:2]]" {
		t.Errorf("nil cache: %v, %v, calls %v", got, err, calls)
	}
}

// A Delete by another process while the load runs: the write-back's
// compare-and-set finds the tombstone and stores nothing.
func TestGetOrLoadManyDeleteDuringLoad(t *testing.T) {
	ctx := context.Background()
	a := newCache(t, cache.Config{})
	b := newCache(t, cache.Config{})
	got, err := cache.GetOrLoadMany(ctx, a, []string{"d:1", "d:2"}, time.Minute, func(ctx context.Context, missing []string) (map[string]string, error) {
		if _, err := b.Delete(ctx, "d:1"); err != nil {
			return nil, err
		}
		return map[string]string{"d:1": "old", "d:2": "two"}, nil
	})
	if err != nil || got["d:1"] != "old" || got["d:2"] != "two" {
		t.Fatalf("GetOrLoadMany = %v, %v", got, err)
	}
	if v := getString(t, b, "d:1"); v != "" {
		t.Errorf("d:1 = %q after a Delete during its load, want it not written back", v)
	}
	if v := getString(t, b, "d:2"); v != "two" {
		t.Errorf("d:2 = %q, want it written back", v)
	}
	// The same with an InvalidatePrefix in this process: nothing lands.
	_, err = cache.GetOrLoadMany(ctx, a, []string{"e:1"}, time.Minute, func(ctx context.Context, missing []string) (map[string]string, error) {
		return map[string]string{"e:1": "old"}, a.InvalidatePrefix(ctx, "e")
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := getString(t, b, "e:1"); v != "" {
		t.Errorf("e:1 = %q after InvalidatePrefix during its load, want a miss", v)
	}
}

// With Redis down, GetOrLoadMany loads everything (fail open) and GetMany
// reports the error.
func TestGetOrLoadManyFailOpen(t *testing.T) {
	ctx := context.Background()
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	c := newCache(t, cache.Config{URL: own.URL(0), SocketTimeout: 500 * time.Millisecond})
	if err := c.Set(ctx, "f:1", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	own.Stop()
	var loaded []string
	got, err := cache.GetOrLoadMany(ctx, c, []string{"f:1", "f:2"}, 0, func(_ context.Context, missing []string) (map[string]int, error) {
		loaded = append(loaded, missing...)
		return map[string]int{"f:1": 1, "f:2": 2}, nil
	})
	if err != nil || len(got) != 2 || fmt.Sprint(loaded) != "[f:1 f:2]" {
		t.Errorf("GetOrLoadMany with Redis down = %v, %v (loaded %v), want both loaded", got, err, loaded)
	}
	if got, err := cache.GetMany[int](ctx, c, []string{"f:1"}); err == nil || len(got) != 0 {
		t.Errorf("GetMany with Redis down = %v, %v; want an error", got, err)
	}
}

// A cached "no value" (ErrNoValue) is a hit that GetMany leaves out of its
// map and GetOrLoadMany does not load again, as GetOrLoad does not.
func TestBatchNegativeEntries(t *testing.T) {
	c := newCache(t, cache.Config{KeyPrefix: testPrefix(t)})
	ctx := context.Background()
	_, err := cache.GetOrLoad(ctx, c, "row:gone", time.Minute, func(context.Context) (string, error) {
		return "", fmt.Errorf("no such row: %w", cache.ErrNoValue)
	})
	if !errors.Is(err, cache.ErrNoValue) {
		t.Fatalf("GetOrLoad = %v, want ErrNoValue", err)
	}
	if err := c.Set(ctx, "row:here", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := cache.GetMany[string](ctx, c, []string{"row:gone", "row:here"})
	if err != nil {
		t.Fatalf("GetMany with a negative entry: %v", err)
	}
	if _, ok := got["row:gone"]; ok || got["row:here"] != "v" || len(got) != 1 {
		t.Fatalf("GetMany = %v, want only row:here", got)
	}
	loaded, err := cache.GetOrLoadMany(ctx, c, []string{"row:gone", "row:here"}, time.Minute,
		func(_ context.Context, missing []string) (map[string]string, error) {
			t.Errorf("loader called for %v: the negative entry and the value are both cached", missing)
			return nil, nil
		})
	if err != nil || len(loaded) != 1 {
		t.Fatalf("GetOrLoadMany = %v, %v", loaded, err)
	}
}
