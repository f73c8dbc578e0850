package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/util/wait"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// TestTokenEditHidesOldValuesBeforeTheScanEnds patches the token with kubectl
// while a rate-limited run has 200k keys to delete, and checks that a reader
// stops getting old values at once, while those values are still in Redis.
func TestTokenEditHidesOldValuesBeforeTheScanEnds(t *testing.T) {
	dumpLogsOnFailure(t)
	ns := namespace(t)
	const (
		kp   = "e2e-inv"
		db   = 1 // its own database: the SCAN's end is seen with DBSIZE
		bulk = 200_000
		rate = 50_000 // keys per second: the SCAN takes about 4s
	)
	applySample(t, ns, kp, db, func(spec map[string]any) {
		spec["invalidation"].(map[string]any)["maxKeysPerSecond"] = rate
	})
	writer := newCache(t, kp, db, func(c *cache.Config) { c.StatsFlushInterval = -1 })
	reader := newCache(t, kp, db, func(c *cache.Config) { c.StatsFlushInterval = -1 })

	r := invalidate(t, ns, kp, db, writer, reader, bulk, "v2")
	t.Logf("%d keys at %d keys/s: kubectl patch -> run start (generation bump) %v; run start -> reader miss %v; kubectl patch -> reader miss %v; SCAN %v (controller: %q); Running seen in status: %v",
		bulk, rate, r.editToBump, r.bumpToMiss, r.editToMiss, r.scan, r.message, r.sawRunning)

	if r.existingAtMiss == 0 || r.remainingAtMiss == 0 {
		t.Errorf("when the reader first missed, %d of %d sentinels and %d data keys were still in Redis; want some (the SCAN had barely begun)",
			r.existingAtMiss, sentinels, r.remainingAtMiss)
	}
	if r.foundAtMiss != 0 {
		t.Errorf("after the first miss, %d sentinels still in Redis were served; want none (their generation is old)", r.foundAtMiss)
	}
	if r.bumpToMiss >= r.scan {
		t.Errorf("the reader missed %v after the run started, the SCAN took %v: old values were visible until they were deleted", r.bumpToMiss, r.scan)
	}
	// The target: readers stop seeing old values within 100 ms of the
	// run's start.
	if r.bumpToMiss > 100*time.Millisecond {
		t.Errorf("reader saw the invalidation %v after the run started, want < 100ms", r.bumpToMiss)
	}
	// The limiter starts empty but for one tenth of a second's burst.
	if least := time.Duration(float64(bulk-rate/10)/rate*float64(time.Second)) - 500*time.Millisecond; r.scan < least {
		t.Errorf("SCAN of %d keys at %d/s took %v, want >= %v: is maxKeysPerSecond ignored?", bulk, rate, r.scan, least)
	}
	if want := int64(bulk + sentinels); r.keysDeleted != want {
		t.Errorf("status.lastInvalidation.keysDeleted = %d, want %d", r.keysDeleted, want)
	}
	if !r.sawRunning {
		t.Errorf("kubectl never showed phase Running during a %v run (RunSlice 1s): checkpoints are not written", r.scan)
	}

	// New entries carry the new generation and are served again.
	ctx := context.Background()
	if err := writer.Set(ctx, "users:sentinel:0", "new", 0); err != nil {
		t.Fatal(err)
	}
	var got string
	if found, err := reader.Get(ctx, "users:sentinel:0", &got); err != nil || !found || got != "new" {
		t.Errorf("reader Get after a fresh write: %q, %v, %v; want \"new\", true", got, found, err)
	}
}

// sentinels is how many keys the reader checks: values written through
// pkg/cache (so they carry a generation), among the bulk keys.
const sentinels = 100

// invalidation is what invalidate measured.
type invalidation struct {
	editToBump time.Duration // kubectl patch starts -> the controller bumps the generation
	bumpToMiss time.Duration // the bump -> the reader's first miss
	editToMiss time.Duration // kubectl patch starts -> the reader's first miss
	scan       time.Duration // the bump -> the last data key is gone
	kubectlRun time.Duration // how long the kubectl patch process took

	existingAtMiss  int   // sentinels still in Redis at the first miss
	foundAtMiss     int   // of those, how many the reader still served
	remainingAtMiss int64 // data keys still in Redis at the first miss

	keysDeleted int64  // status.lastInvalidation.keysDeleted
	message     string // status.lastInvalidation.message
	sawRunning  bool   // kubectl showed phase Running during the run
}

// invalidate fills the users prefix with bulk keys plus the sentinels, checks
// that reader serves the sentinels, sets spec.invalidation.token to token with
// kubectl and times what follows. The database must hold only this policy's
// keys: DBSIZE tells when the SCAN has deleted them all.
func invalidate(t *testing.T, ns, kp string, db int, writer, reader *cache.Cache, bulk int, token string) invalidation {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	rdb := rawRedis(t, db)
	space := keyspace.New(kp).InDB(db)

	sentinelKeys := make([]string, sentinels)
	for i := range sentinelKeys {
		sentinelKeys[i] = fmt.Sprintf("users:sentinel:%d", i)
		if err := writer.Set(ctx, sentinelKeys[i], "old", 0); err != nil {
			t.Fatal(err)
		}
	}
	fillStart := time.Now()
	fillRaw(t, rdb, space.DataKey("users:bulk:%d"), bulk)
	t.Logf("wrote %d keys in %v", bulk, time.Since(fillStart).Round(time.Millisecond))
	size, err := rdb.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	control := size - int64(bulk+sentinels) // the policy hash and the like
	for _, k := range sentinelKeys {
		if found, err := reader.Get(ctx, k, nil); err != nil || !found {
			t.Fatalf("before the edit, reader Get(%q) = %v, %v; want a hit", k, found, err)
		}
	}
	genBefore := generation(t, ns, "users")

	// The run's start, to the millisecond: the generation bump it publishes.
	// (status.lastInvalidation.startedAt has a resolution of one second.)
	ps := rdb.Subscribe(ctx, space.EventsChannel())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	bumped := make(chan time.Time, 1)
	go func() {
		for msg := range ps.Channel() {
			ev, err := keyspace.ParseEvent(msg.Payload)
			if err == nil && ev.Type == keyspace.EventInvalidated && ev.Prefix == "users" && ev.Generation > genBefore {
				bumped <- time.Now()
				return
			}
		}
	}()

	// The SCAN's end: no data key left.
	scanned := make(chan time.Time, 1)
	wg.Go(func() {
		_ = wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			if n, err := rdb.DBSize(ctx).Result(); err == nil && n <= control {
				scanned <- time.Now()
				return true, nil
			}
			return false, nil
		})
	})

	// The reader, as a request loop would: the first miss is checked at once,
	// while the SCAN is still deleting.
	type missAt struct {
		at              time.Time
		existing, found int
		remaining       int64
		err             error
	}
	missed := make(chan missAt, 1)
	wg.Go(func() {
		_ = wait.PollUntilContextCancel(ctx, time.Millisecond, true, func(ctx context.Context) (bool, error) {
			found, err := reader.Get(ctx, sentinelKeys[0], nil)
			if err != nil || found {
				return false, nil
			}
			m := missAt{at: time.Now()}
			n, err := rdb.DBSize(ctx).Result()
			m.remaining, m.err = n-control, err
			for _, k := range sentinelKeys {
				exists, err := rdb.Exists(ctx, space.DataKey(k)).Result()
				if err != nil {
					m.err = err
				}
				if exists == 1 {
					m.existing++
					if found, _ := reader.Get(ctx, k, nil); found {
						m.found++
					}
				}
			}
			missed <- m
			return true, nil
		})
	})

	editStart := time.Now()
	kubectl(t, "patch", "cachepolicy", "demo", "-n", ns, "--type", "merge",
		"-p", fmt.Sprintf(`{"spec":{"invalidation":{"token":%q}}}`, token))
	r := invalidation{kubectlRun: time.Since(editStart)}

	// Follow the run with kubectl, as a user would, until it completes.
	var bumpAt, scanAt time.Time
	var miss missAt
	var phase string
	deadline := time.Now().Add(3*time.Minute + time.Duration(bulk/20_000)*time.Second)
	for bumpAt.IsZero() || scanAt.IsZero() || miss.at.IsZero() || phase != "Complete/"+token {
		if time.Now().After(deadline) {
			t.Fatalf("run did not finish: bump at %v, reader miss at %v, SCAN end at %v, phase %q", bumpAt, miss.at, scanAt, phase)
		}
		select {
		case bumpAt = <-bumped:
		case scanAt = <-scanned:
		case miss = <-missed:
			if miss.err != nil {
				t.Fatal(miss.err)
			}
		case <-time.After(200 * time.Millisecond):
			phase = jsonpath(t, ns, "{.status.lastInvalidation.phase}/{.status.lastInvalidation.token}")
			r.sawRunning = r.sawRunning || phase == "Running/"+token
		}
	}
	run := policy(t, ns).Status.LastInvalidation
	r.editToBump = bumpAt.Sub(editStart)
	r.bumpToMiss = miss.at.Sub(bumpAt)
	r.editToMiss = miss.at.Sub(editStart)
	r.scan = scanAt.Sub(bumpAt)
	r.existingAtMiss, r.foundAtMiss, r.remainingAtMiss = miss.existing, miss.found, miss.remaining
	r.keysDeleted, r.message = run.KeysDeleted, run.Message
	if !strings.HasPrefix(r.message, "deleted") {
		t.Errorf("status.lastInvalidation.message = %q", r.message)
	}
	return r
}

// fillRaw writes n plain keys fmt.Sprintf(format, i) in pipelined batches.
func fillRaw(t *testing.T, rdb *redis.Client, format string, n int) {
	t.Helper()
	ctx := context.Background()
	const batch = 10_000
	for i := 0; i < n; i += batch {
		pipe := rdb.Pipeline()
		for j := i; j < min(i+batch, n); j++ {
			pipe.Set(ctx, fmt.Sprintf(format, j), "x", time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// generation reads a prefix's generation from status.
func generation(t *testing.T, ns, prefix string) int64 {
	t.Helper()
	return generationIn(policy(t, ns), prefix)
}

// generationIn returns a prefix's generation in p's status; -1 if absent.
func generationIn(p *cachev1alpha1.CachePolicy, prefix string) int64 {
	for _, ps := range p.Status.Prefixes {
		if ps.Name == prefix {
			return ps.Generation
		}
	}
	return -1
}
