package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// TriggerDeletion names the purge a Purge deletion policy runs.
const TriggerDeletion = "Deletion"

// errSliceSpent stops a purge whose reconcile has used its time slice; the run
// goes on from its checkpoint in the next reconcile.
var errSliceSpent = errors.New("time slice spent")

// adoptInitialToken takes a token present at creation as handled: creating a
// policy must not purge a warm cache. It runs at the first reconcile, before
// anything that could fail, so a Redis that is down then does not turn the
// adoption into a purge later.
func adoptInitialToken(s *scope) {
	st := &s.policy.Status
	if st.ObservedGeneration == 0 && st.LastInvalidation == nil {
		st.ObservedToken = s.policy.Spec.Invalidation.Token
	}
}

// reconcileInvalidation advances the current run or starts the next one a
// trigger asks for. One run at a time; triggers that fire meanwhile are seen
// (and run) once it completes, because each is a difference between spec or
// world and status, not a queued event.
func (r *CachePolicyReconciler) reconcileInvalidation(ctx context.Context, s *scope) {
	st := &s.policy.Status
	// nextRun marks the trigger it picks as seen; if the run cannot start,
	// the trigger must stay pending.
	watched, lastSchedule := slices.Clone(st.Watched), st.LastScheduleTime
	next := r.nextRun(ctx, s) // also resolves watches and the schedule for status
	run := st.LastInvalidation
	if run == nil || run.Phase == cachev1alpha1.InvalidationComplete {
		if next == nil {
			return
		}
		if !r.startRun(ctx, s, next) {
			st.Watched, st.LastScheduleTime = watched, lastSchedule
			return
		}
	}
	r.advanceRun(ctx, s)
}

// nextRun returns the run the first pending trigger asks for, or nil. It
// records what it observes (schedule times, watched data) only when no run is
// in progress, so a trigger is consumed exactly when its run starts.
func (r *CachePolicyReconciler) nextRun(ctx context.Context, s *scope) *cachev1alpha1.InvalidationStatus {
	p := s.policy
	busy := p.Status.LastInvalidation != nil && p.Status.LastInvalidation.Phase != cachev1alpha1.InvalidationComplete
	spec := p.Spec.Invalidation

	var next *cachev1alpha1.InvalidationStatus
	if tok := spec.Token; tok != "" && tok != p.Status.ObservedToken {
		next = r.newRun(s, cachev1alpha1.TriggerToken, tokenSelection(&p.Spec))
		next.Token = tok
	}
	if w := r.checkWatches(ctx, s, next == nil && !busy); w != nil && next == nil {
		next = w
	}
	if sc := r.checkSchedule(s, next == nil && !busy); sc != nil && next == nil {
		next = sc
	}
	if busy {
		return nil
	}
	return next
}

// selection is what a run deletes: whole prefixes (with a generation bump, so
// readers stop seeing them at once) or narrower patterns (SCAN only).
type selection struct {
	prefixes []string
	patterns []string
}

// tokenSelection is what token and schedule runs delete: the narrower
// patterns when given, else the invalidation prefixes.
func tokenSelection(spec *cachev1alpha1.CachePolicySpec) selection {
	if len(spec.Invalidation.Patterns) > 0 {
		return selection{patterns: spec.Invalidation.Patterns}
	}
	return selection{prefixes: spec.InvalidationPrefixes()}
}

func (r *CachePolicyReconciler) newRun(s *scope, trigger string, sel selection) *cachev1alpha1.InvalidationStatus {
	run := &cachev1alpha1.InvalidationStatus{
		Trigger:    trigger,
		Phase:      cachev1alpha1.InvalidationRunning,
		Prefixes:   sel.prefixes,
		Checkpoint: &cachev1alpha1.InvalidationCheckpoint{},
	}
	for _, prefix := range sel.prefixes {
		run.Patterns = append(run.Patterns, s.space.PrefixPattern(prefix))
	}
	for _, pat := range sel.patterns {
		run.Patterns = append(run.Patterns, s.space.Pattern(pat))
	}
	return run
}

// keepFor is what the purge of run's i-th pattern leaves in place (see
// purge.Options.Keep): pkg/cache's tombstones always, and for a bumped
// prefix its entries of the generation status records or later. Deleting a
// tombstone or an entry written after the bump would put the key back to
// "missing", and a loader's write-back whose miss saw it missing would then
// land over a newer write. A deletion purge keeps nothing: the data goes
// with the policy.
func keepFor(p *cachev1alpha1.CachePolicy, run *cachev1alpha1.InvalidationStatus, i int) *int64 {
	if run.Trigger == TriggerDeletion {
		return nil
	}
	keep := int64(0)
	if i < len(run.Prefixes) {
		for _, ps := range p.Status.Prefixes {
			if ps.Name == run.Prefixes[i] {
				keep = ps.Generation
			}
		}
	}
	return &keep
}

// startRun makes run the current one: readers of its prefixes stop seeing old
// entries at once (generation bump), then the SCAN reclaim begins.
func (r *CachePolicyReconciler) startRun(ctx context.Context, s *scope, run *cachev1alpha1.InvalidationStatus) bool {
	p := s.policy
	now := metav1.NewMicroTime(s.now)
	run.StartedAt = &now
	if len(run.Prefixes) > 0 {
		cctx, cancel := context.WithTimeout(ctx, redisTimeout)
		gens, err := s.store.BumpGenerations(cctx, s.space, run.Prefixes, statusGenerations(p))
		cancel()
		if err != nil {
			r.redisDown(s, cachev1alpha1.ReasonRedisUnreachable, fmt.Errorf("start invalidation: %w", err))
			return false
		}
		setPrefixStatus(p, gens)
	}
	p.Status.LastInvalidation = run
	r.event(p, corev1.EventTypeNormal, ReasonInvalidationStarted, "Invalidate",
		fmt.Sprintf("%s invalidation of %s started", run.Trigger, describeRun(run)))
	metricRunsStarted.WithLabelValues(triggerLabel(run.Trigger)).Inc()
	return true
}

// advanceRun purges for one time slice from the run's checkpoint, and
// completes or fails the run.
func (r *CachePolicyReconciler) advanceRun(ctx context.Context, s *scope) {
	p := s.policy
	run := p.Status.LastInvalidation
	if run.Phase == cachev1alpha1.InvalidationFailed && run.NextAttemptAt != nil && s.now.Before(run.NextAttemptAt.Time) {
		s.requeue(run.NextAttemptAt.Sub(s.now)) // other reconciles (stats, edits) do not retry early
		return
	}
	if run.Checkpoint == nil {
		run.Checkpoint = &cachev1alpha1.InvalidationCheckpoint{}
	}
	opt := purge.Options{MaxKeysPerSecond: p.Spec.Invalidation.MaxKeysPerSecond}
	deadline := time.Now().Add(cmpOr(r.RunSlice, 5*time.Second))
	for int(run.Checkpoint.Pattern) < len(run.Patterns) {
		cursors, err := parseCursors(run.Checkpoint.Cursors)
		if err != nil {
			cursors = nil // a mangled checkpoint costs a rescan, never a lost run
		}
		opt.Keep = keepFor(p, run, int(run.Checkpoint.Pattern))
		err = s.store.Purge(ctx, run.Patterns[run.Checkpoint.Pattern], cursors, opt, func(cs []NodeCursor, deleted int64) error {
			run.KeysDeleted += deleted
			metricKeysDeleted.Add(float64(deleted))
			run.Checkpoint.Cursors = formatCursors(cs)
			if time.Now().After(deadline) {
				return errSliceSpent
			}
			return nil
		})
		if errors.Is(err, errSliceSpent) {
			if run.Phase != cachev1alpha1.InvalidationRunning {
				run.Phase, run.Message, run.NextAttemptAt = cachev1alpha1.InvalidationRunning, "", nil
			}
			s.requeue(time.Millisecond)
			return
		}
		if err != nil {
			r.failRun(s, err)
			return
		}
		run.Checkpoint.Pattern++
		run.Checkpoint.Cursors = nil
	}
	r.completeRun(s)
}

func (r *CachePolicyReconciler) completeRun(s *scope) {
	p := s.policy
	run := p.Status.LastInvalidation
	now := metav1.NewMicroTime(time.Now())
	run.Phase = cachev1alpha1.InvalidationComplete
	run.CompletedAt = &now
	run.Checkpoint = nil
	run.NextAttemptAt = nil
	run.Message = fmt.Sprintf("deleted %d keys in %s", run.KeysDeleted, now.Sub(run.StartedAt.Time).Round(time.Millisecond))
	if run.Trigger == cachev1alpha1.TriggerToken {
		p.Status.ObservedToken = run.Token
	}
	r.event(p, corev1.EventTypeNormal, ReasonInvalidationComplete, "Invalidate",
		fmt.Sprintf("%s invalidation of %s: %s", run.Trigger, describeRun(run), run.Message))
	metricRunsFinished.WithLabelValues(triggerLabel(run.Trigger), "success").Inc()
	metricRunDuration.WithLabelValues(triggerLabel(run.Trigger)).Observe(now.Sub(run.StartedAt.Time).Seconds())
	// Another trigger may be waiting for this run to finish.
	s.requeue(time.Millisecond)
}

// failRun records a failed attempt; the run is retried from its checkpoint
// with exponential backoff until it succeeds.
func (r *CachePolicyReconciler) failRun(s *scope, err error) {
	p := s.policy
	run := p.Status.LastInvalidation
	run.Phase = cachev1alpha1.InvalidationFailed
	run.Attempts++
	delay := retryDelay(run.Attempts)
	next := metav1.NewMicroTime(s.now.Add(delay))
	run.NextAttemptAt = &next
	run.Message = fmt.Sprintf("attempt %d failed: %v; retrying in %s from the checkpoint", run.Attempts, err, delay)
	r.event(p, corev1.EventTypeWarning, ReasonInvalidationFailed, "Invalidate", run.Message)
	metricRunsFinished.WithLabelValues(triggerLabel(run.Trigger), "error").Inc()
	s.requeue(delay)
}

// runBlocked records that the current run cannot go on because Redis is
// unreachable: a run in progress is reported Failed (and retried with backoff)
// rather than left showing Running while nothing happens.
func (r *CachePolicyReconciler) runBlocked(s *scope) {
	run := s.policy.Status.LastInvalidation
	if run == nil || run.Phase == cachev1alpha1.InvalidationComplete {
		return
	}
	if run.Phase == cachev1alpha1.InvalidationFailed && run.NextAttemptAt != nil && s.now.Before(run.NextAttemptAt.Time) {
		return // this attempt's failure is already counted
	}
	msg := "Redis is unreachable"
	if c := meta.FindStatusCondition(s.policy.Status.Conditions, cachev1alpha1.ConditionRedisConnected); c != nil && c.Status == metav1.ConditionFalse {
		msg = c.Message
	}
	r.failRun(s, errors.New(msg))
}

// retryDelay doubles from 1s per failed attempt, up to 5 minutes.
func retryDelay(attempts int32) time.Duration {
	d := time.Second
	for i := int32(1); i < attempts && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

func parseCursors(in []cachev1alpha1.ScanCursor) ([]NodeCursor, error) {
	out := make([]NodeCursor, 0, len(in))
	for _, c := range in {
		cur, err := purge.ParseCursor(c.Cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, NodeCursor{Node: c.Node, Cursor: cur, Done: c.Done, RunID: c.ServerRunID})
	}
	return out, nil
}

func formatCursors(in []NodeCursor) []cachev1alpha1.ScanCursor {
	out := make([]cachev1alpha1.ScanCursor, 0, len(in))
	for _, c := range in {
		sc := cachev1alpha1.ScanCursor{Node: c.Node, Done: c.Done, ServerRunID: c.RunID}
		if !c.Done {
			sc.Cursor = purge.FormatCursor(c.Cursor)
		}
		out = append(out, sc)
	}
	return out
}

func describeRun(run *cachev1alpha1.InvalidationStatus) string {
	if len(run.Prefixes) > 0 {
		return fmt.Sprintf("prefixes %v", run.Prefixes)
	}
	return fmt.Sprintf("patterns %v", run.Patterns)
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
