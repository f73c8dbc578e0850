package controllers

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// scope is one reconcile of one policy: the object being changed, its Redis,
// and when to look at it again.
type scope struct {
	policy *cachev1alpha1.CachePolicy
	space  keyspace.Space
	store  Store // nil until connect succeeds
	now    time.Time
	log    logr.Logger

	// requeueAfter is the earliest time anything asked to be looked at again.
	requeueAfter time.Duration
	// scheduleErr is why spec.invalidation.schedule cannot be used, if it cannot.
	scheduleErr error
	// keyPrefixErr is why spec.keyPrefix must not be used, if it must not.
	keyPrefixErr error
	// deleted: the finalizer is gone, nothing more to requeue.
	deleted bool
}

func (r *CachePolicyReconciler) newScope(ctx context.Context, p *cachev1alpha1.CachePolicy) *scope {
	return &scope{
		policy: p,
		space:  keyspace.New(p.Spec.KeyPrefix).InDB(redisconn.DB(p.Spec.Redis.URL)),
		now:    r.now(),
		log:    log.FromContext(ctx),
	}
}

// requeue asks for another reconcile within d.
func (s *scope) requeue(d time.Duration) {
	if d <= 0 {
		d = time.Millisecond
	}
	if s.requeueAfter == 0 || d < s.requeueAfter {
		s.requeueAfter = d
	}
}

func (s *scope) result() ctrl.Result {
	if s.deleted {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}
}

// setCondition records a condition at the policy's current generation.
func (s *scope) setCondition(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&s.policy.Status.Conditions, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             reason,
		Message:            message,
		ObservedGeneration: s.policy.Generation,
	})
}

// finish derives Ready from the other conditions and the invalidation state,
// and marks the generation observed.
func (s *scope) finish() {
	st := &s.policy.Status
	st.ObservedGeneration = s.policy.Generation
	status, reason, msg := metav1.ConditionTrue, cachev1alpha1.ReasonReconciled, "policy published to Redis"
	if s.keyPrefixErr != nil {
		s.setCondition(cachev1alpha1.ConditionReady, metav1.ConditionFalse, cachev1alpha1.ReasonInvalidKeyPrefix,
			s.keyPrefixErr.Error()+"; this policy touches nothing in Redis: create a new CachePolicy with a valid keyPrefix and delete this one")
		return
	}
	for _, typ := range []string{cachev1alpha1.ConditionRedisConnected, cachev1alpha1.ConditionWatchesResolved} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c != nil && c.Status != metav1.ConditionTrue {
			status, reason, msg = metav1.ConditionFalse, c.Reason, c.Message
			break
		}
	}
	if status == metav1.ConditionTrue {
		if run := st.LastInvalidation; run != nil && run.Phase == cachev1alpha1.InvalidationFailed {
			status, reason, msg = metav1.ConditionFalse, cachev1alpha1.ReasonInvalidationFailed, run.Message
		}
	}
	if status == metav1.ConditionTrue && s.scheduleErr != nil {
		status, reason, msg = metav1.ConditionFalse, cachev1alpha1.ReasonInvalidSchedule, s.scheduleErr.Error()
	}
	s.setCondition(cachev1alpha1.ConditionReady, status, reason, msg)
}
