package controllers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// checkWatches compares each watched ConfigMap's or Secret's data with what
// status remembers. The first sight of an object is adopted (no invalidation);
// a later change of its data (not its metadata) returns a run of its prefixes,
// recorded as seen only when consume is true. Missing objects set
// WatchesResolved=False; they are not errors.
func (r *CachePolicyReconciler) checkWatches(ctx context.Context, s *scope, consume bool) *cachev1alpha1.InvalidationStatus {
	p := s.policy
	watches := p.Spec.Invalidation.Watch
	if len(watches) == 0 {
		p.Status.Watched = nil
		meta.RemoveStatusCondition(&p.Status.Conditions, cachev1alpha1.ConditionWatchesResolved)
		return nil
	}
	var missing []string
	var next *cachev1alpha1.InvalidationStatus
	seen := make([]cachev1alpha1.WatchedObjectStatus, 0, len(watches))
	for _, w := range watches {
		prev := findWatched(p.Status.Watched, w.Kind, w.Name)
		hash, found, err := r.watchedDataHash(ctx, p, w)
		if err != nil || !found {
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s/%s (%v)", w.Kind, w.Name, err))
			} else {
				missing = append(missing, fmt.Sprintf("%s/%s", w.Kind, w.Name))
			}
			if prev != nil {
				seen = append(seen, *prev) // keep the last known data: its return is a change only if it differs
			}
			continue
		}
		cur := cachev1alpha1.WatchedObjectStatus{Kind: w.Kind, Name: w.Name, DataHash: hash}
		switch {
		case prev == nil:
			seen = append(seen, cur) // adopt
		case prev.DataHash == hash:
			seen = append(seen, cur)
		case consume && next == nil:
			sel := selection{prefixes: w.Prefixes}
			if len(sel.prefixes) == 0 {
				sel.prefixes = declaredPrefixes(p)
			}
			next = r.newRun(s, cachev1alpha1.WatchTrigger(w.Kind, w.Name), sel)
			seen = append(seen, cur)
		default:
			seen = append(seen, *prev) // changed, but its run has to wait
		}
	}
	p.Status.Watched = seen
	if len(missing) > 0 {
		s.setCondition(cachev1alpha1.ConditionWatchesResolved, metav1.ConditionFalse, cachev1alpha1.ReasonWatchedObjectNotFound,
			"watched objects not found: "+strings.Join(missing, ", ")+"; their invalidations run once they exist and change")
	} else {
		s.setCondition(cachev1alpha1.ConditionWatchesResolved, metav1.ConditionTrue, cachev1alpha1.ReasonWatchesFound,
			fmt.Sprintf("watching %d objects", len(watches)))
	}
	return next
}

func declaredPrefixes(p *cachev1alpha1.CachePolicy) []string {
	out := make([]string, 0, len(p.Spec.Prefixes))
	for _, d := range p.Spec.Prefixes {
		out = append(out, d.Name)
	}
	return out
}

func findWatched(list []cachev1alpha1.WatchedObjectStatus, kind cachev1alpha1.WatchKind, name string) *cachev1alpha1.WatchedObjectStatus {
	for i := range list {
		if list[i].Kind == kind && list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// watchedDataHash hashes a watched object's data. The hash is keyed with the
// policy's UID and truncated, so status never carries a plain digest of a
// Secret that could be checked against guessed values elsewhere.
func (r *CachePolicyReconciler) watchedDataHash(ctx context.Context, p *cachev1alpha1.CachePolicy, w cachev1alpha1.WatchSpec) (string, bool, error) {
	key := types.NamespacedName{Namespace: p.Namespace, Name: w.Name}
	data := map[string][]byte{}
	var obj client.Object
	switch w.Kind {
	case cachev1alpha1.WatchKindSecret:
		obj = &corev1.Secret{}
	default:
		obj = &corev1.ConfigMap{}
	}
	if err := r.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return "", false, nil
		}
		return "", false, err
	}
	switch o := obj.(type) {
	case *corev1.Secret:
		data = o.Data
	case *corev1.ConfigMap:
		for k, v := range o.Data {
			data["s/"+k] = []byte(v)
		}
		for k, v := range o.BinaryData {
			data["b/"+k] = v
		}
	}
	mac := hmac.New(sha256.New, []byte(p.UID))
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(mac, "%d:%s%d:", len(k), k, len(data[k]))
		mac.Write(data[k])
	}
	return hex.EncodeToString(mac.Sum(nil)[:16]), true, nil
}

// cronParser accepts the standard five fields and the @hourly-style descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// checkSchedule keeps nextScheduleTime current and returns a run when a tick
// is due. Ticks missed while the manager was down collapse into one run.
func (r *CachePolicyReconciler) checkSchedule(s *scope, consume bool) *cachev1alpha1.InvalidationStatus {
	p := s.policy
	expr := p.Spec.Invalidation.Schedule
	if expr == "" {
		p.Status.NextScheduleTime = nil
		return nil
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		s.scheduleErr = fmt.Errorf("spec.invalidation.schedule %q is not a valid cron expression: %v", expr, err)
		return nil
	}
	from := p.CreationTimestamp.Time
	if p.Status.LastScheduleTime != nil {
		from = p.Status.LastScheduleTime.Time
	}
	due := sched.Next(from)
	var run *cachev1alpha1.InvalidationStatus
	if !due.After(s.now) && consume {
		last := due
		for i := 0; i < 10000; i++ { // find the latest missed tick
			n := sched.Next(last)
			if n.After(s.now) {
				break
			}
			last = n
		}
		lt := metav1.NewTime(last)
		p.Status.LastScheduleTime = &lt
		run = r.newRun(s, cachev1alpha1.TriggerSchedule, tokenSelection(&p.Spec))
		due = sched.Next(last)
	}
	nt := metav1.NewTime(due)
	p.Status.NextScheduleTime = &nt
	s.requeue(max(due.Sub(s.now), time.Millisecond))
	return run
}
