package consistency_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Fault kinds of the cluster scenario.
const (
	// faultClusterFailover runs CLUSTER FAILOVER on a replica: it takes
	// over its master's slots, the master becomes its replica.
	faultClusterFailover = "cluster-failover"
	// faultMigrateSlot moves the slot of a key every process reads to
	// another master (IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE).
	faultMigrateSlot = "migrate-slot"
)

// TestConsistencyCluster runs the checker against a real 3-master Redis
// Cluster with a replica, every cache process (two in this binary, one
// re-executed, a plain one without a near-cache, and a near-cache reader) on it: a CLUSTER
// FAILOVER and the migration of a slot that holds cached keys happen while
// they run, and no read may be staler than the near-cache bound.
func TestConsistencyCluster(t *testing.T) {
	seed := seed(t)
	ctx := context.Background()
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	replica, err := cl.AddReplica(cl.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	db, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// No Invalidate nor InvalidateOnWrite: a whole prefix's invalidation
	// makes every entry of the prefix a miss everywhere, through the
	// generations, and at the rate the mix would send them (several a
	// second) would hide a tracking connection that misses writes. The
	// pkg/cache tests cover Invalidate on a cluster.
	worker := procSpec{Goroutines: 2, Mix: mix{Get: 30, GetOrLoad: 30, Set: 20, Delete: 20},
		LoadDelayMax: 5 * time.Millisecond, SocketTimeout: time.Second, Think: time.Millisecond}
	near := worker
	near.Near = true
	// A reader that never writes keeps what it holds in memory until an
	// invalidation reaches it: the process a missed invalidation shows in.
	reader := procSpec{Near: true, Goroutines: 8, Mix: readOnlyMix, Think: 2 * time.Millisecond, PinKeys: true}
	specs := append(procs(2, near, true), worker, reader)
	const name = "cluster"
	rec := &recorder{}
	bounds := map[int]time.Duration{}
	var running []process
	defer func() {
		for _, p := range running {
			_ = p.stop()
		}
	}()
	for i, ps := range specs {
		cfg := ps.worker(i, seed, name, db.Addr(), eightKeys)
		cfg.Mode, cfg.Addrs = cache.ModeCluster, cl.Addrs()
		if ps.Near {
			bounds[i] = *nearBound
		}
		running = append(running, ps.start(ctx, t, cfg, rec))
	}
	rc := cl.Client()
	defer rc.Close()

	began := time.Now()
	for _, p := range running {
		p.start()
	}
	waitOps := func(n int64) {
		deadline := time.Now().Add(time.Minute)
		for rec.ops.Load() < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	fault := func(kind string, fn func() error) {
		e := Event{Proc: -1, Op: opFault, Fault: kind, Start: mono()}
		err := fn()
		e.End, e.Err = mono(), errString(err)
		rec.add(e)
		if err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	waitOps(2000)
	fault(faultClusterFailover, func() error { return clusterFailover(ctx, replica) })
	waitOps(rec.ops.Load() + 2000)
	fault(faultMigrateSlot, func() error {
		return migrateSlotOf(ctx, rc, keyspace.New("cons").DataKey(eightKeys[0]), func() { waitOps(rec.ops.Load() + 50) })
	})
	// Long enough after the faults for an entry that missed an
	// invalidation to outlive the bound.
	migrated := time.Now()
	waitOps(rec.ops.Load() + 2000)
	for time.Since(migrated) < 3*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(began)
	var stopErrs []string
	for _, p := range running {
		if err := p.stop(); err != nil {
			stopErrs = append(stopErrs, err.Error())
		}
	}
	running = nil
	if len(stopErrs) > 0 {
		t.Errorf("processes: %s", strings.Join(stopErrs, "\n"))
	}

	history := rec.history()
	sort.SliceStable(history, func(i, j int) bool { return history[i].Start < history[j].Start })
	vs, st := check(history, checkConfig{Bound: bounds, GenBound: *remoteBound, Grace: time.Second, DeleteDoesNotFence: !*deleteFences})
	res := tally(history, vs, st, elapsed)
	var names []string
	for _, p := range specs {
		names = append(names, p.String())
	}
	t.Logf("\n%s: %d processes [%s]\n%s", name, len(specs), strings.Join(names, ", "), res.table())
	if len(vs) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d consistency violations (seed %d; reproduce: %s)", len(vs), seed, reproduce(t.Name(), seed))
		seen := map[string]bool{}
		for i, c := range categorize(history, vs) {
			if !seen[c] {
				seen[c] = true
				fmt.Fprintf(&b, "\n\n%s (%d), the first:\n  %s\nthe history of %q behind it:\n%s",
					c, res.Violations[c], vs[i], vs[i].Read.Key, explain(history, vs[i], 30))
			}
		}
		t.Error(b.String())
	}
}

// clusterFailover makes replica take over its master and waits until it has.
func clusterFailover(ctx context.Context, replica *redistest.Server) error {
	r := replica.Client()
	defer r.Close()
	if err := r.ClusterFailover(ctx).Err(); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if role, err := r.Do(ctx, "ROLE").Slice(); err == nil && len(role) > 0 && role[0] == "master" {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s did not take over within 20s", replica.Addr())
}

// migrateSlotOf moves the slot of key, with its keys, from its master to
// another one, calling between after each batch of keys moved.
func migrateSlotOf(ctx context.Context, rc *redis.ClusterClient, key string, between func()) error {
	slot, err := rc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return err
	}
	src, err := rc.MasterForKey(ctx, key)
	if err != nil {
		return err
	}
	var (
		mu  sync.Mutex
		dst *redis.Client
	)
	_ = rc.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		if m.Options().Addr != src.Options().Addr {
			dst = m
		}
		return nil
	})
	if dst == nil {
		return fmt.Errorf("no master to move slot %d to", slot)
	}
	id := func(c *redis.Client) (string, error) { return c.Do(ctx, "CLUSTER", "MYID").Text() }
	srcID, err := id(src)
	if err != nil {
		return err
	}
	dstID, err := id(dst)
	if err != nil {
		return err
	}
	if err := dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err(); err != nil {
		return err
	}
	if err := src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err(); err != nil {
		return err
	}
	host, port, _ := strings.Cut(dst.Options().Addr, ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, int(slot), 2).Result()
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil && err != redis.Nil {
			return fmt.Errorf("MIGRATE: %w", err)
		}
		between() // traffic meets the slot half moved
	}
	for _, c := range []*redis.Client{dst, src} {
		if err := c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err(); err != nil {
			return err
		}
	}
	return rc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err()
	})
}
