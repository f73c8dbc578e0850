package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"

	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

func TestHitRatio(t *testing.T) {
	tests := []struct {
		hits, misses int64
		want         string
	}{
		{0, 0, ""},
		{1, 0, "100.0%"},
		{0, 7, "0.0%"},
		{948, 52, "94.8%"},
		{2, 1, "66.7%"},     // 66.66...: rounds half up
		{1, 2, "33.3%"},     // 33.33...
		{999, 1, "99.9%"},   // not rounded up to 100.0% before it is
		{9999, 1, "100.0%"}, // 99.99: rounds to 100.0%
		{1 << 40, 0, "100.0%"},
	}
	for _, tt := range tests {
		if got := HitRatio(tt.hits, tt.misses); got != tt.want {
			t.Errorf("HitRatio(%d, %d) = %q, want %q", tt.hits, tt.misses, got, tt.want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	for attempts, want := range map[int32]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 9: 256 * time.Second, 10: 5 * time.Minute, 1000: 5 * time.Minute} {
		if got := retryDelay(attempts); got != want {
			t.Errorf("retryDelay(%d) = %v, want %v", attempts, got, want)
		}
	}
}

type fakeStore struct {
	Store
	closed int
}

func (f *fakeStore) Close() error { f.closed++; return nil }

// Policies with one fingerprint share a store; the last one out closes it; a
// changed fingerprint moves the policy to a new store.
func TestStoreCacheSharesAndReleases(t *testing.T) {
	var opened []*fakeStore
	c := newStoreCache(func(redisconn.Options) (Store, error) {
		s := &fakeStore{}
		opened = append(opened, s)
		return s, nil
	})
	a, b := types.NamespacedName{Name: "a"}, types.NamespacedName{Name: "b"}
	sa, _ := c.get(a, "fp1", redisconn.Options{})
	sb, _ := c.get(b, "fp1", redisconn.Options{})
	if sa != sb || len(opened) != 1 {
		t.Fatalf("two policies on one connection opened %d stores", len(opened))
	}
	again, _ := c.get(a, "fp1", redisconn.Options{})
	if again != sa || len(opened) != 1 {
		t.Fatal("a repeated get opened a new store")
	}
	moved, _ := c.get(a, "fp2", redisconn.Options{})
	if moved == sa || len(opened) != 2 || opened[0].closed != 0 {
		t.Fatalf("moving a: %d stores opened, first closed %d times (b still uses it)", len(opened), opened[0].closed)
	}
	c.forget(b)
	if opened[0].closed != 1 {
		t.Errorf("last user gone, store closed %d times, want 1", opened[0].closed)
	}
	c.closeAll()
	if opened[1].closed != 1 {
		t.Errorf("closeAll closed the second store %d times", opened[1].closed)
	}
	if fingerprint([]byte("ab"), []byte("c")) == fingerprint([]byte("a"), []byte("bc")) {
		t.Error("fingerprint parts are not delimited")
	}
}

// fakeReconciler runs the reconciler on a fake API client holding objs, with
// every policy's Redis being store; req names the policy "ns/p".
func fakeReconciler(store Store, objs ...client.Object) (r *CachePolicyReconciler, c client.Client, req ctrl.Request) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = cachev1alpha1.AddToScheme(scheme)
	c = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&cachev1alpha1.CachePolicy{}).Build()
	r = &CachePolicyReconciler{Client: c, APIReader: c, stores: newStoreCache(func(redisconn.Options) (Store, error) { return store, nil })}
	return r, c, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "p"}}
}

// flakyStore is a Store whose generation bump fails while failBump is set:
// Redis going away between the reconcile's ping and the run's start.
type flakyStore struct {
	fakeStore
	failBump bool
}

func (f *flakyStore) Ping(context.Context) error { return nil }

func (f *flakyStore) SyncPolicy(_ context.Context, _ keyspace.Space, want map[string]keyspace.PrefixPolicy, _ map[string]int64) (map[string]int64, error) {
	gens := map[string]int64{}
	for p := range want {
		gens[p] = 0
	}
	return gens, nil
}

func (f *flakyStore) BumpGenerations(_ context.Context, _ keyspace.Space, prefixes []string, _ map[string]int64) (map[string]int64, error) {
	if f.failBump {
		return nil, errors.New("connection reset")
	}
	gens := map[string]int64{}
	for _, p := range prefixes {
		gens[p] = 1
	}
	return gens, nil
}

func (f *flakyStore) Purge(_ context.Context, _ string, _ []NodeCursor, _ purge.Options, progress func([]NodeCursor, int64) error) error {
	return progress([]NodeCursor{{Done: true}}, 0)
}

func (f *flakyStore) ReadStats(context.Context, keyspace.Space, []string) (map[string]Counters, error) {
	return map[string]Counters{}, nil
}

// A trigger whose run cannot start (the bump fails) stays pending and runs
// once Redis answers again: its observation is not recorded as handled.
func TestTriggerSurvivesFailedStart(t *testing.T) {
	policy := &cachev1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 2, UID: "uid", Finalizers: []string{Finalizer}},
		Spec: cachev1alpha1.CachePolicySpec{
			Redis:        cachev1alpha1.RedisSpec{URL: "redis://127.0.0.1:1/0"},
			KeyPrefix:    "kp",
			Prefixes:     []cachev1alpha1.PrefixSpec{{Name: "users"}},
			Invalidation: cachev1alpha1.InvalidationSpec{Watch: []cachev1alpha1.WatchSpec{{Kind: cachev1alpha1.WatchKindConfigMap, Name: "cm"}}},
		},
		Status: cachev1alpha1.CachePolicyStatus{
			ObservedGeneration: 1,
			Watched:            []cachev1alpha1.WatchedObjectStatus{{Kind: cachev1alpha1.WatchKindConfigMap, Name: "cm", DataHash: "before-the-change"}},
		},
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cm"}, Data: map[string]string{"k": "changed"}}
	store := &flakyStore{failBump: true}
	r, c, req := fakeReconciler(store, policy, cm)

	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	got := &cachev1alpha1.CachePolicy{}
	if err := c.Get(context.Background(), req.NamespacedName, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.LastInvalidation != nil || got.Status.Watched[0].DataHash != "before-the-change" {
		t.Fatalf("after a failed start: run %+v, watched %+v; want no run and the change still pending", got.Status.LastInvalidation, got.Status.Watched)
	}

	store.failBump = false
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), req.NamespacedName, got); err != nil {
		t.Fatal(err)
	}
	if run := got.Status.LastInvalidation; run == nil || run.Trigger != "ConfigMap/cm" || run.Phase != cachev1alpha1.InvalidationComplete {
		t.Fatalf("once Redis answers, run = %+v; want the ConfigMap's run, complete", run)
	}
	if got.Status.Watched[0].DataHash == "before-the-change" {
		t.Error("the handled change is still pending")
	}
}

// A policy created while its Redis is down adopts its token all the same:
// Redis coming back must not turn the creation into a purge.
func TestTokenAdoptedWhileRedisDown(t *testing.T) {
	policy := &cachev1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 1, Finalizers: []string{Finalizer}},
		Spec: cachev1alpha1.CachePolicySpec{
			Redis:        cachev1alpha1.RedisSpec{URL: "redis://127.0.0.1:1/0"},
			KeyPrefix:    "kp",
			Prefixes:     []cachev1alpha1.PrefixSpec{{Name: "users"}},
			Invalidation: cachev1alpha1.InvalidationSpec{Token: "v1"},
		},
	}
	r, c, req := fakeReconciler(&downStore{}, policy)
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	got := &cachev1alpha1.CachePolicy{}
	if err := c.Get(context.Background(), req.NamespacedName, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.ObservedToken != "v1" {
		t.Fatalf("observedToken = %q after a first reconcile with Redis down, want v1 adopted", got.Status.ObservedToken)
	}
}

type downStore struct{ fakeStore }

func (downStore) Ping(context.Context) error { return errors.New("connection refused") }

// A run in progress when Redis becomes unreachable is reported Failed, with
// its attempts counted once per backoff period, not left showing Running.
func TestRunFailsWhileRedisDown(t *testing.T) {
	started := metav1.NewMicroTime(time.Now().Add(-time.Minute))
	policy := &cachev1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 2, Finalizers: []string{Finalizer}},
		Spec: cachev1alpha1.CachePolicySpec{
			Redis:        cachev1alpha1.RedisSpec{URL: "redis://127.0.0.1:1/0"},
			KeyPrefix:    "kp",
			Prefixes:     []cachev1alpha1.PrefixSpec{{Name: "users"}},
			Invalidation: cachev1alpha1.InvalidationSpec{Token: "v2"},
		},
		Status: cachev1alpha1.CachePolicyStatus{
			ObservedGeneration: 2,
			ObservedToken:      "v1",
			LastInvalidation: &cachev1alpha1.InvalidationStatus{
				Token: "v2", Trigger: cachev1alpha1.TriggerToken, Phase: cachev1alpha1.InvalidationRunning,
				Prefixes: []string{"users"}, Patterns: []string{"kp:users:*"}, StartedAt: &started, KeysDeleted: 10,
				Checkpoint: &cachev1alpha1.InvalidationCheckpoint{Cursors: []cachev1alpha1.ScanCursor{{Cursor: "42"}}},
			},
		},
	}
	r, c, req := fakeReconciler(&downStore{}, policy)
	got := &cachev1alpha1.CachePolicy{}
	for range 3 {
		if _, err := r.Reconcile(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(context.Background(), req.NamespacedName, got); err != nil {
			t.Fatal(err)
		}
	}
	run := got.Status.LastInvalidation
	if run.Phase != cachev1alpha1.InvalidationFailed || run.Attempts != 1 || run.NextAttemptAt == nil {
		t.Fatalf("run = %+v; want Failed, 1 attempt (three reconciles inside one backoff), a next attempt time", run)
	}
	if run.Checkpoint == nil || run.Checkpoint.Cursors[0].Cursor != "42" || run.KeysDeleted != 10 {
		t.Errorf("the failure lost the checkpoint: %+v", run)
	}
}

// touchStore fails the test on any Redis operation: a policy whose keyPrefix
// breaks today's rules must not reach Redis at all.
type touchStore struct {
	fakeStore
	t *testing.T
}

func (s *touchStore) Ping(context.Context) error {
	s.t.Error("a policy with an invalid keyPrefix pinged Redis")
	return nil
}

// A policy stored before ':' became invalid (the API server refuses it now,
// so the fake client stands in for etcd holding an old object) is Ready=False
// with InvalidKeyPrefix and never touches Redis: with keyPrefix "a:b" it
// would publish into and purge the keys of tenant "a"'s prefix "b".
func TestLegacyKeyPrefixTouchesNothing(t *testing.T) {
	for _, deleting := range []bool{false, true} {
		p := &cachev1alpha1.CachePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 1, Finalizers: []string{Finalizer}},
			Spec: cachev1alpha1.CachePolicySpec{
				Redis:          cachev1alpha1.RedisSpec{URL: "redis://127.0.0.1:1"},
				KeyPrefix:      "a:b",
				Prefixes:       []cachev1alpha1.PrefixSpec{{Name: "users"}},
				DeletionPolicy: cachev1alpha1.DeletionPolicyPurge,
			},
		}
		if deleting {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		}
		r, c, req := fakeReconciler(&touchStore{t: t}, p)
		if _, err := r.Reconcile(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		got := &cachev1alpha1.CachePolicy{}
		err := c.Get(context.Background(), req.NamespacedName, got)
		if deleting {
			// Let go without purging: the finalizer is removed, the object gone.
			if err == nil && len(got.Finalizers) > 0 {
				t.Errorf("deleting a policy with an invalid keyPrefix kept its finalizer %v", got.Finalizers)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ready := meta.FindStatusCondition(got.Status.Conditions, cachev1alpha1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != cachev1alpha1.ReasonInvalidKeyPrefix {
			t.Fatalf("Ready = %+v, want False/%s", ready, cachev1alpha1.ReasonInvalidKeyPrefix)
		}
		if !strings.Contains(ready.Message, "':'") && !strings.Contains(ready.Message, ":") {
			t.Errorf("Ready's message does not say what is wrong: %q", ready.Message)
		}
	}
}
