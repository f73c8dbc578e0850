package controllers

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

var (
	metricRunsStarted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cacheplane_invalidation_runs_started_total",
		Help: "Invalidation runs started, by trigger.",
	}, []string{"trigger"})
	metricRunsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cacheplane_invalidation_runs_total",
		Help: "Invalidation run attempts finished, by trigger and result (success, error).",
	}, []string{"trigger", "result"})
	metricKeysDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cacheplane_invalidation_keys_deleted_total",
		Help: "Keys deleted by invalidation runs.",
	})
	metricRunDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cacheplane_invalidation_run_duration_seconds",
		Help:    "Time from the start of an invalidation run to its completion.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}, []string{"trigger"})
	metricStatsSyncErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cacheplane_stats_sync_errors_total",
		Help: "Failed reads of the stats pkg/cache flushes to Redis.",
	})
)

func init() {
	metrics.Registry.MustRegister(metricRunsStarted, metricRunsFinished, metricKeysDeleted, metricRunDuration, metricStatsSyncErrors, metricPolicies)
	// Every trigger's series start at 0: a counter that appears at 1 has no
	// increase() or rate() in Prometheus, so the first run of each trigger
	// (in a demo, the only one) would be missing from the dashboard and the
	// alerts.
	for _, trigger := range runTriggers {
		metricRunsStarted.WithLabelValues(trigger)
		metricRunDuration.WithLabelValues(trigger)
		for _, result := range []string{"success", "error"} {
			metricRunsFinished.WithLabelValues(trigger, result)
		}
	}
}

// runTriggers are the trigger labels of the run metrics (see triggerLabel).
var runTriggers = []string{
	cachev1alpha1.TriggerToken,
	cachev1alpha1.TriggerSchedule,
	string(cachev1alpha1.WatchKindConfigMap),
	string(cachev1alpha1.WatchKindSecret),
	TriggerDeletion,
}

// triggerLabel keeps label cardinality bounded: ConfigMap/<name> -> ConfigMap.
func triggerLabel(trigger string) string {
	kind, _, _ := strings.Cut(trigger, "/")
	return kind
}
