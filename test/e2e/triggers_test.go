package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// TestWatchedConfigMapChangeRunsOneInvalidation: a change to a watched
// ConfigMap's data, made with kubectl, runs exactly one invalidation of the
// prefixes the watch names; a change to its metadata runs none.
func TestWatchedConfigMapChangeRunsOneInvalidation(t *testing.T) {
	dumpLogsOnFailure(t)
	ns := namespace(t)
	const kp, cm = "e2e-cm", "catalog-version"
	const trigger = "ConfigMap/" + cm
	kubectl(t, "create", "configmap", cm, "-n", ns, "--from-literal=version=1")
	applySample(t, ns, kp, 0, func(spec map[string]any) {
		spec["invalidation"].(map[string]any)["watch"] = []any{
			map[string]any{"kind": "ConfigMap", "name": cm, "prefixes": []any{"products"}},
		}
	})
	eventually(t, 30*time.Second, 100*time.Millisecond, "the ConfigMap's data adopted in status", func() (bool, string) {
		p := policy(t, ns)
		c := meta.FindStatusCondition(p.Status.Conditions, cachev1alpha1.ConditionWatchesResolved)
		return len(p.Status.Watched) == 1 && p.Status.Watched[0].DataHash != "" && c != nil && c.Status == "True",
			fmt.Sprintf("watched %+v, condition %+v", p.Status.Watched, c)
	})
	ctx := context.Background()
	writer := newCache(t, kp, 0, nil)
	reader := newCache(t, kp, 0, nil)
	for _, k := range []string{"users:1", "products:1"} {
		if err := writer.Set(ctx, k, "old", 0); err != nil {
			t.Fatal(err)
		}
	}
	bumps := countBumps(t, kp, 0)

	// Metadata only: nothing to invalidate.
	kubectl(t, "label", "configmap", cm, "-n", ns, "touched=yes")
	reconciled(t, ns)
	if run := policy(t, ns).Status.LastInvalidation; run != nil {
		t.Fatalf("a label change ran an invalidation: %+v", run)
	}

	kubectl(t, "patch", "configmap", cm, "-n", ns, "--type", "merge", "-p", `{"data":{"version":"2"}}`)
	eventually(t, 30*time.Second, 100*time.Millisecond, "the ConfigMap's invalidation to complete", func() (bool, string) {
		run := policy(t, ns).Status.LastInvalidation
		return run != nil && run.Trigger == trigger && run.Phase == cachev1alpha1.InvalidationComplete, fmt.Sprintf("lastInvalidation %+v", run)
	})
	// Anything the change could still set off has happened after this.
	reconciled(t, ns)

	run := policy(t, ns).Status.LastInvalidation
	if run.Trigger != trigger || !slices.Equal(run.Prefixes, []string{"products"}) {
		t.Errorf("last run: trigger %q prefixes %v, want %q [products]", run.Trigger, run.Prefixes, trigger)
	}
	if n := bumps("products"); n != 1 {
		t.Errorf("products generation bumped %d times, want exactly once", n)
	}
	if n := bumps("users"); n != 0 {
		t.Errorf("users generation bumped %d times, want untouched (not in the watch's prefixes)", n)
	}
	eventually(t, 10*time.Second, 200*time.Millisecond, "the InvalidationStarted event", func() (bool, string) {
		n := startedEvents(t, ns, trigger)
		return n >= 1, fmt.Sprintf("%d events", n)
	})
	if n := startedEvents(t, ns, trigger); n != 1 {
		t.Errorf("%d InvalidationStarted events for %s, want 1", n, trigger)
	}
	if found, err := reader.Get(ctx, "products:1", nil); err != nil || found {
		t.Errorf("products:1 after the run: found %v, err %v; want a miss", found, err)
	}
	if found, err := reader.Get(ctx, "users:1", nil); err != nil || !found {
		t.Errorf("users:1 after the run: found %v, err %v; want a hit (users was not invalidated)", found, err)
	}
}

// TestScheduleRunsOncePerTick: with spec.invalidation.schedule "@every 2s",
// every tick runs one invalidation (one generation bump, one Event), and
// removing the schedule with kubectl stops them.
func TestScheduleRunsOncePerTick(t *testing.T) {
	dumpLogsOnFailure(t)
	ns := namespace(t)
	const kp, every = "e2e-sched", 2 * time.Second
	bumps := countBumps(t, kp, 0) // before the policy exists: no tick is missed
	applySample(t, ns, kp, 0, func(spec map[string]any) {
		inv := spec["invalidation"].(map[string]any)
		inv["schedule"] = "@every 2s"
		inv["prefixes"] = []any{"products"}
	})

	// Each tick bumps the generation once; status records it with the tick.
	var ticks []time.Time
	lastGen := int64(-1)
	eventually(t, 30*time.Second, 100*time.Millisecond, "three schedule ticks", func() (bool, string) {
		p := policy(t, ns)
		st := p.Status
		if st.LastScheduleTime == nil || slices.ContainsFunc(ticks, st.LastScheduleTime.Time.Equal) {
			return false, fmt.Sprintf("ticks %v", ticks)
		}
		tick := st.LastScheduleTime.Time
		ticks = append(ticks, tick)
		// Written in the same status update as the tick.
		if g := generationIn(p, "products"); g <= lastGen {
			t.Errorf("after tick %d (%v): products generation %d, want above %d", len(ticks), tick, g, lastGen)
		} else {
			lastGen = g
		}
		if next := st.NextScheduleTime; next == nil || !next.Time.Equal(tick.Add(every)) {
			t.Errorf("tick %v: nextScheduleTime %v, want %v", tick, next, tick.Add(every))
		}
		return len(ticks) == 3, fmt.Sprintf("ticks %v", ticks)
	})
	kubectl(t, "patch", "cachepolicy", "demo", "-n", ns, "--type", "json", "-p", `[{"op":"remove","path":"/spec/invalidation/schedule"}]`)
	reconciled(t, ns)

	p := policy(t, ns)
	if last := p.Status.LastScheduleTime.Time; !slices.ContainsFunc(ticks, last.Equal) {
		ticks = append(ticks, last) // a tick between the last poll and the removal
	}
	for i := 1; i < len(ticks); i++ {
		if d := ticks[i].Sub(ticks[i-1]); d%every != 0 || d <= 0 {
			t.Errorf("ticks %v and %v are %v apart, want a multiple of %v", ticks[i-1], ticks[i], d, every)
		} else if d > every {
			t.Logf("ticks %v apart: the controller was late and folded missed ticks into one run (by design)", d)
		}
	}
	eventually(t, 10*time.Second, 100*time.Millisecond, "one bump per tick on the events channel", func() (bool, string) {
		n := bumps("products")
		return n == len(ticks), fmt.Sprintf("%d bumps for %d ticks", n, len(ticks))
	})
	if n := bumps("users"); n != 0 {
		t.Errorf("users generation bumped %d times, want never (the schedule selects products)", n)
	}
	if p.Status.NextScheduleTime != nil {
		t.Errorf("nextScheduleTime %v after the schedule was removed, want none", p.Status.NextScheduleTime)
	}
	eventually(t, 10*time.Second, 200*time.Millisecond, "one InvalidationStarted event per tick", func() (bool, string) {
		n := startedEvents(t, ns, cachev1alpha1.TriggerSchedule)
		return n == len(ticks), fmt.Sprintf("%d events for %d ticks", n, len(ticks))
	})
	// No run after the schedule's removal, even once the next tick is due.
	due := ticks[len(ticks)-1].Add(every)
	eventually(t, 2*every, 100*time.Millisecond, "the time of the next tick to pass", func() (bool, string) {
		return time.Now().After(due), "due " + due.String()
	})
	reconciled(t, ns)
	if n := bumps("products"); n != len(ticks) {
		t.Errorf("products generation bumped %d times after the schedule was removed, want %d", n, len(ticks))
	}
}

// countBumps follows keyPrefix's events channel in database db and returns
// how many distinct new generations each prefix has been bumped to since.
// Generations are times, not counts, so a test counts bumps this way; a
// Raise republishing a generation already handed out is not a bump.
func countBumps(t *testing.T, keyPrefix string, db int) func(prefix string) int {
	t.Helper()
	ctx := context.Background()
	ps := rawRedis(t, 0).Subscribe(ctx, keyspace.New(keyPrefix).InDB(db).EventsChannel())
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]map[int64]bool{}
	go func() {
		for msg := range ps.Channel() {
			ev, err := keyspace.ParseEvent(msg.Payload)
			if err != nil || ev.Type != keyspace.EventInvalidated {
				continue
			}
			mu.Lock()
			if seen[ev.Prefix] == nil {
				seen[ev.Prefix] = map[int64]bool{}
			}
			seen[ev.Prefix][ev.Generation] = true
			mu.Unlock()
		}
	}()
	return func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[prefix])
	}
}
