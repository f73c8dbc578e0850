package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestNearCacheSentinel runs near-caches under a real Sentinel deployment
// and fails the master over (SENTINEL FAILOVER: the old master lives on as a
// replica) while one Cache writes and another reads from memory: the tier
// follows the new master, flushing at the switch, and serves no value older
// than the lease.
func TestNearCacheSentinel(t *testing.T) {
	d, err := redistest.StartSentinel()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	kp := testPrefix(t)
	cfg := cache.Config{Mode: cache.ModeSentinel, Addrs: d.Addrs(), MasterName: d.MasterName, KeyPrefix: kp,
		NearCache: &cache.NearCacheConfig{Lease: nearTestLease}}
	a, b := connectTopology(t, cfg), connectTopology(t, cfg)
	waitNearOn(t, a)
	waitNearOn(t, b)
	old, err := d.Master()
	if err != nil {
		t.Fatal(err)
	}
	if ids := cache.NearTrackerIDs(b); len(ids) != 1 || ids[old.Addr()] == 0 {
		t.Fatalf("tracking connections %v, want one to the master %s", ids, old.Addr())
	}

	// A caller's failover client hides which node it talks to: the tier
	// cannot follow it and says so.
	fc := d.Client()
	defer fc.Close()
	ext := connectTopology(t, cache.Config{Client: fc, KeyPrefix: kp, NearCache: &cache.NearCacheConfig{}})
	waitFor(t, 10*time.Second, "the tier to turn itself off", func() bool {
		return ext.NearCacheStats().State == cache.NearCacheDisabled
	})

	// Writes of one process are seen by the other.
	mustSet(t, a, "user:1", "v0")
	barrier(t, b)
	cacheLocally(t, b, "user:1", "v0")
	mustSet(t, a, "user:1", "v1")
	waitValue(t, b, "user:1", "v1", "v0")

	x := startVersioned(t, spreadKeys(20), a, b)
	waitLocalHits(t, b, 200, "near hits before the failover")
	flushes := b.NearCacheStats().Flushes
	// Sentinel promotes the replica while the old master still takes
	// writes, and those are lost (Redis's own window, not the tier's): the
	// writes pause over the switch, once the replica has the earlier ones.
	x.pause()
	oc := old.Client()
	defer oc.Close()
	if err := oc.Do(context.Background(), "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	s := d.Sentinels[0].Client()
	defer s.Close()
	if err := s.Do(context.Background(), "SENTINEL", "FAILOVER", d.MasterName).Err(); err != nil {
		t.Fatal(err)
	}
	next, err := d.WaitForNewMaster(old, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the old master to become a replica", func() bool {
		role, err := oc.Do(context.Background(), "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "slave"
	})
	x.resume()
	waitFor(t, 20*time.Second, "the tracker to follow the new master", func() bool {
		ids := cache.NearTrackerIDs(b)
		return len(ids) == 1 && ids[next.Addr()] != 0 && b.NearCacheStats().Enabled
	})
	if b.NearCacheStats().Flushes <= flushes {
		t.Error("the tier was not flushed at the switch")
	}
	waitLocalHits(t, b, 200, "near hits after the failover")
	x.waitWrites(200)
	x.finish()
}
