package cache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestClusterBatch runs the batch operations, negative entries and
// compression on a real 3-master Redis Cluster, started once for its
// subtests; each subtest has its own KeyPrefix.
func TestClusterBatch(t *testing.T) {
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	env := &clusterEnv{cl: cl}

	t.Run("Spread", env.spread)
	t.Run("GetMany100k", env.getMany100k)
	t.Run("Generations", env.generations)
	t.Run("Negative", env.negative)
	t.Run("Compression", env.compression)
}

type clusterEnv struct{ cl *redistest.Cluster }

// cache returns a connected cluster cache of KeyPrefix kp with cfg's other
// settings.
func (e *clusterEnv) cache(t *testing.T, kp string, cfg cache.Config) *cache.Cache {
	t.Helper()
	cfg.Mode, cfg.Addrs, cfg.KeyPrefix = cache.ModeCluster, e.cl.Addrs(), kp
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = time.Minute
	}
	return connectTopology(t, cfg)
}

// raw is an unrestricted cluster client, closed when the test ends.
func (e *clusterEnv) raw(t *testing.T) *redis.ClusterClient {
	rc := e.cl.Client()
	t.Cleanup(func() { rc.Close() })
	return rc
}

// mgets returns how many MGETs each master has served so far.
func (e *clusterEnv) mgets(t *testing.T) []int64 {
	t.Helper()
	out := make([]int64, len(e.cl.Nodes))
	for i, node := range e.cl.Nodes {
		nc := node.Client()
		info, err := nc.Info(context.Background(), "commandstats").Result()
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_mget:calls="); ok {
				calls, _, _ := strings.Cut(rest, ",")
				if out[i], err = strconv.ParseInt(calls, 10, 64); err != nil {
					t.Fatalf("commandstats of %s: %q", node.Addr(), line)
				}
			}
		}
	}
	return out
}

// keysOn counts the keys matching pattern on each master (by its own SCAN).
func (e *clusterEnv) keysOn(t *testing.T, pattern string) []int64 {
	t.Helper()
	out := make([]int64, len(e.cl.Nodes))
	for i, node := range e.cl.Nodes {
		out[i] = countKeys(t, node, pattern).matching
	}
	return out
}

// mgetsWanted is how many MGETs a GetMany of keys under kp sends: one per
// hash slot, split into 1,000 keys at most.
func mgetsWanted(kp string, keys []string) int64 {
	perSlot := map[int]int64{}
	for _, k := range keys {
		perSlot[purge.Slot(kp+":"+k)]++
	}
	var n int64
	for _, c := range perSlot {
		n += (c + 999) / 1000
	}
	return n
}

func sum(xs []int64) int64 {
	var s int64
	for _, x := range xs {
		s += x
	}
	return s
}

// Keys spread over every master: SetMany stores them on all three, GetMany
// reads them with one MGET per slot (so every master serves some), and
// GetOrLoadMany writes back misses on all three.
func (e *clusterEnv) spread(t *testing.T) {
	ctx := context.Background()
	kp := testPrefix(t)
	c := e.cache(t, kp, cache.Config{})
	const n = 2500
	items := map[string]any{}
	var keys []string
	for i := range n {
		k := "c:" + strconv.Itoa(i)
		items[k] = i
		keys = append(keys, k)
	}
	if err := c.SetMany(ctx, items, 0); err != nil {
		t.Fatal(err)
	}
	stored := e.keysOn(t, kp+":c:*")
	for i, m := range stored {
		if m < n/5 {
			t.Errorf("master %s holds %d of the %d keys SetMany stored", e.cl.Nodes[i].Addr(), m, n)
		}
	}
	if s := sum(stored); s != n {
		t.Errorf("the masters hold %d keys, want %d", s, n)
	}

	before := e.mgets(t)
	got, err := cache.GetMany[int](ctx, c, append(keys, "c:none"))
	if err != nil {
		t.Fatal(err)
	}
	after := e.mgets(t)
	if len(got) != n {
		t.Fatalf("GetMany returned %d values, want %d", len(got), n)
	}
	for i, k := range keys {
		if got[k] != i {
			t.Fatalf("%s = %d, want %d", k, got[k], i)
		}
	}
	var total int64
	for i := range after {
		d := after[i] - before[i]
		total += d
		if d == 0 {
			t.Errorf("master %s served no MGET", e.cl.Nodes[i].Addr())
		}
	}
	if want := mgetsWanted(kp, append(keys, "c:none")); total != want {
		t.Errorf("GetMany sent %d MGETs, want %d (one per slot)", total, want)
	}
	if s := c.Stats().Prefixes["c"]; s.Hits != n || s.Misses != 1 || s.Errors != 0 {
		t.Errorf("stats = %+v, want %d hits, 1 miss", s, n)
	}

	// GetOrLoadMany: cached keys are not loaded, the misses (on every
	// master) are loaded in one call and written back.
	var loadKeys []string
	for i := range 300 {
		loadKeys = append(loadKeys, "x:"+strconv.Itoa(i))
	}
	var calls [][]string
	load := func(_ context.Context, missing []string) (map[string]int, error) {
		calls = append(calls, slices.Clone(missing))
		m := map[string]int{}
		for _, k := range missing {
			i, _ := strconv.Atoi(strings.TrimPrefix(k, "x:"))
			m[k] = 1000 + i
		}
		return m, nil
	}
	res, err := cache.GetOrLoadMany(ctx, c, append([]string{"c:1", "c:2"}, loadKeys...), 0, load)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 302 || res["c:1"] != 1 || res["c:2"] != 2 || res["x:7"] != 1007 {
		t.Errorf("GetOrLoadMany returned %d values (c:1=%d x:7=%d)", len(res), res["c:1"], res["x:7"])
	}
	if len(calls) != 1 || !slices.Equal(calls[0], loadKeys) {
		t.Fatalf("load called %d times, first with %d keys; want once with the %d misses", len(calls), len(calls[0]), len(loadKeys))
	}
	for i, m := range e.keysOn(t, kp+":x:*") {
		if m == 0 {
			t.Errorf("master %s holds none of the written-back keys", e.cl.Nodes[i].Addr())
		}
	}
	calls = nil
	if res, err := cache.GetOrLoadMany(ctx, c, loadKeys, 0, load); err != nil || len(res) != len(loadKeys) || calls != nil {
		t.Errorf("second GetOrLoadMany = %d values, %v, load calls %v; want all cached", len(res), err, calls)
	}
}

// 100,000 keys on the cluster, 5,000 of them in one slot (a hash tag): every
// value comes back, the slot's keys are read in MGETs of 1,000.
func (e *clusterEnv) getMany100k(t *testing.T) {
	ctx := context.Background()
	kp := testPrefix(t)
	c := e.cache(t, kp, cache.Config{})
	const n, tagged = 100_000, 5000
	items := make(map[string]any, n)
	keys := make([]string, n)
	for i := range n {
		keys[i] = "k:" + strconv.Itoa(i)
		if i < tagged {
			keys[i] = "k:{hot}:" + strconv.Itoa(i)
		}
		items[keys[i]] = i
	}
	if err := c.SetMany(ctx, items, time.Minute); err != nil {
		t.Fatal(err)
	}
	before := e.mgets(t)
	got, err := cache.GetMany[int](ctx, c, keys)
	if err != nil {
		t.Fatal(err)
	}
	after := e.mgets(t)
	if len(got) != n {
		t.Fatalf("GetMany returned %d values, want %d", len(got), n)
	}
	for i, k := range keys {
		if got[k] != i {
			t.Fatalf("%s = %d, want %d", k, got[k], i)
		}
	}
	if total, want := sum(after)-sum(before), mgetsWanted(kp, keys); total != want {
		t.Errorf("GetMany of %d keys sent %d MGETs, want %d (one per slot, 1,000 keys each)", n, total, want)
	}
	if s := c.Stats().Prefixes["k"]; s.Hits != n || s.Misses != 0 {
		t.Errorf("stats = %+v, want %d hits", s, n)
	}
}

// Generations judge batch reads as they judge Get: an InvalidatePrefix (here
// or in another process) between two GetManys hides the old values, the
// misses are counted, and GetOrLoadMany reloads and writes back.
func (e *clusterEnv) generations(t *testing.T) {
	ctx := context.Background()
	kp := testPrefix(t)
	c := e.cache(t, kp, cache.Config{})
	other := e.cache(t, kp, cache.Config{}) // another process
	items := map[string]any{}
	var gKeys []string
	for i := range 60 {
		gKeys = append(gKeys, "g:"+strconv.Itoa(i))
		items[gKeys[i]] = i
	}
	items["h:1"] = -1
	if err := c.SetMany(ctx, items, time.Minute); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(gKeys), "h:1")
	if got, err := cache.GetMany[int](ctx, c, all); err != nil || len(got) != 61 {
		t.Fatalf("GetMany before the invalidation = %d values, %v", len(got), err)
	}
	if err := c.InvalidatePrefix(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	got, err := cache.GetMany[int](ctx, c, all)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "map[h:1:-1]" {
		t.Errorf("GetMany after InvalidatePrefix(g) = %v, want only h:1", got)
	}
	if g := c.Stats().Prefixes["g"]; g.Hits != 60 || g.Misses != 60 {
		t.Errorf("stats of g = %+v, want 60 hits, 60 misses", g)
	}
	loaded, err := cache.GetOrLoadMany(ctx, c, gKeys, time.Minute, func(_ context.Context, missing []string) (map[string]int, error) {
		if len(missing) != 60 {
			t.Errorf("load of %d keys, want the 60 invalidated", len(missing))
		}
		m := map[string]int{}
		for _, k := range missing {
			m[k] = 7
		}
		return m, nil
	})
	if err != nil || len(loaded) != 60 {
		t.Fatalf("GetOrLoadMany = %d values, %v", len(loaded), err)
	}
	if got, err := cache.GetMany[int](ctx, other, gKeys); err != nil || len(got) != 60 || got["g:3"] != 7 {
		t.Errorf("another process's GetMany after the write-back = %d values (g:3=%d), %v", len(got), got["g:3"], err)
	}

	// An invalidation by the other process reaches this one's batch reads.
	if err := other.InvalidatePrefix(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the other process's InvalidatePrefix to hide g", func() bool {
		got, err := cache.GetMany[int](ctx, c, gKeys)
		return err == nil && len(got) == 0
	})
}

// Negative entries on the cluster: keys on every master cached as "no
// value" are hits GetMany leaves out and GetOrLoadMany does not load, for
// NegativeTTL at most; an InvalidatePrefix ends them.
func (e *clusterEnv) negative(t *testing.T) {
	ctx := context.Background()
	kp := testPrefix(t)
	c := e.cache(t, kp, cache.Config{NegativeTTL: 5 * time.Second})
	rc := e.raw(t)
	var gone []string
	for i := range 30 {
		k := "row:" + strconv.Itoa(i)
		gone = append(gone, k)
		getOrLoadMissing(t, c, k, time.Minute, func(context.Context) (string, error) {
			return "", fmt.Errorf("no row %d: %w", i, cache.ErrNoValue)
		})
		if pttl := rc.PTTL(ctx, kp+":"+k).Val(); pttl <= 0 || pttl > 5*time.Second {
			t.Errorf("PTTL of negative %s = %v, want at most NegativeTTL (5s)", k, pttl)
		}
	}
	for i, m := range e.keysOn(t, kp+":row:*") {
		if m == 0 {
			t.Errorf("master %s holds no negative entry", e.cl.Nodes[i].Addr())
		}
	}
	if err := c.Set(ctx, "row:here", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	keys := append(slices.Clone(gone), "row:here")
	before := c.Stats().Prefixes["row"]
	got, err := cache.GetMany[string](ctx, c, keys)
	if err != nil || fmt.Sprint(got) != "map[row:here:v]" {
		t.Fatalf("GetMany = %v, %v; want only row:here", got, err)
	}
	if s := c.Stats().Prefixes["row"]; s.Hits-before.Hits != 31 || s.Misses != before.Misses {
		t.Errorf("GetMany counted %d hits, %d misses; want 31 hits (negative entries are hits), no miss",
			s.Hits-before.Hits, s.Misses-before.Misses)
	}
	got, err = cache.GetOrLoadMany(ctx, c, keys, time.Minute, func(_ context.Context, missing []string) (map[string]string, error) {
		t.Errorf("load called for %v: every key is cached", missing)
		return nil, nil
	})
	if err != nil || len(got) != 1 {
		t.Errorf("GetOrLoadMany = %v, %v", got, err)
	}
	// Another process reading through GetOrLoad sees the same "no value".
	other := e.cache(t, kp, cache.Config{})
	getOrLoadMissing(t, other, "row:3", time.Minute, func(context.Context) (string, error) {
		t.Error("another process loaded a row cached as missing")
		return "", nil
	})

	if err := c.InvalidatePrefix(ctx, "row"); err != nil {
		t.Fatal(err)
	}
	var loaded []string
	got, err = cache.GetOrLoadMany(ctx, c, keys, time.Minute, func(_ context.Context, missing []string) (map[string]string, error) {
		loaded = missing
		return map[string]string{"row:0": "now here"}, nil
	})
	if err != nil || len(loaded) != 31 || got["row:0"] != "now here" {
		t.Errorf("GetOrLoadMany after InvalidatePrefix = %v, %v, loaded %d keys; want all 31 loaded", got, err, len(loaded))
	}
}

// Compression on the cluster: Set, SetMany and GetOrLoadMany's write-back
// store flagged (compressed) entries on every master, and a cache without
// CompressAbove reads them with Get, GetMany and GetOrLoadMany.
func (e *clusterEnv) compression(t *testing.T) {
	ctx := context.Background()
	kp := testPrefix(t)
	w := e.cache(t, kp, cache.Config{CompressAbove: 256})
	r := e.cache(t, kp, cache.Config{})
	rc := e.raw(t)
	v := compressible(8 << 10)
	isCompressed := func(key string) bool {
		t.Helper()
		b, err := rc.Get(ctx, kp+":"+key).Bytes()
		if err != nil {
			t.Fatalf("raw GET %s: %v", key, err)
		}
		return len(b) > 1 && b[1]&keyspace.FlagCompressed != 0 && len(b) < len(v)
	}

	if err := w.Set(ctx, "z:single", v, time.Minute); err != nil {
		t.Fatal(err)
	}
	items := map[string]any{"z:small": "tiny"}
	var many []string
	for i := range 30 {
		k := "z:" + strconv.Itoa(i)
		many = append(many, k)
		items[k] = v
	}
	if err := w.SetMany(ctx, items, time.Minute); err != nil {
		t.Fatal(err)
	}
	for i, m := range e.keysOn(t, kp+":z:*") {
		if m == 0 {
			t.Errorf("master %s holds none of the entries", e.cl.Nodes[i].Addr())
		}
	}
	for _, k := range append([]string{"z:single"}, many...) {
		if !isCompressed(k) {
			t.Errorf("%s (%d bytes encoded) stored uncompressed with CompressAbove 256", k, len(v)+2)
		}
	}
	if isCompressed("z:small") {
		t.Error("a value under CompressAbove was compressed")
	}

	if got := getString(t, r, "z:single"); got != v {
		t.Errorf("reader without compression: Get returned %d bytes, want %d", len(got), len(v))
	}
	got, err := cache.GetMany[string](ctx, r, append(slices.Clone(many), "z:small"))
	if err != nil || len(got) != 31 || got["z:small"] != "tiny" {
		t.Fatalf("reader without compression: GetMany = %d values, %v", len(got), err)
	}
	for _, k := range many {
		if got[k] != v {
			t.Fatalf("reader without compression: GetMany %s = %d bytes, want %d", k, len(got[k]), len(v))
		}
	}

	var loadKeys []string
	for i := range 30 {
		loadKeys = append(loadKeys, "l:"+strconv.Itoa(i))
	}
	if _, err := cache.GetOrLoadMany(ctx, w, loadKeys, time.Minute, func(_ context.Context, missing []string) (map[string]string, error) {
		m := map[string]string{}
		for _, k := range missing {
			m[k] = v
		}
		return m, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range loadKeys {
		if !isCompressed(k) {
			t.Errorf("written-back %s stored uncompressed", k)
		}
	}
	back, err := cache.GetOrLoadMany(ctx, r, loadKeys, time.Minute, func(_ context.Context, missing []string) (map[string]string, error) {
		return nil, errors.New("the reader loaded: it could not read a compressed write-back")
	})
	if err != nil || len(back) != len(loadKeys) || back["l:0"] != v {
		t.Errorf("reader without compression: GetOrLoadMany = %d values, %v", len(back), err)
	}
	if s := r.Stats(); s.Errors != 0 {
		t.Errorf("reader without compression counted %d errors", s.Errors)
	}
}
