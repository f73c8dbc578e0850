package purge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// clu is a 3-master cluster shared by the cluster tests (each uses its own
// key prefix), started by the first of them and stopped by TestMain.
var (
	clu     *redistest.Cluster
	cluOnce sync.Once
	cluErr  error
)

func cluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	cluOnce.Do(func() { clu, cluErr = redistest.StartCluster(3) })
	if cluErr != nil {
		t.Fatal(cluErr)
	}
	cc := clu.Client()
	t.Cleanup(func() { cc.Close() })
	return cc
}

// fillCluster writes n keys through the cluster client, so they spread over
// every master by slot.
func fillCluster(t *testing.T, cc *redis.ClusterClient, format string, n int) {
	t.Helper()
	if err := redistest.Fill(context.Background(), cc, format, n); err != nil {
		t.Fatal(err)
	}
}

// perMaster counts the keys matching pattern on each master, by address.
func perMaster(t *testing.T, pattern string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range clu.Nodes {
		c := n.Client()
		iter := c.Scan(context.Background(), 0, pattern, 5000).Iterator()
		for iter.Next(context.Background()) {
			out[n.Addr()]++
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	return out
}

func sum(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// The masters purge at once: with some hundred pages per master, every
// master has reported progress before the first of them completes (one
// master after another, the first would complete before the others began).
func TestEachPurgesMastersConcurrently(t *testing.T) {
	cc := cluster(t)
	fillCluster(t, cc, "cc1:p:%d", 30000)
	fillCluster(t, cc, "cc1:o:%d", 3000)
	if per := perMaster(t, "cc1:p:*"); len(per) != 3 {
		t.Fatalf("keys not spread over the 3 masters: %v", per)
	}

	var (
		started      = map[string]bool{} // masters that have reported progress
		startedAtEnd = -1                // how many, when the first completed
		done         []string
		deleted      int64
	)
	n, err := purge.Each(context.Background(), cc, "cc1:p:*", nil, purge.Options{Count: 100}, func(pos purge.Position, delta int64) error {
		deleted += delta // Each serializes the calls: no lock needed (-race checks)
		if pos.Done {
			if startedAtEnd < 0 {
				startedAtEnd = len(started)
			}
			done = append(done, pos.Node)
			return nil
		}
		started[pos.Node] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(done)
	if want := clu.Addrs(); !slices.Equal(done, sortedCopy(want)) {
		t.Errorf("masters done: %v, want every master once: %v", done, want)
	}
	if startedAtEnd != 3 {
		t.Errorf("when the first master completed, %d masters had reported progress; want all 3 (concurrent)", startedAtEnd)
	}
	if n != 30000 || deleted != 30000 {
		t.Errorf("Each = %d, reported %d; want 30000", n, deleted)
	}
	if left := sum(perMaster(t, "cc1:p:*")); left != 0 {
		t.Errorf("%d matching keys left", left)
	}
	if left := sum(perMaster(t, "cc1:o:*")); left != 3000 {
		t.Errorf("other keys: %d left, want 3000", left)
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// countingLimiter counts the tokens every master takes from it.
type countingLimiter struct {
	*rate.Limiter
	taken atomic.Int64
	calls atomic.Int64
}

func (l *countingLimiter) WaitN(ctx context.Context, n int) error {
	l.taken.Add(int64(n))
	l.calls.Add(1)
	return l.Limiter.WaitN(ctx, n)
}

// One limiter paces every master: the tokens taken from the one passed in
// add up to every key deleted on the three masters.
func TestEachSharesOneLimiterAcrossMasters(t *testing.T) {
	cc := cluster(t)
	fillCluster(t, cc, "cc2:p:%d", 9000)
	per := perMaster(t, "cc2:p:*")
	if len(per) != 3 {
		t.Fatalf("keys not spread over the 3 masters: %v", per)
	}
	l := &countingLimiter{Limiter: rate.NewLimiter(rate.Inf, 200)}
	n, err := purge.All(context.Background(), cc, "cc2:p:*", purge.Options{Limiter: l, Count: 500})
	if err != nil {
		t.Fatal(err)
	}
	if n != 9000 || l.taken.Load() != 9000 {
		t.Errorf("deleted %d, tokens taken %d; want 9000 each (every master drawing from the one limiter)", n, l.taken.Load())
	}
	// No call asks for more than the burst: every master's pages are
	// chunked by the shared limiter's burst.
	if least := int64(9000 / 200); l.calls.Load() < least {
		t.Errorf("%d WaitN calls, want at least %d", l.calls.Load(), least)
	}
	if left := sum(perMaster(t, "cc2:p:*")); left != 0 {
		t.Errorf("%d matching keys left", left)
	}
}

// MaxKeysPerSecond bounds the cluster's purge as a whole, not each master:
// 600 keys at 300 keys/s from an empty bucket take 2s however many masters
// share them (with a limiter per master, the busiest master's ~200 keys
// would take under a second). Only a lower bound is asserted, which a slow
// machine cannot break.
func TestAllMaxKeysPerSecondBoundsTheWholeCluster(t *testing.T) {
	cc := cluster(t)
	fillCluster(t, cc, "cc3:p:%d", 600)
	per := perMaster(t, "cc3:p:*")
	if len(per) != 3 {
		t.Fatalf("keys not spread over the 3 masters: %v", per)
	}
	start := time.Now()
	n, err := purge.All(context.Background(), cc, "cc3:p:*", purge.Options{MaxKeysPerSecond: 300})
	elapsed := time.Since(start)
	if err != nil || n != 600 {
		t.Fatalf("All = %d, %v; want 600", n, err)
	}
	t.Logf("600 keys over masters %v at 300 keys/s in all: %v", per, elapsed)
	if elapsed < 1500*time.Millisecond {
		t.Errorf("600 keys at 300 keys/s took %v, want >= 2s: the limit is not shared by the masters", elapsed)
	}
}

// A purge cancelled mid-run, again and again, and resumed each time from the
// last position each master reported, deletes exactly the matching keys.
func TestEachResumesFromPerMasterCheckpoints(t *testing.T) {
	cc := cluster(t)
	fillCluster(t, cc, "cc4:p:%d", 30000)
	fillCluster(t, cc, "cc4:o:%d", 3000)
	fillCluster(t, cc, "cc4x:p:%d", 1000)

	var (
		mu        sync.Mutex // start runs on every master's goroutine at once
		saved     = map[string]purge.Position{}
		total     int64
		cancelled int
		mid       int // cancellations while at least two masters were unfinished
	)
	start := func(_ context.Context, node string, _ redis.Cmdable) (uint64, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		p := saved[node]
		return p.Cursor, p.Done, nil
	}
	for attempt := 0; ; attempt++ {
		if attempt > 200 {
			t.Fatal("purge did not finish in 200 resumptions")
		}
		ctx, cancel := context.WithCancel(context.Background())
		reports := 0
		_, err := purge.Each(ctx, cc, "cc4:p:*", start, purge.Options{Count: 200}, func(pos purge.Position, delta int64) error {
			mu.Lock()
			defer mu.Unlock()
			if prev, ok := saved[pos.Node]; ok && prev.Done {
				t.Errorf("master %s reported %+v after it was done", pos.Node, pos)
			}
			saved[pos.Node] = pos
			total += delta
			if reports++; reports == 20 {
				unfinished := 0
				for _, a := range clu.Addrs() {
					if !saved[a].Done {
						unfinished++
					}
				}
				if unfinished >= 2 {
					mid++
				}
				cancel()
			}
			return nil
		})
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		cancelled++
	}
	t.Logf("finished after %d cancellations (%d with several masters mid-run)", cancelled, mid)
	if mid == 0 {
		t.Error("never cancelled while several masters were mid-run")
	}
	if left := sum(perMaster(t, "cc4:p:*")); left != 0 {
		t.Errorf("%d matching keys left", left)
	}
	if left := sum(perMaster(t, "cc4:o:*")); left != 3000 {
		t.Errorf("other prefix: %d left, want 3000", left)
	}
	if left := sum(perMaster(t, "cc4x:p:*")); left != 1000 {
		t.Errorf("other tenant: %d left, want 1000", left)
	}
	// A resumed page may be unlinked (and counted) twice.
	if total < 30000 {
		t.Errorf("reported %d deleted in all, want >= 30000", total)
	}
}

// A master that fails does not stop the others: they finish, and Each
// returns the failure.
func TestEachFailingMasterLetsOthersFinish(t *testing.T) {
	cc := cluster(t)
	fillCluster(t, cc, "cc5:p:%d", 6000)
	bad := clu.Addrs()[1]
	boom := fmt.Errorf("boom")
	_, err := purge.Each(context.Background(), cc, "cc5:p:*", func(_ context.Context, node string, _ redis.Cmdable) (uint64, bool, error) {
		if node == bad {
			return 0, false, boom
		}
		return 0, false, nil
	}, purge.Options{Count: 100}, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the failing master's", err)
	}
	for addr, left := range perMaster(t, "cc5:p:*") {
		if addr != bad && left != 0 {
			t.Errorf("master %s: %d keys left after another master failed", addr, left)
		}
	}
	if perMaster(t, "cc5:p:*")[bad] == 0 {
		t.Errorf("the failing master %s was purged", bad)
	}
}

// A Redis failure outranks the caller's own stop in what Each returns.
func TestEachFailureOutranksStop(t *testing.T) {
	cc := cluster(t)
	fillCluster(t, cc, "cc6:p:%d", 6000)
	bad := clu.Addrs()[0]
	boom, stop := errors.New("boom"), errors.New("stop")
	_, err := purge.Each(context.Background(), cc, "cc6:p:*", func(_ context.Context, node string, _ redis.Cmdable) (uint64, bool, error) {
		if node == bad {
			return 0, false, boom
		}
		return 0, false, nil
	}, purge.Options{Count: 100}, func(purge.Position, int64) error { return stop })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	_, err = purge.Each(context.Background(), cc, "cc6:p:*", nil, purge.Options{Count: 100}, func(purge.Position, int64) error { return stop })
	if err != stop {
		t.Fatalf("err = %v, want %v", err, stop)
	}
}

// A slot migrating while the purge runs: the source's SCAN lists the keys not
// yet moved, the target's those already moved, and the target answers UNLINKs
// of them with MOVED (the slot is still the source's), multi-key UNLINKs of a
// split slot with TRYAGAIN. Each is redone through the cluster client, which
// follows the redirection: every matching key goes, and the purge succeeds.
func TestAllDuringSlotMigration(t *testing.T) {
	cc := cluster(t)
	ctx := context.Background()
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			prefix := fmt.Sprintf("migrate%v", keep)
			const n = 40
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("%s:{slot}:%d", prefix, i) // one slot
				if err := cc.Set(ctx, keys[i], "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			fillCluster(t, cc, "other"+prefix+":%d", 300) // not matched: stays
			slot := purge.Slot(keys[0])
			src, err := cc.MasterForKey(ctx, keys[0])
			if err != nil {
				t.Fatal(err)
			}
			var dst *redis.Client
			for _, node := range clu.Nodes {
				if node.Addr() != src.Options().Addr {
					dst = node.Client()
					t.Cleanup(func() { dst.Close() })
					break
				}
			}
			id := func(c *redis.Client) string {
				v, err := c.Do(ctx, "CLUSTER", "MYID").Text()
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			srcID, dstID := id(src), id(dst)
			do := func(c *redis.Client, args ...any) {
				t.Helper()
				if err := c.Do(ctx, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
					t.Fatalf("%v: %v", args, err)
				}
			}
			do(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID)
			do(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID)
			t.Cleanup(func() {
				// Back to where it was: the slot is empty by now on both.
				_ = dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "STABLE").Err()
				_ = src.Do(ctx, "CLUSTER", "SETSLOT", slot, "STABLE").Err()
			})
			host, port := "127.0.0.1", dst.Options().Addr[len("127.0.0.1:"):]
			args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
			for _, k := range keys[:n/2] {
				args = append(args, k)
			}
			do(src, args...)

			opt := purge.Options{Count: 7} // several pages, so both nodes unlink some
			if keep {
				gen := int64(0)
				opt.Keep = &gen
			}
			deleted, err := purge.All(ctx, cc, prefix+":*", opt)
			if err != nil {
				t.Fatalf("purge during a migration: %v", err)
			}
			if deleted != n {
				t.Errorf("deleted %d, want %d", deleted, n)
			}
			for _, c := range []*redis.Client{src, dst} {
				if left, _, err := c.Scan(ctx, 0, prefix+":*", 1000).Result(); err != nil || len(left) != 0 {
					t.Errorf("%s still holds %v (%v)", c.Options().Addr, left, err)
				}
			}
			left := 0
			for _, m := range perMaster(t, "other"+prefix+":*") {
				left += m
			}
			if left != 300 {
				t.Errorf("%d unmatched keys left, want 300", left)
			}
		})
	}
}
