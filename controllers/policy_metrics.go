package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// Per-policy series, exported from each policy's status after every reconcile
// so that dashboards and alerts work from the manager's endpoint alone: the
// hit/miss/error counters are the ones every workload flushed to Redis, summed
// over pods, which no single pod's /metrics has.
var (
	descPolicyReady = prometheus.NewDesc("cacheplane_policy_ready",
		"1 when the policy's Ready condition is True, else 0.",
		[]string{"namespace", "policy"}, nil)
	descPolicyHits = prometheus.NewDesc("cacheplane_policy_hits_total",
		"Cache hits the workloads reported for a prefix of the policy (status.prefixes[].hits).",
		[]string{"namespace", "policy", "prefix"}, nil)
	descPolicyMisses = prometheus.NewDesc("cacheplane_policy_misses_total",
		"Cache misses the workloads reported for a prefix of the policy.",
		[]string{"namespace", "policy", "prefix"}, nil)
	descPolicyErrors = prometheus.NewDesc("cacheplane_policy_errors_total",
		"Redis errors the workloads reported for a prefix of the policy.",
		[]string{"namespace", "policy", "prefix"}, nil)
	descPrefixGeneration = prometheus.NewDesc("cacheplane_policy_prefix_generation",
		"Generation of a prefix: bumped by every invalidation of it.",
		[]string{"namespace", "policy", "prefix"}, nil)
	descPrefixTTL = prometheus.NewDesc("cacheplane_policy_prefix_ttl_seconds",
		"TTL published for a prefix.",
		[]string{"namespace", "policy", "prefix"}, nil)
	descRunPhase = prometheus.NewDesc("cacheplane_policy_invalidation_phase",
		"1 for the phase (Running, Complete, Failed) of the policy's last invalidation run, 0 for the others; absent before the first run.",
		[]string{"namespace", "policy", "phase"}, nil)
	descRunCompleted = prometheus.NewDesc("cacheplane_policy_last_invalidation_completed_timestamp_seconds",
		"When the policy's last invalidation run completed (Unix time); absent while none has.",
		[]string{"namespace", "policy"}, nil)
)

// policyMetrics holds the latest status of every policy this manager
// reconciled, and reports it at each scrape.
type policyMetrics struct {
	mu       sync.Mutex
	policies map[types.NamespacedName]*cachev1alpha1.CachePolicyStatus
}

var metricPolicies = &policyMetrics{policies: map[types.NamespacedName]*cachev1alpha1.CachePolicyStatus{}}

// observe records p's status (a copy), replacing what was recorded before.
func (m *policyMetrics) observe(p *cachev1alpha1.CachePolicy) {
	st := p.Status.DeepCopy()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.policies[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = st
}

// forget drops a deleted policy's series.
func (m *policyMetrics) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.policies, key)
}

// Describe implements prometheus.Collector.
func (m *policyMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPolicyReady, descPolicyHits, descPolicyMisses, descPolicyErrors, descPrefixGeneration, descPrefixTTL, descRunPhase, descRunCompleted} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *policyMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, st := range m.policies {
		ns, name := key.Namespace, key.Name
		ready := 0.0
		if meta.IsStatusConditionTrue(st.Conditions, cachev1alpha1.ConditionReady) {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(descPolicyReady, prometheus.GaugeValue, ready, ns, name)
		for _, ps := range st.Prefixes {
			ch <- prometheus.MustNewConstMetric(descPolicyHits, prometheus.CounterValue, float64(ps.Hits), ns, name, ps.Name)
			ch <- prometheus.MustNewConstMetric(descPolicyMisses, prometheus.CounterValue, float64(ps.Misses), ns, name, ps.Name)
			ch <- prometheus.MustNewConstMetric(descPolicyErrors, prometheus.CounterValue, float64(ps.Errors), ns, name, ps.Name)
			ch <- prometheus.MustNewConstMetric(descPrefixGeneration, prometheus.GaugeValue, float64(ps.Generation), ns, name, ps.Name)
			ch <- prometheus.MustNewConstMetric(descPrefixTTL, prometheus.GaugeValue, ps.TTL.Seconds(), ns, name, ps.Name)
		}
		if run := st.LastInvalidation; run != nil && run.Phase != "" {
			for _, phase := range []cachev1alpha1.InvalidationPhase{cachev1alpha1.InvalidationRunning, cachev1alpha1.InvalidationComplete, cachev1alpha1.InvalidationFailed} {
				v := 0.0
				if run.Phase == phase {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descRunPhase, prometheus.GaugeValue, v, ns, name, string(phase))
			}
			if run.Phase == cachev1alpha1.InvalidationComplete && run.CompletedAt != nil {
				ch <- prometheus.MustNewConstMetric(descRunCompleted, prometheus.GaugeValue, unixSeconds(run.CompletedAt), ns, name)
			}
		}
	}
}

func unixSeconds(t *metav1.MicroTime) float64 {
	return float64(t.UnixNano()) / 1e9
}
