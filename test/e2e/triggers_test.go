package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
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
	usersGen, productsGen := generation(t, ns, "users"), generation(t, ns, "products")

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
	if g := generation(t, ns, "products"); g != productsGen+1 {
		t.Errorf("products generation %d -> %d, want exactly one bump", productsGen, g)
	}
	if g := generation(t, ns, "users"); g != usersGen {
		t.Errorf("users generation %d -> %d, want untouched (not in the watch's prefixes)", usersGen, g)
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
	applySample(t, ns, kp, 0, func(spec map[string]any) {
		inv := spec["invalidation"].(map[string]any)
		inv["schedule"] = "@every 2s"
		inv["prefixes"] = []any{"products"}
	})

	// A fresh key prefix starts at generation 0: each tick adds one.
	var ticks []time.Time
	eventually(t, 30*time.Second, 100*time.Millisecond, "three schedule ticks", func() (bool, string) {
		p := policy(t, ns)
		st := p.Status
		if st.LastScheduleTime == nil || slices.ContainsFunc(ticks, st.LastScheduleTime.Time.Equal) {
			return false, fmt.Sprintf("ticks %v", ticks)
		}
		tick := st.LastScheduleTime.Time
		ticks = append(ticks, tick)
		// Written in the same status update as the tick.
		if g := generationIn(p, "products"); g != int64(len(ticks)) {
			t.Errorf("after tick %d (%v): products generation %d, want %d", len(ticks), tick, g, len(ticks))
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
	if g := generation(t, ns, "products"); g != int64(len(ticks)) {
		t.Errorf("products generation %d after %d ticks, want one bump per tick", g, len(ticks))
	}
	if g := generation(t, ns, "users"); g != 0 {
		t.Errorf("users generation %d, want 0 (the schedule selects products)", g)
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
	if g := generation(t, ns, "products"); g != int64(len(ticks)) {
		t.Errorf("products generation %d after the schedule was removed, want %d", g, len(ticks))
	}
}
