package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func TestTokenAdoptedAtCreationThenEachChangeRunsOnce(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kp := "tok"
	fill(t, kp+":users:%d", 10000)
	fill(t, kp+":products:%d", 1000)
	fill(t, kp+"x:users:%d", 300)  // a tenant whose prefix extends ours
	fill(t, "other:users:%d", 300) // another tenant

	p := newPolicy(ns, "p", kp)
	p.Spec.Invalidation.Token = "v1"
	p.Spec.Invalidation.Prefixes = []string{"users"}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	cur := waitReady(t, p)
	genBefore := cur.Status.Prefixes[0].Generation
	if cur.Status.ObservedToken != "v1" || cur.Status.LastInvalidation != nil {
		t.Fatalf("creation: observedToken %q, lastInvalidation %+v; want v1 adopted without a run", cur.Status.ObservedToken, cur.Status.LastInvalidation)
	}
	if n := countKeys(t, rdb, kp+":users:*"); n != 10000 {
		t.Fatalf("creation deleted keys: %d users keys left, want 10000", n)
	}

	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "v2" })
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "v2")
	if run.KeysDeleted != 10000 {
		t.Errorf("keysDeleted = %d, want 10000", run.KeysDeleted)
	}
	for pattern, want := range map[string]int{kp + ":users:*": 0, kp + ":products:*": 1000, kp + "x:users:*": 300, "other:users:*": 300} {
		if n := countKeys(t, rdb, pattern); n != want {
			t.Errorf("%s: %d keys, want %d", pattern, n, want)
		}
	}
	cur = get(t, p)
	if cur.Status.ObservedToken != "v2" {
		t.Errorf("observedToken = %q, want v2", cur.Status.ObservedToken)
	}
	// The run bumped the generation first, in Redis and in status.
	raw, err := rdb.HGet(ctx, keyspace.New(kp).PolicyKey(), "users").Result()
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := keyspace.ParsePrefixPolicy(raw)
	if pol.TTL() != 10*time.Minute {
		t.Errorf("policy hash users = %+v, want ttl 10m", pol)
	}
	gens, err := keyspace.ParseGenerations(keyspace.New(kp).EnsureGenerations(ctx, rdb))
	if err != nil {
		t.Fatal(err)
	}
	if g := gens.Of("users"); g <= genBefore || cur.Status.Prefixes[0].Generation != g {
		t.Errorf("generation of users: %d in Redis, %d in status, %d before the run; want one higher value in both",
			g, cur.Status.Prefixes[0].Generation, genBefore)
	}
	if g := gens.Of("products"); g > genBefore {
		t.Errorf("generation of products rose to %d in a run of users (was at most %d)", g, genBefore)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		var reasons []string
		for _, e := range events(t, ns, "p") {
			reasons = append(reasons, e.Reason)
		}
		s := strings.Join(reasons, ",")
		return strings.Contains(s, "InvalidationStarted") && strings.Contains(s, "InvalidationComplete"), s
	})

	// The same token never runs again: new keys survive later reconciles.
	fill(t, kp+":users:new%d", 50)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.StatsInterval = metav1.Duration{Duration: 2 * time.Second} })
	cur = waitReady(t, p)
	if !cur.Status.LastInvalidation.StartedAt.Equal(run.StartedAt) {
		t.Errorf("token v2 ran again: startedAt %v, was %v", cur.Status.LastInvalidation.StartedAt, run.StartedAt)
	}
	if n := countKeys(t, rdb, kp+":users:new*"); n != 50 {
		t.Errorf("a repeat of token v2 deleted new keys: %d left, want 50", n)
	}

	// Clearing the token never invalidates.
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "" })
	cur = waitReady(t, p)
	if n := countKeys(t, rdb, kp+":users:new*"); n != 50 || !cur.Status.LastInvalidation.StartedAt.Equal(run.StartedAt) {
		t.Errorf("empty token invalidated: %d new keys left, run %+v", n, cur.Status.LastInvalidation)
	}
}

func TestPatternsNarrowTheRun(t *testing.T) {
	ns := namespace(t)
	kp := "pat"
	fill(t, kp+":users:1%d", 100) // users:10..19, 100..199 (and users:1x)
	fill(t, kp+":users:2%d", 100)
	p := newPolicy(ns, "p", kp)
	p.Spec.Invalidation.Patterns = []string{"users:1*"}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	genBefore := waitReady(t, p).Status.Prefixes[0].Generation
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "t1" })
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "t1")
	if n := countKeys(t, rdb, kp+":users:1*"); n != 0 {
		t.Errorf("%d keys matching the pattern left", n)
	}
	if n := countKeys(t, rdb, kp+":users:2*"); n != 100 {
		t.Errorf("%d keys outside the pattern left, want 100", n)
	}
	if run.KeysDeleted != 100 || len(run.Prefixes) != 0 {
		t.Errorf("run = %+v, want 100 keys deleted and no whole prefixes", run)
	}
	// A pattern run does not bump generations: other users entries stay valid.
	if g := get(t, p).Status.Prefixes[0].Generation; g != genBefore {
		t.Errorf("generation of users = %d after a pattern run, want %d as before", g, genBefore)
	}
}

func TestMaxKeysPerSecond(t *testing.T) {
	ns := namespace(t)
	kp := "rate"
	fill(t, kp+":users:%d", 3000)
	p := newPolicy(ns, "p", kp)
	p.Spec.Invalidation.MaxKeysPerSecond = 1500
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "go" })
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "go")
	took := run.CompletedAt.Sub(run.StartedAt.Time)
	t.Logf("3000 keys at maxKeysPerSecond=1500 took %v", took)
	// Status times have second precision, so allow one second of rounding.
	if run.KeysDeleted != 3000 || took < time.Second {
		t.Errorf("run deleted %d keys in %v; want 3000 keys in about 2s", run.KeysDeleted, took)
	}
}

func TestRedisDownThenBack(t *testing.T) {
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ns := namespace(t)
	p := newPolicy(ns, "p", "down")
	p.Spec.Redis.URL = own.URL(0)
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	own.Stop()
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionReady, metav1.ConditionFalse, cachev1alpha1.ReasonRedisUnreachable) &&
				conditionIs(cur, cachev1alpha1.ConditionRedisConnected, metav1.ConditionFalse, cachev1alpha1.ReasonRedisUnreachable),
			fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	cur := waitReady(t, p)
	if !conditionIs(cur, cachev1alpha1.ConditionRedisConnected, metav1.ConditionTrue, cachev1alpha1.ReasonConnected) {
		t.Errorf("RedisConnected after recovery: %+v", cur.Status.Conditions)
	}
	// The restarted server lost everything; the policy is published again.
	eventually(t, 10*time.Second, func() (bool, string) {
		c := own.Client()
		defer c.Close()
		n, err := c.HLen(context.Background(), keyspace.New("down").PolicyKey()).Result()
		return err == nil && n == 2, fmt.Sprintf("policy hash fields %d, %v", n, err)
	})
}

// A run interrupted by stopping the manager resumes from its checkpoint under
// a new manager: same run (startedAt), every key deleted, token handled once.
func TestRunResumesAfterManagerRestart(t *testing.T) {
	ns := namespace(t)
	kp := "resume"
	fill(t, kp+":users:%d", 20000)
	p := newPolicy(ns, "p", kp)
	p.Spec.Invalidation.MaxKeysPerSecond = 5000
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "r1" })
	var started *cachev1alpha1.InvalidationStatus
	eventually(t, 30*time.Second, func() (bool, string) {
		run := get(t, p).Status.LastInvalidation
		started = run
		return run != nil && run.Phase == cachev1alpha1.InvalidationRunning && run.KeysDeleted > 0 && run.Checkpoint != nil && len(run.Checkpoint.Cursors) > 0,
			fmt.Sprintf("%+v", run)
	})
	stopManager()
	left := countKeys(t, rdb, kp+":users:*")
	checkpoint := get(t, p).Status.LastInvalidation
	if left == 0 || checkpoint.Phase != cachev1alpha1.InvalidationRunning {
		t.Fatalf("manager stopped after the run finished (%d keys left, phase %s); nothing to resume", left, checkpoint.Phase)
	}
	t.Logf("stopped with %d keys left, checkpoint %+v after %d deleted", left, checkpoint.Checkpoint, checkpoint.KeysDeleted)
	bumped := get(t, p).Status.Prefixes[0].Generation
	if err := startManager(); err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, p, cachev1alpha1.TriggerToken, "r1")
	if !run.StartedAt.Equal(started.StartedAt) {
		t.Errorf("run restarted instead of resuming: startedAt %v, was %v", run.StartedAt, started.StartedAt)
	}
	if n := countKeys(t, rdb, kp+":users:*"); n != 0 {
		t.Errorf("%d keys left after the resumed run", n)
	}
	// Keys deleted between the last saved checkpoint and the stop are
	// counted again only if re-scanned; never fewer than the keys there were.
	if run.KeysDeleted < 20000 || run.KeysDeleted > 20000+5000 {
		t.Errorf("keysDeleted = %d, want 20000 (plus at most one slice re-counted)", run.KeysDeleted)
	}
	if g := get(t, p).Status.Prefixes[0].Generation; g != bumped {
		t.Errorf("generation = %d, want %d: the resumed run must not bump again", g, bumped)
	}
}

func TestSecretPassword(t *testing.T) {
	const password = "s3cr3t-Pa55word-for-test"
	own, err := redistest.Start("--requirepass", password)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ctx := context.Background()
	ns := namespace(t)
	p := newPolicy(ns, "p", "auth")
	p.Spec.Redis.URL = own.URL(0)
	p.Spec.Redis.PasswordSecretRef = &cachev1alpha1.SecretKeyRef{Name: "redis-auth"}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionReady, metav1.ConditionFalse, cachev1alpha1.ReasonSecretNotFound), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis-auth"}, Data: map[string][]byte{"password": []byte("wrong-" + password)}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// The Secret's creation wakes the policy; a wrong password is its own reason.
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionRedisConnected, metav1.ConditionFalse, cachev1alpha1.ReasonRedisAuthFailed), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	secret.Data["password"] = []byte(password)
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "a1" })
	waitRun(t, p, cachev1alpha1.TriggerToken, "a1")

	cur := get(t, p)
	if s := fmt.Sprintf("%+v %+v", cur.Spec, cur.Status); strings.Contains(s, password) {
		t.Errorf("password in spec or status: %s", s)
	}
	for _, e := range events(t, ns, "p") {
		if strings.Contains(e.Message, password) {
			t.Errorf("password in Event %s: %s", e.Reason, e.Message)
		}
	}
	if strings.Contains(logs.String(), password) {
		t.Error("password in the manager's logs")
	}
}

func TestDeletionPolicies(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []cachev1alpha1.DeletionPolicy{cachev1alpha1.DeletionPolicyPurge, cachev1alpha1.DeletionPolicyRetain} {
		t.Run(string(policy), func(t *testing.T) {
			ns := namespace(t)
			kp := "del" + strings.ToLower(string(policy))
			fill(t, kp+":users:%d", 2000)
			fill(t, kp+":products:%d", 500)
			fill(t, kp+":undeclared:%d", 10)
			p := newPolicy(ns, "p", kp)
			p.Spec.DeletionPolicy = policy
			if err := k8s.Create(ctx, p); err != nil {
				t.Fatal(err)
			}
			if cur := waitReady(t, p); len(cur.Finalizers) == 0 {
				t.Fatal("no finalizer on a ready policy")
			}
			if err := k8s.Delete(ctx, p); err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, func() (bool, string) {
				err := k8s.Get(ctx, key(ns, "p"), &cachev1alpha1.CachePolicy{})
				return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
			})
			users, products, undeclared := countKeys(t, rdb, kp+":users:*"), countKeys(t, rdb, kp+":products:*"), countKeys(t, rdb, kp+":undeclared:*")
			if policy == cachev1alpha1.DeletionPolicyPurge && (users != 0 || products != 0) {
				t.Errorf("Purge left %d users and %d products keys", users, products)
			}
			if policy == cachev1alpha1.DeletionPolicyRetain && (users != 2000 || products != 500) {
				t.Errorf("Retain left %d users and %d products keys, want 2000 and 500", users, products)
			}
			if undeclared != 10 {
				t.Errorf("%s touched keys of an undeclared prefix: %d left, want 10", policy, undeclared)
			}
			if n := countKeys(t, rdb, keyspace.EscapeGlob(keyspace.New(kp).PolicyKey())); n != 0 {
				t.Errorf("policy hash still published after deletion")
			}
		})
	}
}

func TestStatsInStatus(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kp := "stats"
	space := keyspace.New(kp)
	p := newPolicy(ns, "p", kp)
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	// Two pods' flushes add up in the stats hash.
	for _, delta := range []int64{600, 348} {
		rdb.HIncrBy(ctx, space.StatsKey("users"), keyspace.FieldHits, delta)
	}
	rdb.HIncrBy(ctx, space.StatsKey("users"), keyspace.FieldMisses, 52)
	rdb.HIncrBy(ctx, space.StatsKey("products"), keyspace.FieldMisses, 1000)
	eventually(t, 20*time.Second, func() (bool, string) {
		cur := get(t, p)
		st := cur.Status
		return st.Hits == 948 && st.Misses == 1052 && st.HitRatio == "47.4%" && len(st.Prefixes) == 2 &&
				st.Prefixes[0].HitRatio == "94.8%" && st.Prefixes[1].HitRatio == "0.0%",
			fmt.Sprintf("hits %d misses %d ratio %q prefixes %+v", st.Hits, st.Misses, st.HitRatio, st.Prefixes)
	})
}

func TestConfigMapWatchRunsOncePerDataChange(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kp := "watch"
	p := newPolicy(ns, "p", kp)
	p.Spec.Invalidation.Watch = []cachev1alpha1.WatchSpec{{Kind: cachev1alpha1.WatchKindConfigMap, Name: "app-config", Prefixes: []string{"products"}}}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionWatchesResolved, metav1.ConditionFalse, cachev1alpha1.ReasonWatchedObjectNotFound) &&
			conditionIs(cur, cachev1alpha1.ConditionReady, metav1.ConditionFalse, cachev1alpha1.ReasonWatchedObjectNotFound), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-config"}, Data: map[string]string{"price-table": "v1"}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	cur := waitReady(t, p) // adopted, no run
	if cur.Status.LastInvalidation != nil {
		t.Fatalf("first sight of the ConfigMap ran %+v", cur.Status.LastInvalidation)
	}
	fill(t, kp+":products:%d", 400)
	fill(t, kp+":users:%d", 40)
	cm.Data["price-table"] = "v2"
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	run := waitRun(t, p, "ConfigMap/app-config", "")
	if run.KeysDeleted != 400 || countKeys(t, rdb, kp+":users:*") != 40 {
		t.Errorf("run %+v; users keys left %d (want 40)", run, countKeys(t, rdb, kp+":users:*"))
	}
	// A metadata-only change is no data change.
	fill(t, kp+":products:again%d", 5)
	cm.Labels = map[string]string{"touched": "yes"}
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	// Give the controller a reconcile to react (a spec change forces one), then check.
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.StatsInterval = metav1.Duration{Duration: 3 * time.Second} })
	cur = waitReady(t, p)
	if !cur.Status.LastInvalidation.StartedAt.Equal(run.StartedAt) || countKeys(t, rdb, kp+":products:again*") != 5 {
		t.Errorf("a label change ran an invalidation: %+v", cur.Status.LastInvalidation)
	}
}

func TestScheduleRunsOnTicks(t *testing.T) {
	ns := namespace(t)
	kp := "sched"
	p := newPolicy(ns, "p", kp)
	p.Spec.Invalidation.Schedule = "@every 2s"
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	fill(t, kp+":users:%d", 100)
	run := waitRun(t, p, cachev1alpha1.TriggerSchedule, "")
	cur := get(t, p)
	if cur.Status.LastScheduleTime == nil || cur.Status.NextScheduleTime == nil || !cur.Status.NextScheduleTime.After(cur.Status.LastScheduleTime.Time) {
		t.Fatalf("schedule status: last %v next %v", cur.Status.LastScheduleTime, cur.Status.NextScheduleTime)
	}
	first := run.StartedAt
	// The next tick runs again.
	eventually(t, 20*time.Second, func() (bool, string) {
		r := get(t, p).Status.LastInvalidation
		return r.Phase == cachev1alpha1.InvalidationComplete && r.StartedAt.After(first.Time), fmt.Sprintf("%+v", r)
	})
	if n := countKeys(t, rdb, kp+":users:*"); n != 0 {
		t.Errorf("%d keys left after scheduled runs", n)
	}
}

func TestInvalidScheduleIsACondition(t *testing.T) {
	ns := namespace(t)
	p := newPolicy(ns, "p", "badsched")
	p.Spec.Invalidation.Schedule = "61 * * * *"
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatalf("the CRD checks the schedule's shape only, but refused it: %v", err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionReady, metav1.ConditionFalse, cachev1alpha1.ReasonInvalidSchedule), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
}

// The manager's Prometheus registry counts runs by trigger and result, keys
// deleted and run durations.
func TestMetrics(t *testing.T) {
	ns := namespace(t)
	kp := "metrics"
	fill(t, kp+":users:%d", 250)
	before := counterValue(t, "cacheplane_invalidation_keys_deleted_total", nil)
	runsBefore := counterValue(t, "cacheplane_invalidation_runs_total", map[string]string{"trigger": "Token", "result": "success"})
	p := newPolicy(ns, "p", kp)
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "m1" })
	waitRun(t, p, cachev1alpha1.TriggerToken, "m1")
	if d := counterValue(t, "cacheplane_invalidation_keys_deleted_total", nil) - before; d < 250 {
		t.Errorf("keys deleted counter rose by %v, want >= 250", d)
	}
	if d := counterValue(t, "cacheplane_invalidation_runs_total", map[string]string{"trigger": "Token", "result": "success"}) - runsBefore; d < 1 {
		t.Errorf("successful Token runs counter rose by %v, want >= 1", d)
	}
	if n := histogramCount(t, "cacheplane_invalidation_run_duration_seconds"); n < 1 {
		t.Errorf("run duration histogram has %d observations", n)
	}
}

func counterValue(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, m := range gather(t, name) {
		if matchLabels(m, labels) {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func histogramCount(t *testing.T, name string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range gather(t, name) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

func gather(t *testing.T, name string) []*dto.Metric {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Each declared prefix's TTL and near-cache choice reach the policy hash, and
// a TTL edit is published again.
func TestPolicyPublished(t *testing.T) {
	ns := namespace(t)
	kp := "pub"
	p := newPolicy(ns, "p", kp)
	off := false
	p.Spec.Prefixes[1].NearCache = &off
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	read := func(prefix string) keyspace.PrefixPolicy {
		raw, err := rdb.HGet(context.Background(), keyspace.New(kp).PolicyKey(), prefix).Result()
		if err != nil {
			t.Fatal(err)
		}
		pol, err := keyspace.ParsePrefixPolicy(raw)
		if err != nil {
			t.Fatal(err)
		}
		return pol
	}
	if u := read("users"); u.TTL() != 10*time.Minute || u.NearCache != nil {
		t.Errorf("users = %+v, want ttl 10m and no near-cache choice", u)
	}
	if pr := read("products"); pr.TTL() != 5*time.Minute || pr.NearCache == nil || *pr.NearCache {
		t.Errorf("products = %+v, want the default ttl 5m and nearCache false", pr)
	}
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Prefixes[0].TTL = &metav1.Duration{Duration: time.Minute} })
	eventually(t, 10*time.Second, func() (bool, string) {
		u := read("users")
		return u.TTL() == time.Minute, fmt.Sprintf("users = %+v", u)
	})
}
