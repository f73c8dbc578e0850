// Package v1alpha1 contains the v1alpha1 API of the cache.cacheplane.io group:
// the CachePolicy kind, which declares how a Redis cache shared by workloads is
// keyed, expired, invalidated and measured.
//
// +kubebuilder:object:generate=true
// +groupName=cache.cacheplane.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "cache.cacheplane.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this package's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
