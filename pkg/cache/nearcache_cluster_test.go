package cache_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// The near-cache on a Redis Cluster and under Sentinel: two Caches with
// their own clients stand for two processes; one writes, the other must not
// serve from memory what the first has changed, beyond the lease, through
// failovers and slot migrations.

// nearTestLease is the near-cache lease of these tests: short, so that the
// tier comes back quickly after a topology change.
const nearTestLease = 250 * time.Millisecond

// staleness is what a read may lag behind an acknowledged write of another
// process: the lease, plus room for scheduling on a loaded, race-instrumented
// machine.
const staleness = nearTestLease + 500*time.Millisecond

// versioned runs traffic over keys: one writer (on w) sets each key to
// increasing versions, readers (on each of rs) read them and check that no
// read returns a version older than one acknowledged more than staleness
// before the read began, nor one never written.
type versioned struct {
	t    *testing.T
	keys []string

	wmu     sync.Mutex // held by the writer during a write
	mu      sync.Mutex
	acked   map[string][]ackedWrite // ascending
	written map[string]int          // highest version attempted

	stop, paused              atomic.Bool
	wg                        sync.WaitGroup
	writes, reads, writeFails atomic.Int64
	readFails                 atomic.Int64
	violations                []string
}

type ackedWrite struct {
	at time.Time
	v  int
}

func startVersioned(t *testing.T, keys []string, w *cache.Cache, rs ...*cache.Cache) *versioned {
	x := &versioned{t: t, keys: keys, acked: map[string][]ackedWrite{}, written: map[string]int{}}
	x.wg.Go(func() { x.write(w) })
	for _, r := range rs {
		for range 2 {
			x.wg.Go(func() { x.read(r) })
		}
	}
	t.Cleanup(x.halt)
	return x
}

func (x *versioned) write(c *cache.Cache) {
	for i := 0; !x.stop.Load(); i++ {
		x.writeOne(c, x.keys[i%len(x.keys)])
		// A few writes a millisecond leave the readers time to hit.
		time.Sleep(time.Millisecond)
	}
}

func (x *versioned) writeOne(c *cache.Cache, k string) {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.paused.Load() {
		return
	}
	x.mu.Lock()
	v := x.written[k] + 1
	x.written[k] = v
	x.mu.Unlock()
	if err := c.Set(context.Background(), k, v, time.Hour); err != nil {
		x.writeFails.Add(1)
		return
	}
	now := time.Now()
	x.mu.Lock()
	x.acked[k] = append(x.acked[k], ackedWrite{now, v})
	x.mu.Unlock()
	x.writes.Add(1)
}

func (x *versioned) read(c *cache.Cache) {
	ctx := context.Background()
	for i := 0; !x.stop.Load(); i++ {
		k := x.keys[(i*7)%len(x.keys)]
		start := time.Now()
		var got int
		if _, err := c.Get(ctx, k, &got); err != nil {
			x.readFails.Add(1)
			continue
		}
		x.reads.Add(1)
		x.mu.Lock()
		floor := 0
		for _, a := range x.acked[k] {
			if a.at.After(start.Add(-staleness)) {
				break
			}
			floor = a.v
		}
		if got < floor || got > x.written[k] {
			x.violations = append(x.violations, fmt.Sprintf("%s: read %d at %v, but %d was acknowledged more than %v before (highest written %d)",
				k, got, start.Format("15:04:05.000"), floor, staleness, x.written[k]))
		}
		x.mu.Unlock()
	}
}

func (x *versioned) halt() {
	x.stop.Store(true)
	x.wg.Wait()
}

// pause stops the writes until resume, once the one in flight is done.
func (x *versioned) pause() {
	x.paused.Store(true)
	x.wmu.Lock()
	defer x.wmu.Unlock()
}

func (x *versioned) resume() { x.paused.Store(false) }

// waitWrites waits until n more writes have been acknowledged.
func (x *versioned) waitWrites(n int64) {
	x.t.Helper()
	base := x.writes.Load()
	waitFor(x.t, 20*time.Second, "writes", func() bool { return x.writes.Load() >= base+n })
}

// finish stops the traffic and fails the test on any stale read.
func (x *versioned) finish() {
	x.t.Helper()
	x.halt()
	x.t.Logf("%d writes (%d failed), %d reads (%d failed)", x.writes.Load(), x.writeFails.Load(), x.reads.Load(), x.readFails.Load())
	for i, v := range x.violations {
		if i == 10 {
			x.t.Errorf("... and %d more stale reads", len(x.violations)-10)
			break
		}
		x.t.Error("stale read: " + v)
	}
}

// waitLocalHits waits until c serves at least n more hits from memory.
func waitLocalHits(t *testing.T, c *cache.Cache, n int64, what string) {
	t.Helper()
	base := c.Stats().LocalHits
	waitFor(t, 20*time.Second, what, func() bool { return c.Stats().LocalHits >= base+n })
}

// TestNearCacheCluster runs near-caches against a real 3-master Redis
// Cluster, with a replica of one master for a failover.
func TestNearCacheCluster(t *testing.T) {
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	replica, err := cl.AddReplica(cl.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(kp string) cache.Config {
		return cache.Config{Mode: cache.ModeCluster, Addrs: cl.Addrs(), KeyPrefix: kp,
			NearCache: &cache.NearCacheConfig{Lease: nearTestLease}}
	}
	pair := func(t *testing.T) (a, b *cache.Cache) {
		kp := testPrefix(t)
		a, b = connectTopology(t, cfg(kp)), connectTopology(t, cfg(kp))
		waitNearOn(t, a)
		waitNearOn(t, b)
		// Every node is followed, the replica too.
		if ids := cache.NearTrackerIDs(b); len(ids) != len(cl.Nodes)+len(cl.Replicas) {
			t.Fatalf("tracking connections to %v, want one to each of the %d nodes", ids, len(cl.Nodes)+len(cl.Replicas))
		}
		return a, b
	}
	rc := cl.Client()
	defer rc.Close()

	t.Run("CrossProcess", func(t *testing.T) {
		a, b := pair(t)
		space := keyspace.New(testPrefix(t))
		masters := map[string]bool{}
		var keys []string
		for i := range 30 {
			k := "user:" + strconv.Itoa(i)
			keys = append(keys, k)
			m, err := rc.MasterForKey(context.Background(), space.DataKey(k))
			if err != nil {
				t.Fatal(err)
			}
			masters[m.Options().Addr] = true
		}
		if len(masters) != len(cl.Nodes) {
			t.Fatalf("the keys are on %d masters, want all %d", len(masters), len(cl.Nodes))
		}
		for _, k := range keys {
			mustSet(t, a, k, "v0")
		}
		barrier(t, b)
		for _, k := range keys {
			cacheLocally(t, b, k, "v0")
			mustSet(t, a, k, "v1")
			waitValue(t, b, k, "v1", "v0")
			cacheLocally(t, b, k, "v1")
			if _, err := a.Delete(context.Background(), k); err != nil {
				t.Fatal(err)
			}
			waitValue(t, b, k, "", "v1")
		}
		for _, k := range keys {
			mustSet(t, a, k, "w")
		}
		barrier(t, b)
		for _, k := range keys {
			cacheLocally(t, b, k, "w")
		}
		if _, err := a.Invalidate(context.Background(), "user:*"); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			waitValue(t, b, k, "", "w")
		}
	})

	t.Run("ConfigClient", func(t *testing.T) {
		// A caller's cluster client: the trackers dial its nodes with its
		// options.
		kp := testPrefix(t)
		own := cl.Client()
		defer own.Close()
		a := connectTopology(t, cfg(kp))
		ccfg := cache.Config{Client: own, KeyPrefix: kp, NearCache: &cache.NearCacheConfig{Lease: nearTestLease}}
		b := connectTopology(t, ccfg)
		waitNearOn(t, b)
		for _, k := range spreadKeys(10) {
			mustSet(t, a, k, "v0")
			barrier(t, b)
			cacheLocally(t, b, k, "v0")
			mustSet(t, a, k, "v1")
			waitValue(t, b, k, "v1", "v0")
		}
	})

	t.Run("FailoverDuringTraffic", func(t *testing.T) {
		a, b := pair(t)
		x := startVersioned(t, spreadKeys(40), a, b, a)
		waitLocalHits(t, b, 200, "near hits before the failover")
		ctx := context.Background()
		r := replica.Client()
		defer r.Close()
		flushes := b.NearCacheStats().Flushes
		if err := r.ClusterFailover(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the replica to take over", func() bool {
			role, err := r.Do(ctx, "ROLE").Slice()
			return err == nil && len(role) > 0 && role[0] == "master"
		})
		// The role change is a doubt: the tier is flushed.
		waitFor(t, 20*time.Second, "the tier to flush for the failover", func() bool { return b.NearCacheStats().Flushes > flushes })
		waitLocalHits(t, b, 200, "near hits after the failover")
		x.waitWrites(200)
		x.finish()
		if st := b.NearCacheStats(); !st.Enabled {
			t.Errorf("near-cache after the failover: %+v", st)
		}
	})

	t.Run("SlotMigrationDuringTraffic", func(t *testing.T) {
		a, b := pair(t)
		ctx := context.Background()
		kp := testPrefix(t)
		space := keyspace.New(kp)
		// Keys of one slot (a hash tag), and keys elsewhere.
		var keys []string
		for i := range 20 {
			keys = append(keys, fmt.Sprintf("m:{mig}%d", i))
		}
		x := startVersioned(t, append(keys, spreadKeys(10)...), a, b)
		waitLocalHits(t, b, 200, "near hits before the migration")
		slot, err := rc.ClusterKeySlot(ctx, space.DataKey(keys[0])).Result()
		if err != nil {
			t.Fatal(err)
		}
		src, err := rc.MasterForKey(ctx, space.DataKey(keys[0]))
		if err != nil {
			t.Fatal(err)
		}
		var dst *redis.Client
		for _, s := range append(cl.Nodes, cl.Replicas...) {
			c := s.Client()
			defer c.Close()
			role, _ := c.Do(ctx, "ROLE").Slice()
			if s.Addr() != src.Options().Addr && len(role) > 0 && role[0] == "master" && dst == nil {
				dst = c
			}
		}
		migrateSlot(t, rc, src, dst, int(slot), func() {
			// Traffic meets the slot half moved.
			waitLocalHits(t, b, 50, "near hits during the migration")
		})
		waitLocalHits(t, b, 200, "near hits after the migration")
		x.waitWrites(200)
		x.finish()
		if n, err := dst.Exists(ctx, space.DataKey(keys[0])).Result(); err != nil || n != 1 {
			t.Errorf("%s not on the target after the migration: %v %v", keys[0], n, err)
		}
	})
}

// spreadKeys are n keys spread over the slots.
func spreadKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "item:" + strconv.Itoa(i)
	}
	return keys
}

// migrateSlot moves slot from src to dst as redis-cli --cluster reshard
// does: IMPORTING on the target, MIGRATING on the source, MIGRATE of its keys
// a few at a time (midway calls midway), then the slot given to the target
// on every master.
func migrateSlot(t *testing.T, rc *redis.ClusterClient, src, dst *redis.Client, slot int, midway func()) {
	t.Helper()
	ctx := context.Background()
	srcID, err := src.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	host, port := "127.0.0.1", dst.Options().Addr[len("127.0.0.1:"):]
	moved := 0
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 3).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("MIGRATE: %v", err)
		}
		moved += len(keys)
		if moved >= 3 && midway != nil {
			midway()
			midway = nil
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	must(rc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err()
	}))
	t.Logf("moved slot %d (%d keys) from %s to %s", slot, moved, src.Options().Addr, dst.Options().Addr)
}

// TestNearCacheClusterIPv6 runs the near-cache on a cluster whose nodes
// announce IPv6 addresses: CLUSTER NODES then names them without brackets
// ("::1:7000@17000"), and the tier must still follow every node.
func TestNearCacheClusterIPv6(t *testing.T) {
	// A machine without IPv6 loopback cannot run this; anything else that
	// keeps the cluster from starting is a failure.
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	l.Close()
	cl, err := redistest.StartCluster(3, "--bind", "127.0.0.1 ::1", "--cluster-announce-ip", "::1")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rc := cl.Client()
	defer rc.Close()
	ctx := context.Background()
	waitFor(t, 20*time.Second, "the nodes to announce ::1", func() bool {
		text, err := cl.Nodes[0].Client().ClusterNodes(ctx).Result()
		return err == nil && strings.Count(text, " ::1:") >= 3
	})
	cfg := cache.Config{Mode: cache.ModeCluster, Addrs: cl.Addrs(), KeyPrefix: testPrefix(t),
		NearCache: &cache.NearCacheConfig{Lease: nearTestLease}}
	a, b := connectTopology(t, cfg), connectTopology(t, cfg)
	waitNearOn(t, b)
	if ids := cache.NearTrackerIDs(b); len(ids) != len(cl.Nodes) {
		t.Fatalf("tracking connections to %v, want one to each of the %d nodes", ids, len(cl.Nodes))
	}
	for _, k := range spreadKeys(10) {
		mustSet(t, a, k, "v0")
		barrier(t, b)
		cacheLocally(t, b, k, "v0")
		mustSet(t, a, k, "v1")
		waitValue(t, b, k, "v1", "v0")
	}
}

// TestNearCacheClusterProbeRefused: an ACL user that may track keys but not
// run CLUSTER NODES (the probe that renews every node's lease) could never
// be served from memory: the tier turns itself off for good, as for a
// refused CLIENT TRACKING, instead of redialing forever.
func TestNearCacheClusterProbeRefused(t *testing.T) {
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	kp := testPrefix(t)
	u := redistest.CacheUser("near-noprobe", "pw", kp)
	u.Rules = append(u.Rules, "+hello", "+client|tracking", "-cluster|nodes")
	if err := cl.SetUser(u); err != nil {
		t.Fatal(err)
	}
	c := connectTopology(t, cache.Config{Mode: cache.ModeCluster, Addrs: cl.Addrs(), KeyPrefix: kp,
		Username: u.Name, Password: u.Password, NearCache: &cache.NearCacheConfig{Lease: nearTestLease}})
	waitFor(t, 10*time.Second, "the tier to disable itself", func() bool { return c.NearCacheStats().Disabled != "" })
	if st := c.NearCacheStats(); st.State != cache.NearCacheDisabled || !strings.Contains(st.Disabled, "NOPERM") {
		t.Errorf("stats %+v; want disabled with the server's NOPERM", st)
	}
	mustSet(t, c, "user:1", "v")
	if got := getString(t, c, "user:1"); got != "v" {
		t.Fatalf("Get = %q", got)
	}
}
