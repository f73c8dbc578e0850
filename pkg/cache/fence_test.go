package cache_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Two processes (Cache instances) on one KeyPrefix. A's GetOrLoad misses a
// key that does not exist and its loader reads v1; B then writes v2 to the
// source and deletes the key (nothing to delete); A's write-back must not
// land, or everyone reads v1 until the TTL. The same with a single-key
// Invalidate, and with AutoPipeline (many write-backs at once, so they go
// through the pipeliner).
func TestDeleteFencesOtherProcessWriteBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		pipeline bool
		del      func(ctx context.Context, c *cache.Cache, key string) error
	}{
		{"Delete", false, func(ctx context.Context, c *cache.Cache, key string) error {
			_, err := c.Delete(ctx, key)
			return err
		}},
		{"Invalidate one key", false, func(ctx context.Context, c *cache.Cache, key string) error {
			_, err := c.Invalidate(ctx, key)
			return err
		}},
		{"Delete, AutoPipeline", true, func(ctx context.Context, c *cache.Cache, key string) error {
			_, err := c.Delete(ctx, key)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := cache.Config{KeyPrefix: testPrefix(t), DisableAutoPipeline: !tc.pipeline}
			a, b := newCache(t, cfg), newCache(t, cfg)
			keys := 1
			if tc.pipeline {
				keys = 32
			}
			var read, loads sync.WaitGroup
			release := make(chan struct{})
			read.Add(keys)
			for i := range keys {
				key := "users:" + strconv.Itoa(i)
				loads.Go(func() {
					v, err := cache.GetOrLoad(ctx, a, key, time.Hour, func(context.Context) (string, error) {
						read.Done()
						<-release // B writes and deletes meanwhile
						return "v1", nil
					})
					if err != nil || v != "v1" {
						t.Errorf("GetOrLoad %s = %q, %v", key, v, err)
					}
				})
			}
			read.Wait()
			for i := range keys {
				if err := tc.del(ctx, b, "users:"+strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
			}
			close(release)
			loads.Wait()
			for i := range keys {
				key := "users:" + strconv.Itoa(i)
				for name, c := range map[string]*cache.Cache{"A": a, "B": b} {
					var got string
					if found, err := c.Get(ctx, key, &got); found || err != nil {
						t.Fatalf("%s reads %s = %q (found %v, %v) after B's delete: a load begun before it was stored", name, key, got, found, err)
					}
				}
			}
			// The next load after the delete is stored as usual.
			if _, err := cache.GetOrLoad(ctx, a, "users:0", time.Hour, func(context.Context) (string, error) { return "v2", nil }); err != nil {
				t.Fatal(err)
			}
			var got string
			if found, err := b.Get(ctx, "users:0", &got); !found || err != nil || got != "v2" {
				t.Errorf("after a load following the delete, B reads %q, %v, %v; want v2", got, found, err)
			}
		})
	}
}

// A load that began before another process's Set does not overwrite it: a
// write-back is stored only over what its miss saw.
func TestWriteBackDoesNotOverwriteNewerSet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := cache.Config{KeyPrefix: testPrefix(t)}
	a, b := newCache(t, cfg), newCache(t, cfg)
	v, err := cache.GetOrLoad(ctx, a, "users:1", time.Hour, func(context.Context) (string, error) {
		mustSet(t, b, "users:1", "v2")
		return "v1", nil
	})
	if err != nil || v != "v1" {
		t.Fatalf("GetOrLoad = %q, %v", v, err)
	}
	if got := getString(t, b, "users:1"); got != "v2" {
		t.Errorf("after a write-back racing a Set, the cache holds %q, want the Set's v2", got)
	}
}

// Delete leaves a tombstone: a miss for Get, absent for Exists and TTL, not
// counted by a second Delete, overwritten by the next load.
func TestDeleteTombstone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{TombstoneTTL: 30 * time.Second})
	mustSet(t, c, "users:1", "v1")
	mustSet(t, c, "users:2", "v1")
	if n, err := c.Delete(ctx, "users:1", "users:2", "users:none"); n != 2 || err != nil {
		t.Errorf("Delete of two entries and a missing key = %d, %v; want 2", n, err)
	}
	if n, err := c.Delete(ctx, "users:1"); n != 0 || err != nil {
		t.Errorf("Delete of a deleted key = %d, %v; want 0", n, err)
	}
	errorsBefore := c.Stats().Errors
	if found, err := c.Get(ctx, "users:1", nil); found || err != nil {
		t.Errorf("Get of a deleted key = %v, %v; want a miss", found, err)
	}
	if n := c.Stats().Errors - errorsBefore; n != 0 {
		t.Errorf("a tombstone counted %d errors, want none", n)
	}
	if ok, err := c.Exists(ctx, "users:1"); ok || err != nil {
		t.Errorf("Exists of a deleted key = %v, %v; want false", ok, err)
	}
	if _, err := c.TTL(ctx, "users:1"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("TTL of a deleted key: err = %v, want ErrNotFound", err)
	}
	key := testPrefix(t) + ":users:1"
	if d, err := rawClient(t).PTTL(ctx, key).Result(); err != nil || d <= 0 || d > 30*time.Second {
		t.Errorf("the tombstone's TTL is %v, %v; want (0, TombstoneTTL]", d, err)
	}
	// Invalidate of one key is a Delete, counting what existed.
	mustSet(t, c, "users:3", "v1")
	if n, err := c.Invalidate(ctx, "users:3"); n != 1 || err != nil {
		t.Errorf("Invalidate users:3 = %d, %v; want 1", n, err)
	}
	if n, err := c.Invalidate(ctx, "users:3"); n != 0 || err != nil {
		t.Errorf("Invalidate of a deleted key = %d, %v; want 0", n, err)
	}
	// A load after the delete stores its value over the tombstone.
	if _, err := cache.GetOrLoad(ctx, c, "users:1", time.Minute, func(context.Context) (string, error) { return "v2", nil }); err != nil {
		t.Fatal(err)
	}
	if got := getString(t, c, "users:1"); got != "v2" {
		t.Errorf("after a load, Get = %q, want v2", got)
	}
	if ok, err := c.Exists(ctx, "users:1"); !ok || err != nil {
		t.Errorf("Exists after the load = %v, %v", ok, err)
	}
	for _, bad := range []time.Duration{-time.Second} {
		if _, err := cache.New(cache.Config{TombstoneTTL: bad}); err == nil {
			t.Errorf("New accepted TombstoneTTL %v", bad)
		}
	}
}

// With its events subscription stalled (no FIN, no answer), a process stops
// trusting the generations it knows once the events lease lapses, and reads
// them again: another process's InvalidatePrefix is honoured within the
// lease, not after PolicyRefresh (an hour here) or a dead-connection timeout.
func TestEventsLeaseStalledChannel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := testPrefix(t)
	proxy := startStallProxy(t, srv.Addr())
	const lease = 100 * time.Millisecond
	b, err := cache.New(cache.Config{URL: srv.URL(0), KeyPrefix: prefix, PolicyRefresh: time.Hour, EventsLease: lease, SocketTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cache.SetEventsAddr(b, proxy.Addr())
	if err := b.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a := newCache(t, cache.Config{KeyPrefix: prefix})
	mustSet(t, a, "users:1", "v1")
	if got := getString(t, b, "users:1"); got != "v1" {
		t.Fatalf("Get = %q, want v1", got)
	}

	rc := rawClient(t)
	stale, err := rc.Get(ctx, prefix+":users:1").Bytes()
	if err != nil {
		t.Fatal(err)
	}

	proxy.Stall()
	if err := a.InvalidatePrefix(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	invalidated := time.Now()
	// The invalidated entry is put back after the reclaim deleted it, as a
	// write-back that landed late would: only its generation makes it stale.
	waitFor(t, 10*time.Second, "the reclaim", func() bool { return !cache.Reclaiming(a, "users") })
	if err := rc.Set(ctx, prefix+":users:1", stale, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the stalled process to honour the invalidation", func() bool {
		found, err := b.Get(ctx, "users:1", nil)
		if err != nil {
			t.Fatal(err)
		}
		return !found
	})
	t.Logf("events stalled: another process's invalidation honoured after %v (lease %v)", time.Since(invalidated), lease)
	// Reads go on, each lease costing one read of the generations.
	mustSet(t, b, "users:2", "v1")
	if got := getString(t, b, "users:2"); got != "v1" {
		t.Errorf("Get while stalled = %q, want v1", got)
	}
	proxy.Resume()

	for _, bad := range []time.Duration{-time.Second, time.Millisecond} {
		if _, err := cache.New(cache.Config{EventsLease: bad}); err == nil {
			t.Errorf("New accepted EventsLease %v", bad)
		}
	}
}

// With a healthy events channel the lease is renewed by the answers to its
// PINGs: reads do not each re-read the generations.
func TestEventsLeaseHealthy(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{EventsLease: 100 * time.Millisecond, PolicyRefresh: time.Hour})
	mustSet(t, c, "users:1", "v1")
	reads := &countPolicyReads{key: "{cacheplane:" + testPrefix(t) + "}:policy"}
	c.Client().AddHook(reads)
	n := 0
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); n++ {
		if got := getString(t, c, "users:1"); got != "v1" {
			t.Fatalf("Get = %q", got)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if r := reads.n.Load(); r > int64(n/4) {
		t.Errorf("%d reads of the generations for %d Gets over 10 leases with a healthy events channel; the PINGs do not renew the lease", r, n)
	}
}

// countPolicyReads counts the pipelines that read the policy hash key (and
// with it the generations).
type countPolicyReads struct {
	key string
	n   atomic.Int64
}

func (h *countPolicyReads) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *countPolicyReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *countPolicyReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if args := cmd.Args(); cmd.Name() == "hgetall" && len(args) > 1 && fmt.Sprint(args[1]) == h.key {
				h.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// A Delete's tombstone outlives another invalidation's SCAN of the prefix
// (Invalidate "p:*", the background reclaim after InvalidatePrefix): removed,
// it would let a write-back of a load begun before the Delete land, its
// compare-and-set finding the key missing as its miss did.
func TestInvalidationKeepsTombstones(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	rc := rawClient(t)
	tomb := testPrefix(t) + ":users:1"
	mustSet(t, c, "users:1", "v1")
	mustSet(t, c, "users:2", "v1")
	if _, err := c.Delete(ctx, "users:1"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Invalidate(ctx, "users:*"); n != 1 || err != nil {
		t.Errorf("Invalidate users:* = %d, %v; want 1 (the entry, not the tombstone)", n, err)
	}
	if n, _ := rc.Exists(ctx, tomb).Result(); n != 1 {
		t.Error("Invalidate of the prefix deleted a Delete's tombstone")
	}
	// An entry of a generation above the bump's (as if written after it)
	// stays too; one below goes.
	future := testPrefix(t) + ":users:4"
	if err := rc.Set(ctx, future, keyspace.AppendEntry(nil, 1<<60, []byte(`"v"`)), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, testPrefix(t)+":users:5", keyspace.AppendEntry(nil, 1, []byte(`"v"`)), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Invalidate(ctx, "users:*"); n != 1 || err != nil {
		t.Errorf("Invalidate users:* = %d, %v; want 1 (the old entry only)", n, err)
	}
	if n, _ := rc.Exists(ctx, future).Result(); n != 1 {
		t.Error("Invalidate of the prefix deleted an entry written after its bump")
	}
	mustSet(t, c, "users:2", "v1")
	if err := c.InvalidatePrefix(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reclaim", func() bool {
		n, _ := rc.Exists(ctx, testPrefix(t)+":users:2").Result()
		return n == 0 && !cache.Reclaiming(c, "users")
	})
	if n, _ := rc.Exists(ctx, tomb).Result(); n != 1 {
		t.Error("the reclaim after InvalidatePrefix deleted a Delete's tombstone")
	}
}
