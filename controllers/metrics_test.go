package controllers

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRunMetricsStartAtZero: Prometheus sees no increase in a counter whose
// first sample is 1, so each trigger's run series must exist, at 0, before
// its first run.
func TestRunMetricsStartAtZero(t *testing.T) {
	for _, trigger := range []string{"Token", "Schedule", "ConfigMap", "Secret", "Deletion"} {
		if triggerLabel(trigger+"/x") != trigger {
			t.Errorf("triggerLabel(%s/x) = %s", trigger, triggerLabel(trigger+"/x"))
		}
	}
	// 5 triggers x 2 results, whatever ran before in this process: a run
	// under a trigger runTriggers misses would make more.
	if n := testutil.CollectAndCount(metricRunsFinished); n != 10 {
		t.Errorf("%d cacheplane_invalidation_runs_total series before any run, want 10", n)
	}
	if n := testutil.CollectAndCount(metricRunsStarted); n != 5 {
		t.Errorf("%d cacheplane_invalidation_runs_started_total series, want 5", n)
	}
	if n := testutil.CollectAndCount(metricRunDuration); n != 5 {
		t.Errorf("%d cacheplane_invalidation_run_duration_seconds series, want 5", n)
	}
}
