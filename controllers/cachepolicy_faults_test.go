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
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// A Redis that stops answering (network stall, not a refused connection) is
// reported within the controller's Redis timeout, and recovery is seen too.
func TestNetworkStallIsReported(t *testing.T) {
	proxy, err := redistest.StartProxy(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	ns := namespace(t)
	p := newPolicy(ns, "p", "stall")
	p.Spec.Redis.URL = proxy.URL()
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	proxy.Stall()
	stalled := time.Now()
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionRedisConnected, metav1.ConditionFalse, cachev1alpha1.ReasonRedisUnreachable), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	t.Logf("stall reported after %v", time.Since(stalled).Round(time.Millisecond))
	proxy.Resume()
	waitReady(t, p)
}

// FuzzPolicySpec sends generated specs through the real API server: each is
// either rejected as Invalid (never a server error) or accepted and then
// reconciled by the running controller without crashing it.
func FuzzPolicySpec(f *testing.F) {
	f.Add("myapp", "users", "10m", "users:*", "redis://127.0.0.1:1/0", "@every 1h", "Retain", int64(0))
	f.Add("a*b", "us:ers", "-1s", "other:*", "redis://u:p@h:1/0", "61 * * * *", "Delete", int64(-1))
	f.Add("x", "", "0s", "", "http://h", "", "Purge", int64(5))
	f.Add("ns/app.v2", "p-1", "1h30m", "p-1:[a-z]*", "rediss://[::1]:6380/2", "0 3 * * 1-5", "Purge", int64(1000))
	f.Add("{tag}", "ünï", "5", "ünï:?", "redis://h:99999", "@reboot", "", int64(1<<40))
	f.Fuzz(func(t *testing.T, keyPrefix, prefix, ttl, pattern, url, schedule, deletion string, rate int64) {
		ns := "fuzz"
		ensureNamespace(t, ns)
		p := &cachev1alpha1.CachePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "f-"},
			Spec: cachev1alpha1.CachePolicySpec{
				Redis:          cachev1alpha1.RedisSpec{URL: url},
				KeyPrefix:      keyPrefix,
				Prefixes:       []cachev1alpha1.PrefixSpec{{Name: prefix}},
				DeletionPolicy: cachev1alpha1.DeletionPolicy(deletion),
				Invalidation:   cachev1alpha1.InvalidationSpec{Schedule: schedule, MaxKeysPerSecond: rate, Token: "t"},
			},
		}
		if d, err := time.ParseDuration(ttl); err == nil {
			p.Spec.Prefixes[0].TTL = &metav1.Duration{Duration: d}
		}
		if pattern != "" {
			p.Spec.Invalidation.Patterns = []string{pattern}
		}
		err := k8s.Create(context.Background(), p)
		if err != nil {
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("spec %+v: want Invalid or accepted, got %v", p.Spec, err)
			}
			return
		}
		defer func() {
			// Retain never waits on Redis, so the object goes at once.
			_ = k8s.Patch(context.Background(), p, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"deletionPolicy":"Retain"}}`)))
			_ = k8s.Delete(context.Background(), p)
		}()
		eventually(t, 30*time.Second, func() (bool, string) {
			cur := get(t, p)
			return cur.Status.ObservedGeneration == cur.Generation, fmt.Sprintf("accepted spec %+v not reconciled: %+v", cur.Spec, cur.Status)
		})
		select {
		case <-mgrDone:
			t.Fatalf("the manager stopped while reconciling %+v", p.Spec)
		default:
		}
		if strings.Contains(logs.String(), "Observed a panic") {
			t.Fatalf("the reconciler panicked on %+v", p.Spec)
		}
	})
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
