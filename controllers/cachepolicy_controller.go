// Package controllers holds the CachePolicy reconciler: it publishes each
// policy into Redis, runs invalidations when a trigger fires, and reports
// connection, invalidation and hit-rate state in the policy's status.
package controllers

import (
	"cmp"
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Finalizer holds a policy until its deletionPolicy has been carried out.
const Finalizer = "cache.cacheplane.io/finalizer"

// CachePolicyReconciler reconciles CachePolicy objects.
type CachePolicyReconciler struct {
	client.Client
	// Recorder emits the Events of invalidation runs and connection problems.
	Recorder recorder.EventRecorder
	// OpenStore connects to a policy's Redis; NewRedisStore when nil.
	OpenStore StoreFactory
	// RunSlice bounds how long one reconcile spends purging before it saves its
	// checkpoint and requeues; 5s when zero.
	RunSlice time.Duration
	// MaxConcurrentReconciles is how many policies reconcile at once; 4 when zero.
	MaxConcurrentReconciles int
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// APIReader reads around the cache; the manager's when nil.
	APIReader client.Reader

	stores *storeCache
	// written maps a policy to the resourceVersion of our last write to it,
	// until the cache has caught up with that write (see fetch).
	written sync.Map
}

// +kubebuilder:rbac:groups=cache.cacheplane.io,resources=cachepolicies,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=cache.cacheplane.io,resources=cachepolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cache.cacheplane.io,resources=cachepolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile fetches the policy, ensures its finalizer, and hands it to the
// normal or deletion path; status is patched once, at the end, if it changed.
func (r *CachePolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	policy, err := r.fetch(ctx, req.NamespacedName)
	if err != nil {
		if apierrors.IsNotFound(err) {
			r.stores.forget(req.NamespacedName)
			r.written.Delete(req.NamespacedName)
			metricPolicies.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}

	if policy.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(policy, Finalizer) {
		patch := client.MergeFrom(policy.DeepCopy())
		controllerutil.AddFinalizer(policy, Finalizer)
		if err := r.Patch(ctx, policy, patch); err != nil {
			return ctrl.Result{}, err
		}
		r.written.Store(req.NamespacedName, policy.ResourceVersion)
	}

	s := r.newScope(ctx, policy)
	before := policy.Status.DeepCopy()
	defer func() {
		s.finish()
		if !equality.Semantic.DeepEqual(*before, policy.Status) {
			base := policy.DeepCopy()
			base.Status = *before
			if err := r.Status().Patch(ctx, policy, client.MergeFrom(base)); err != nil {
				if !apierrors.IsNotFound(err) {
					retErr = err
				}
			} else {
				r.written.Store(req.NamespacedName, policy.ResourceVersion)
			}
		}
		result = s.result()
		if s.deleted {
			metricPolicies.forget(req.NamespacedName)
		} else {
			metricPolicies.observe(policy)
		}
	}()

	if !policy.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, s)
	}
	r.reconcileNormal(ctx, s)
	return ctrl.Result{}, nil
}

// fetch reads the policy from the cache, unless the cache has not yet seen our
// last write to it: a run's checkpoint is written and the run requeued within
// milliseconds, and acting on the status before that write would redo work
// (or a generation bump). Then it reads from the API server.
func (r *CachePolicyReconciler) fetch(ctx context.Context, key types.NamespacedName) (*cachev1alpha1.CachePolicy, error) {
	policy := &cachev1alpha1.CachePolicy{}
	if err := r.Get(ctx, key, policy); err != nil {
		return nil, err
	}
	rv, ok := r.written.Load(key)
	if !ok || rv == policy.ResourceVersion {
		r.written.Delete(key)
		return policy, nil
	}
	cached := policy.ResourceVersion
	if err := r.APIReader.Get(ctx, key, policy); err != nil {
		return nil, err
	}
	if policy.ResourceVersion == cached {
		r.written.Delete(key) // the cache holds the newest version after all
	}
	return policy, nil
}

// reconcileNormal connects, publishes the policy, advances or starts an
// invalidation, and syncs stats. Problems end up in conditions and requeues,
// not in errors: a policy whose Redis is down is a state, not a failure.
func (r *CachePolicyReconciler) reconcileNormal(ctx context.Context, s *scope) {
	if !r.keyPrefixUsable(s) {
		return
	}
	adoptInitialToken(s)
	if !r.connect(ctx, s) || !r.publishPolicy(ctx, s) {
		r.runBlocked(s)
		return
	}
	r.reconcileInvalidation(ctx, s)
	r.syncStats(ctx, s)
}

// reconcileDelete carries out the deletion policy, then lets the object go.
func (r *CachePolicyReconciler) reconcileDelete(ctx context.Context, s *scope) error {
	p := s.policy
	if !controllerutil.ContainsFinalizer(p, Finalizer) {
		return nil
	}
	// A key prefix the API server would refuse today (stored before its rule
	// existed) may reach another tenant's keys: nothing is purged with it.
	if r.keyPrefixUsable(s) && !r.cleanUpRedis(ctx, s) {
		return nil
	}
	base := p.DeepCopy()
	controllerutil.RemoveFinalizer(p, Finalizer)
	if err := r.Patch(ctx, p, client.MergeFrom(base)); err != nil {
		return err
	}
	r.stores.forget(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	s.deleted = true
	return nil
}

// SetupWithManager registers the controller: policies by generation (so the
// controller's own status writes never wake it), and the Secrets and ConfigMaps
// policies reference.
func (r *CachePolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.OpenStore == nil {
		r.OpenStore = NewRedisStore
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.stores == nil {
		r.stores = newStoreCache(r.OpenStore)
	}
	if err := indexReferences(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if err := mgr.Add(storeCloser{r.stores}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&cachev1alpha1.CachePolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.policiesReferencing(indexSecret))).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.policiesReferencing(indexConfigMap))).
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.MaxConcurrentReconciles, 4)}).
		Named("cachepolicy").
		Complete(r)
}

// storeCloser closes every Redis connection when the manager stops.
type storeCloser struct{ stores *storeCache }

func (c storeCloser) Start(ctx context.Context) error {
	<-ctx.Done()
	c.stores.closeAll()
	return nil
}

func (r *CachePolicyReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// keyPrefixUsable checks spec.keyPrefix with the rule the library and the CRD
// share. The API server enforces it on every write, but a policy stored
// before a rule was added (':' became invalid so that prefixes cannot nest)
// would publish into, and purge, keys of another tenant: it gets Ready=False
// and touches nothing in Redis.
func (r *CachePolicyReconciler) keyPrefixUsable(s *scope) bool {
	err := keyspace.ValidateKeyPrefix(s.policy.Spec.KeyPrefix)
	if err == nil {
		return true
	}
	s.keyPrefixErr = err
	if c := meta.FindStatusCondition(s.policy.Status.Conditions, cachev1alpha1.ConditionReady); c == nil || c.Reason != cachev1alpha1.ReasonInvalidKeyPrefix {
		r.event(s.policy, corev1.EventTypeWarning, cachev1alpha1.ReasonInvalidKeyPrefix, "Validate", err.Error())
	}
	return false
}
