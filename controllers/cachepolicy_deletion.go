package controllers

import (
	"context"
	"fmt"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// cleanUpRedis carries out spec.deletionPolicy and reports whether the
// finalizer may go. Purge deletes every declared prefix's keys (resumably, like
// any run) and the control keys; Retain keeps the data and only withdraws the
// published policy. With Retain an unreachable Redis does not hold the object;
// with Purge it does, and the conditions say why (switch to Retain to let go).
func (r *CachePolicyReconciler) cleanUpRedis(ctx context.Context, s *scope) bool {
	p := s.policy
	purging := p.Spec.DeletionPolicy == cachev1alpha1.DeletionPolicyPurge
	if !r.connect(ctx, s) {
		return !purging
	}
	var statsOf []string
	if purging {
		run := p.Status.LastInvalidation
		if run == nil || run.Trigger != TriggerDeletion {
			// An unfinished run of another trigger is superseded: this one
			// covers every declared prefix.
			sel := selection{}
			for _, d := range p.Spec.Prefixes {
				sel.prefixes = append(sel.prefixes, d.Name)
			}
			if !r.startRun(ctx, s, r.newRun(s, TriggerDeletion, sel)) {
				return false
			}
		}
		if p.Status.LastInvalidation.Phase != cachev1alpha1.InvalidationComplete {
			r.advanceRun(ctx, s)
			if p.Status.LastInvalidation.Phase != cachev1alpha1.InvalidationComplete {
				return false
			}
		}
		statsOf = p.Status.LastInvalidation.Prefixes
	}
	cctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := s.store.DeletePolicy(cctx, s.space, statsOf); err != nil {
		r.redisDown(s, cachev1alpha1.ReasonRedisUnreachable, fmt.Errorf("withdraw policy: %w", err))
		return !purging
	}
	return true
}
