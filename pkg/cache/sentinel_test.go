package cache_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestSentinel runs the cache against a real Sentinel deployment (a master,
// a replica, three sentinels), started once for its subtests. The failover
// subtest runs last: it leaves the replica as the master.
func TestSentinel(t *testing.T) {
	start := time.Now()
	d, err := redistest.StartSentinel()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("sentinel deployment up in %v", time.Since(start))
	sentinelCfg := func(kp string) cache.Config {
		return cache.Config{Mode: cache.ModeSentinel, Addrs: d.Addrs(), MasterName: d.MasterName, KeyPrefix: kp, DefaultTTL: time.Minute}
	}

	t.Run("API", func(t *testing.T) {
		kp := testPrefix(t)
		exerciseAPI(t, connectTopology(t, sentinelCfg(kp)), newTopoOperator(t, d.Client(), kp))
	})

	t.Run("ACL", func(t *testing.T) {
		kp := testPrefix(t)
		u := redistest.CacheUser("app", "app-password", kp)
		if err := d.SetUser(u); err != nil {
			t.Fatal(err)
		}
		cfg := sentinelCfg(kp)
		cfg.Username, cfg.Password = u.Name, u.Password
		c := connectTopology(t, cfg)
		exerciseAPI(t, c, newTopoOperator(t, d.Client(), kp))
		c.Close() // its last stats flush and disconnect are checked too
		noACLDenials(t, u.Name, d.Data...)
	})

	t.Run("FailoverDuringTraffic", func(t *testing.T) { failoverDuringTraffic(t, d, sentinelCfg(testPrefix(t))) })
}

// failoverDuringTraffic kills the master while goroutines call GetOrLoad in
// a loop. The cache must fail open while the sentinels elect the replica
// (every call returns the loader's value, none waits much past
// SocketTimeout), then use Redis again on the new master, and keep
// following the policy there.
func failoverDuringTraffic(t *testing.T, d *redistest.Sentinel, cfg cache.Config) {
	const (
		timeout = 500 * time.Millisecond
		workers = 4
		keys    = 50
	)
	cfg.SocketTimeout = timeout
	c := connectTopology(t, cfg)
	op := newTopoOperator(t, d.Client(), cfg.KeyPrefix)

	var (
		calls, loads, wrong, failed atomic.Int64
		slowest                     atomic.Int64 // nanoseconds
		stop                        atomic.Bool
		wg                          sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for i := w; !stop.Load(); i++ {
				key := "item:" + strconv.Itoa(i%keys)
				start := time.Now()
				v, err := cache.GetOrLoad(ctx, c, key, 0, func(context.Context) (string, error) {
					loads.Add(1)
					return "value of " + key, nil
				})
				elapsed := time.Since(start)
				calls.Add(1)
				switch {
				case err != nil:
					failed.Add(1)
				case v != "value of "+key:
					wrong.Add(1)
				}
				for {
					old := slowest.Load()
					if int64(elapsed) <= old || slowest.CompareAndSwap(old, int64(elapsed)) {
						break
					}
				}
			}
		})
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	hits := func() int64 { return c.Stats().Prefixes["item"].Hits }
	errs := func() int64 { return c.Stats().Prefixes["item"].Errors }

	waitFor(t, 10*time.Second, "the items to be served from Redis", func() bool { return hits() > 10*keys })
	old, err := d.KillMaster()
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Traffic goes on during the election and meets the dead master.
	waitFor(t, 10*time.Second, "errors from the dead master", func() bool { return errs() > 0 })
	next, err := d.WaitForNewMaster(old, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sentinels promoted %s %v after the kill", next.Addr(), time.Since(killed))

	// Recovered once 200 calls in a row counted no error and hits rise again.
	var (
		lastErrs  = errs()
		callsAt   = calls.Load()
		hitsAt    = hits()
		recovered time.Time
	)
	waitFor(t, 30*time.Second, "the cache to use the new master", func() bool {
		if e := errs(); e != lastErrs {
			lastErrs, callsAt, hitsAt = e, calls.Load(), hits()
			return false
		}
		if calls.Load()-callsAt < 200 || hits() <= hitsAt {
			return false
		}
		recovered = time.Now()
		return true
	})
	t.Logf("serving from Redis again %v after the kill; %d calls, %d loads, %d errors counted, slowest call %v",
		recovered.Sub(killed), calls.Load(), loads.Load(), errs(), time.Duration(slowest.Load()))

	// The entries now live on the new master.
	nc := next.Client()
	defer nc.Close()
	if n := nc.Exists(context.Background(), keyspace.New(cfg.KeyPrefix).DataKey("item:0")).Val(); n != 1 {
		t.Error("item:0 is not stored on the new master")
	}
	// The events subscription moved to the new master too.
	op.waitSubscribed(1)
	_ = c.Set(context.Background(), "item:probe", 1, 0)
	op.publish(keyspace.Event{Type: keyspace.EventInvalidated, Prefix: "item", Generation: 1})
	waitFor(t, 5*time.Second, "the invalidation published on the new master", func() bool { return !hit(c, "item:probe") })

	stop.Store(true)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d GetOrLoad calls returned an error; fail open means none", n)
	}
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d GetOrLoad calls returned a wrong value", n)
	}
	// SocketTimeout bounds the Redis part of a call; the slack covers the
	// loader and scheduling on a loaded, race-instrumented test machine.
	if s, limit := time.Duration(slowest.Load()), timeout+500*time.Millisecond; s > limit {
		t.Errorf("slowest GetOrLoad took %v, want at most SocketTimeout %v (+ slack)", s, timeout)
	}
}
