package cache_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestCluster runs the cache against a real 3-master Redis Cluster, started
// once for its subtests.
func TestCluster(t *testing.T) {
	start := time.Now()
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	t.Logf("cluster up in %v", time.Since(start))
	clusterCfg := func(kp string) cache.Config {
		return cache.Config{Mode: cache.ModeCluster, Addrs: cl.Addrs(), KeyPrefix: kp, DefaultTTL: time.Minute}
	}

	t.Run("API", func(t *testing.T) {
		kp := testPrefix(t)
		c := connectTopology(t, clusterCfg(kp))
		if _, ok := c.Client().(*redis.ClusterClient); !ok {
			t.Fatalf("Client() is a %T, want *redis.ClusterClient", c.Client())
		}
		exerciseAPI(t, c, newTopoOperator(t, cl.Client(), kp))
	})

	t.Run("Invalidate100k", func(t *testing.T) { invalidateClusterWide(t, cl) })

	t.Run("ACL", func(t *testing.T) {
		kp := testPrefix(t)
		u := redistest.CacheUser("app", "app-password", kp)
		if err := cl.SetUser(u); err != nil {
			t.Fatal(err)
		}
		cfg := clusterCfg(kp)
		cfg.Username, cfg.Password = u.Name, u.Password
		c := connectTopology(t, cfg)
		exerciseAPI(t, c, newTopoOperator(t, cl.Client(), kp))
		c.Close() // its last stats flush and disconnect are checked too
		noACLDenials(t, u.Name, cl.Nodes...)
	})
}

// invalidateClusterWide fills the cluster with 100,000 keys that match and
// some that do not, spread over every master, and checks that Invalidate
// deletes exactly the matching ones on each master.
func invalidateClusterWide(t *testing.T, cl *redistest.Cluster) {
	const matching = 100_000
	ctx := context.Background()
	kp := testPrefix(t)
	rc := cl.Client()
	defer rc.Close()
	c := connectTopology(t, cache.Config{Mode: cache.ModeCluster, Addrs: cl.Addrs(), KeyPrefix: kp})

	// Keys the pattern must leave alone: other prefixes of the tenant, near
	// misses of the pattern, another tenant's copy, and the control keys.
	others := []string{kp + ":user", kp + ":users:1", kp + "x:user:1", "x" + kp + ":user:1",
		"{cacheplane:" + kp + "}:stats:user", "{cacheplane:" + kp + "}:policy"}
	for i := range 2000 {
		others = append(others, kp+":order:"+strconv.Itoa(i), "other:"+kp+":user:"+strconv.Itoa(i))
	}
	start := time.Now()
	const batch = 10_000
	for from := 0; from < matching; from += batch {
		pipe := rc.Pipeline()
		for i := from; i < from+batch; i++ {
			pipe.Set(ctx, kp+":user:"+strconv.Itoa(i), "v", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pipe := rc.Pipeline()
	for _, k := range others {
		pipe.Set(ctx, k, "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d keys in %v", matching+len(others), time.Since(start))

	pattern := kp + ":user:*" // kp has no glob characters (testPrefix)
	before := make([]nodeCount, len(cl.Nodes))
	for i, node := range cl.Nodes {
		before[i] = countKeys(t, node, pattern)
		// The slots are spread, so every master must hold a fair share.
		if before[i].matching < matching/5 {
			t.Errorf("master %s holds only %d of the %d matching keys", node.Addr(), before[i].matching, matching)
		}
	}

	start = time.Now()
	n, err := c.Invalidate(ctx, "user:*")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Invalidate deleted %d keys in %v", n, time.Since(start))
	if n != matching {
		t.Errorf("Invalidate reported %d deleted keys, want %d", n, matching)
	}
	for i, node := range cl.Nodes {
		after := countKeys(t, node, pattern)
		if after.matching != 0 {
			t.Errorf("master %s: %d matching keys left", node.Addr(), after.matching)
		}
		if want := before[i].total - before[i].matching; after.total != want {
			t.Errorf("master %s holds %d keys, want the %d that did not match", node.Addr(), after.total, want)
		}
	}
	for _, k := range others {
		if rc.Exists(ctx, k).Val() != 1 {
			t.Errorf("%q was deleted", k)
		}
	}
}

type nodeCount struct{ matching, total int64 }

// countKeys counts one master's keys, and those matching pattern (by its own
// SCAN: a cluster client's SCAN would visit a single node).
func countKeys(t *testing.T, node *redistest.Server, pattern string) nodeCount {
	t.Helper()
	ctx := context.Background()
	nc := node.Client()
	defer nc.Close()
	var n nodeCount
	var err error
	if n.total, err = nc.DBSize(ctx).Result(); err != nil {
		t.Fatal(err)
	}
	iter := nc.Scan(ctx, 0, pattern, 5000).Iterator()
	for iter.Next(ctx) {
		n.matching++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
