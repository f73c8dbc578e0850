package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// Field indexes of CachePolicy by the objects it references, so a Secret or
// ConfigMap event wakes exactly the policies that use it.
const (
	indexSecret    = "cacheplane.secretRefs"
	indexConfigMap = "cacheplane.configMapRefs"
)

func indexReferences(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &cachev1alpha1.CachePolicy{}, indexSecret, func(o client.Object) []string {
		p := o.(*cachev1alpha1.CachePolicy)
		var names []string
		if ref := p.Spec.Redis.PasswordSecretRef; ref != nil {
			names = append(names, ref.Name)
		}
		if t := p.Spec.Redis.TLS; t != nil {
			if t.CASecretRef != nil {
				names = append(names, t.CASecretRef.Name)
			}
			if t.ClientCertSecretRef != nil {
				names = append(names, t.ClientCertSecretRef.Name)
			}
		}
		return append(names, watchedNames(p, cachev1alpha1.WatchKindSecret)...)
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &cachev1alpha1.CachePolicy{}, indexConfigMap, func(o client.Object) []string {
		return watchedNames(o.(*cachev1alpha1.CachePolicy), cachev1alpha1.WatchKindConfigMap)
	})
}

func watchedNames(p *cachev1alpha1.CachePolicy, kind cachev1alpha1.WatchKind) []string {
	var names []string
	for _, w := range p.Spec.Invalidation.Watch {
		if w.Kind == kind {
			names = append(names, w.Name)
		}
	}
	return names
}

// policiesReferencing maps a Secret or ConfigMap to the policies in its
// namespace that reference it through the given index.
func (r *CachePolicyReconciler) policiesReferencing(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []ctrl.Request {
		var list cachev1alpha1.CachePolicyList
		if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			return nil
		}
		reqs := make([]ctrl.Request, 0, len(list.Items))
		for _, p := range list.Items {
			reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}})
		}
		return reqs
	}
}
