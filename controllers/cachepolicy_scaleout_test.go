package controllers_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// waitMidRun waits until the policy's run is under way, with more than 2,000
// keys deleted, and returns its start time.
func waitMidRun(t *testing.T, p *cachev1alpha1.CachePolicy) metav1.MicroTime {
	t.Helper()
	var started metav1.MicroTime
	eventually(t, 30*time.Second, func() (bool, string) {
		run := get(t, p).Status.LastInvalidation
		if run != nil && run.StartedAt != nil {
			started = *run.StartedAt
		}
		return run != nil && run.Phase == cachev1alpha1.InvalidationRunning && run.KeysDeleted > 2000, fmt.Sprintf("%+v", run)
	})
	return started
}

// fillCluster writes n keys through a cluster client.
func fillCluster(t *testing.T, c *redis.ClusterClient, format string, n int) {
	t.Helper()
	if err := redistest.Fill(context.Background(), c, format, n); err != nil {
		t.Fatal(err)
	}
}

// countPerMaster counts the keys matching pattern on each master.
func countPerMaster(t *testing.T, cl *redistest.Cluster, pattern string) (total int, perNode []int) {
	t.Helper()
	for _, n := range cl.Nodes {
		c := n.Client()
		var count int
		iter := c.Scan(context.Background(), 0, pattern, 5000).Iterator()
		for iter.Next(context.Background()) {
			count++
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		perNode = append(perNode, count)
		total += count
	}
	return total, perNode
}

// A purge of 100,000 keys spread over three masters deletes every matching
// key on every master and nothing else, with a cursor per master.
func TestClusterInvalidation(t *testing.T) {
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cc := cl.Client()
	defer cc.Close()
	fillCluster(t, cc, "clu:users:%d", 100000)
	fillCluster(t, cc, "clu:products:%d", 3000)
	fillCluster(t, cc, "clux:users:%d", 1000)
	if _, per := countPerMaster(t, cl, "clu:users:*"); per[0] == 0 || per[1] == 0 || per[2] == 0 {
		t.Fatalf("keys not spread over the masters: %v", per)
	}

	ns := namespace(t)
	p := newPolicy(ns, "p", "clu")
	p.Spec.Redis.URL = "redis://" + cl.Nodes[0].Addr()
	p.Spec.Redis.Mode = cachev1alpha1.RedisModeCluster
	p.Spec.Redis.Addresses = cl.Addrs()[1:]
	p.Spec.Invalidation.Prefixes = []string{"users"}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "c1" })
	var sawNodes int
	eventually(t, 120*time.Second, func() (bool, string) {
		run := get(t, p).Status.LastInvalidation
		if run != nil && run.Checkpoint != nil {
			sawNodes = max(sawNodes, len(run.Checkpoint.Cursors))
		}
		return run != nil && run.Token == "c1" && run.Phase == cachev1alpha1.InvalidationComplete, fmt.Sprintf("%+v", run)
	})
	run := get(t, p).Status.LastInvalidation
	t.Logf("cluster purge: %s; checkpoint held up to %d node cursors", run.Message, sawNodes)
	if run.KeysDeleted != 100000 {
		t.Errorf("keysDeleted = %d, want 100000", run.KeysDeleted)
	}
	if n, per := countPerMaster(t, cl, "clu:users:*"); n != 0 {
		t.Errorf("%d users keys left per master %v", n, per)
	}
	if n, _ := countPerMaster(t, cl, "clu:products:*"); n != 3000 {
		t.Errorf("products: %d keys left, want 3000", n)
	}
	if n, _ := countPerMaster(t, cl, "clux:users:*"); n != 1000 {
		t.Errorf("other tenant: %d keys left, want 1000", n)
	}
}

// Redis killed in the middle of a run (its AOF keeps what was deleted), then
// restarted: the run fails, is retried with backoff, resumes and completes.
func TestRunSurvivesRedisCrash(t *testing.T) {
	own, err := redistest.Start("--appendonly", "yes", "--appendfsync", "always")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	oc := own.Client()
	defer oc.Close()
	ctx := context.Background()
	if err := redistest.Fill(ctx, oc, "crash:users:%d", 20000); err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	p := newPolicy(ns, "p", "crash")
	p.Spec.Redis.URL = own.URL(0)
	p.Spec.Invalidation.MaxKeysPerSecond = 5000
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "k1" })
	started := waitMidRun(t, p)
	own.Stop()
	eventually(t, 30*time.Second, func() (bool, string) {
		run := get(t, p).Status.LastInvalidation
		return run.Phase == cachev1alpha1.InvalidationFailed && run.Attempts >= 1 && strings.Contains(run.Message, "retrying"), fmt.Sprintf("%+v", run)
	})
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "k1")
	if !run.StartedAt.Equal(&started) {
		t.Errorf("run restarted: startedAt %v, was %v", run.StartedAt, started)
	}
	if n := countKeys(t, oc, "crash:users:*"); n != 0 {
		t.Errorf("%d keys left after the resumed run", n)
	}
	if run.KeysDeleted < 20000 {
		t.Errorf("keysDeleted = %d, want >= 20000", run.KeysDeleted)
	}
	cur := waitReady(t, p)
	if cur.Status.ObservedToken != "k1" {
		t.Errorf("observedToken = %q", cur.Status.ObservedToken)
	}
}

// Two managers with leader election: only the leader works; when it is killed
// mid-run the other takes over the run from its checkpoint and completes it
// once.
func TestLeaderFailoverResumesRun(t *testing.T) {
	stopManager() // the package's unelected manager would compete
	defer func() {
		if err := startManager(); err != nil {
			t.Fatal(err)
		}
	}()
	ctx := context.Background()
	a, err := runManager(managerOptions{leaderElection: true, identity: "replica-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.stop()
	select {
	case <-a.elected:
	case <-time.After(30 * time.Second):
		t.Fatal("replica a never became leader")
	}
	b, err := runManager(managerOptions{leaderElection: true, identity: "replica-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.stop()

	fill(t, "ha:users:%d", 20000)
	ns := namespace(t)
	p := newPolicy(ns, "p", "ha")
	p.Spec.Invalidation.MaxKeysPerSecond = 4000
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "h1" })
	started := waitMidRun(t, p)
	bumped := get(t, p).Status.Prefixes[0].Generation
	select {
	case <-b.elected:
		t.Fatal("replica b leads while a holds the lease")
	default:
	}
	a.stop() // killed: the lease is not released, b waits for it to expire
	killedAt := time.Now()
	select {
	case <-b.elected:
		t.Logf("replica b elected %v after the leader was killed", time.Since(killedAt).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("replica b never took over")
	}
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "h1")
	if !run.StartedAt.Equal(&started) {
		t.Errorf("the new leader restarted the run: startedAt %v, was %v", run.StartedAt, started)
	}
	if n := countKeys(t, rdb, "ha:users:*"); n != 0 {
		t.Errorf("%d keys left", n)
	}
	if run.KeysDeleted < 20000 || run.KeysDeleted > 20000+4000 {
		t.Errorf("keysDeleted = %d, want 20000 (plus at most a slice re-counted)", run.KeysDeleted)
	}
	if g := get(t, p).Status.Prefixes[0].Generation; g != bumped {
		t.Errorf("generation = %d, was %d mid-run: the token ran more than once", g, bumped)
	}
}

// A thousand policies created at once against one Redis all become Ready
// with their stats, on one shared connection pool, within the client's rate
// limits.
func TestThousandPolicies(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 1,000-policy scale test")
	}
	ctx := context.Background()
	ns := namespace(t)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	const n = 1000
	for i := range n {
		p := newPolicy(ns, fmt.Sprintf("p%04d", i), fmt.Sprintf("scale%04d", i))
		p.Spec.StatsInterval = metav1.Duration{Duration: 30 * time.Second}
		if err := k8s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		rdb.HIncrBy(ctx, fmt.Sprintf("{cacheplane:scale%04d}:stats:users", i), "hits", int64(i+1))
	}
	created := time.Since(start)
	eventually(t, 5*time.Minute, func() (bool, string) {
		var list cachev1alpha1.CachePolicyList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		ready := 0
		for i := range list.Items {
			p := &list.Items[i]
			if conditionIs(p, cachev1alpha1.ConditionReady, metav1.ConditionTrue, "") && p.Status.Hits > 0 {
				ready++
			}
		}
		return ready == n, fmt.Sprintf("%d of %d ready with stats", ready, n)
	})
	allReady := time.Since(start)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	clients, err := rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	conns := strings.Count(clients, "\n")
	t.Logf("1000 policies: created in %v, all Ready with stats after %v; heap %d MiB -> %d MiB (test process: API client + manager); %d Redis connections in all",
		created.Round(time.Millisecond), allReady.Round(time.Millisecond), before.HeapAlloc>>20, after.HeapAlloc>>20, conns)
	if conns > 100 {
		t.Errorf("%d Redis connections for policies on one Redis: connections are not shared", conns)
	}
}

// On Sentinel, the controller follows the master through a failover: a run
// started before it completes on the new master.
func TestSentinelFailover(t *testing.T) {
	d, err := redistest.StartSentinel()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	mc := d.Client()
	defer mc.Close()
	if err := redistest.Fill(ctx, mc, "sent:users:%d", 20000); err != nil {
		t.Fatal(err)
	}
	master, err := d.Master()
	if err != nil {
		t.Fatal(err)
	}
	// Let the replica catch up before the failover, so no key is lost with it.
	if err := mc.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}

	ns := namespace(t)
	p := newPolicy(ns, "p", "sent")
	addrs := d.Addrs()
	p.Spec.Redis.URL = "redis://" + addrs[0] + "/0"
	p.Spec.Redis.Mode = cachev1alpha1.RedisModeSentinel
	p.Spec.Redis.Addresses = addrs[1:]
	p.Spec.Redis.MasterName = d.MasterName
	p.Spec.Invalidation.MaxKeysPerSecond = 4000
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "s1" })
	waitMidRun(t, p)
	if _, err := d.KillMaster(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitForNewMaster(master, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "s1")
	nc := d.Client() // follows the sentinels to the new master
	defer nc.Close()
	if n := countKeys(t, nc, "sent:users:*"); n != 0 {
		t.Errorf("%d keys left on the new master", n)
	}
	t.Logf("run across the failover: %s, %d attempts", run.Message, run.Attempts)
	waitReady(t, p)
}
