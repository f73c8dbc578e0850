package controllers

import (
	"context"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// syncStats reads the counters pkg/cache flushed for each declared prefix and
// writes totals and hit ratios into status. When nothing changed, status stays
// as it was, so the deferred patch is skipped.
func (r *CachePolicyReconciler) syncStats(ctx context.Context, s *scope) {
	p := s.policy
	interval := p.Spec.StatsInterval.Duration
	if interval <= 0 {
		interval = cachev1alpha1.DefaultStatsInterval
	}
	s.requeue(interval)

	prefixes := declaredPrefixes(p)
	cctx, cancel := context.WithTimeout(ctx, redisTimeout)
	counters, err := s.store.ReadStats(cctx, s.space, prefixes)
	cancel()
	if err != nil {
		metricStatsSyncErrors.Inc()
		s.log.Info("reading stats failed; retrying at the next interval", "error", err.Error())
		return
	}
	var total Counters
	changed := false
	for i := range p.Status.Prefixes {
		ps := &p.Status.Prefixes[i]
		c := counters[ps.Name]
		total.Hits += c.Hits
		total.Misses += c.Misses
		total.Errors += c.Errors
		if ps.Hits != c.Hits || ps.Misses != c.Misses || ps.Errors != c.Errors {
			changed = true
		}
		ps.Hits, ps.Misses, ps.Errors = c.Hits, c.Misses, c.Errors
		ps.HitRatio = HitRatio(c.Hits, c.Misses)
	}
	st := &p.Status
	if st.Hits != total.Hits || st.Misses != total.Misses || st.Errors != total.Errors {
		changed = true
	}
	st.Hits, st.Misses, st.Errors = total.Hits, total.Misses, total.Errors
	st.HitRatio = HitRatio(total.Hits, total.Misses)
	if changed {
		now := metav1.NewTime(s.now)
		st.LastStatsSync = &now
	}
}

// HitRatio formats hits/(hits+misses) as a percentage with one decimal, such as
// "94.8%" (API conventions avoid floats). It is "" before the first lookup.
func HitRatio(hits, misses int64) string {
	if hits+misses <= 0 {
		return ""
	}
	// Integer tenths of a percent, rounded half up, so the string is exact.
	tenths := (hits*2000/(hits+misses) + 1) / 2
	return strconv.FormatInt(tenths/10, 10) + "." + strconv.FormatInt(tenths%10, 10) + "%"
}
