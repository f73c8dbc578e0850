package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// TestPolicyMetricsFromStatus: the per-policy series follow the status the
// reconciler leaves behind, and a forgotten policy's series disappear.
func TestPolicyMetricsFromStatus(t *testing.T) {
	m := &policyMetrics{policies: map[types.NamespacedName]*cachev1alpha1.CachePolicyStatus{}}
	done := metav1.NewMicroTime(time.Unix(1700000000, 500_000_000))
	p := &cachev1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "demo"},
		Status: cachev1alpha1.CachePolicyStatus{
			Conditions: []metav1.Condition{{Type: cachev1alpha1.ConditionReady, Status: metav1.ConditionTrue}},
			Prefixes: []cachev1alpha1.PrefixStatus{
				{Name: "users", TTL: metav1.Duration{Duration: 10 * time.Minute}, Generation: 3, Hits: 90, Misses: 10, Errors: 1},
			},
			LastInvalidation: &cachev1alpha1.InvalidationStatus{Phase: cachev1alpha1.InvalidationComplete, CompletedAt: &done},
		},
	}
	m.observe(p)
	want := `
# HELP cacheplane_policy_hits_total Cache hits the workloads reported for a prefix of the policy (status.prefixes[].hits).
# TYPE cacheplane_policy_hits_total counter
cacheplane_policy_hits_total{namespace="shop",policy="demo",prefix="users"} 90
# HELP cacheplane_policy_invalidation_phase 1 for the phase (Running, Complete, Failed) of the policy's last invalidation run, 0 for the others; absent before the first run.
# TYPE cacheplane_policy_invalidation_phase gauge
cacheplane_policy_invalidation_phase{namespace="shop",phase="Complete",policy="demo"} 1
cacheplane_policy_invalidation_phase{namespace="shop",phase="Failed",policy="demo"} 0
cacheplane_policy_invalidation_phase{namespace="shop",phase="Running",policy="demo"} 0
# HELP cacheplane_policy_last_invalidation_completed_timestamp_seconds When the policy's last invalidation run completed (Unix time); absent while none has.
# TYPE cacheplane_policy_last_invalidation_completed_timestamp_seconds gauge
cacheplane_policy_last_invalidation_completed_timestamp_seconds{namespace="shop",policy="demo"} 1.7000000005e+09
# HELP cacheplane_policy_prefix_generation Generation of a prefix: bumped by every invalidation of it.
# TYPE cacheplane_policy_prefix_generation gauge
cacheplane_policy_prefix_generation{namespace="shop",policy="demo",prefix="users"} 3
# HELP cacheplane_policy_prefix_ttl_seconds TTL published for a prefix.
# TYPE cacheplane_policy_prefix_ttl_seconds gauge
cacheplane_policy_prefix_ttl_seconds{namespace="shop",policy="demo",prefix="users"} 600
# HELP cacheplane_policy_ready 1 when the policy's Ready condition is True, else 0.
# TYPE cacheplane_policy_ready gauge
cacheplane_policy_ready{namespace="shop",policy="demo"} 1
`
	names := []string{"cacheplane_policy_ready", "cacheplane_policy_hits_total", "cacheplane_policy_prefix_generation",
		"cacheplane_policy_prefix_ttl_seconds", "cacheplane_policy_invalidation_phase", "cacheplane_policy_last_invalidation_completed_timestamp_seconds"}
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// Not Ready, a run failing: ready 0, phase Failed, no completion time.
	p.Status.Conditions[0].Status = metav1.ConditionFalse
	p.Status.LastInvalidation = &cachev1alpha1.InvalidationStatus{Phase: cachev1alpha1.InvalidationFailed}
	m.observe(p)
	if v := gatherValue(t, m, "cacheplane_policy_ready", ""); v != 0 {
		t.Errorf("ready = %v for a policy whose Ready is False", v)
	}
	if v := gatherValue(t, m, "cacheplane_policy_invalidation_phase", "Failed"); v != 1 {
		t.Errorf("phase Failed = %v, want 1", v)
	}
	if n := testutil.CollectAndCount(m, "cacheplane_policy_last_invalidation_completed_timestamp_seconds"); n != 0 {
		t.Errorf("%d completion timestamps while the last run failed", n)
	}

	m.forget(types.NamespacedName{Namespace: "shop", Name: "demo"})
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series left after the policy was forgotten", n)
	}
}

// gatherValue returns the value of the series name whose phase label (if
// phase is set) equals phase.
func gatherValue(t *testing.T, c prometheus.Collector, name, phase string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if phase != "" && l.GetName() == "phase" && l.GetValue() != phase {
					continue metric
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s (phase %q)", name, phase)
	return 0
}
