// Package v1alpha1 contains the v1alpha1 API of the cache.cacheplane.io group:
// the CachePolicy kind, which declares how a Redis cache shared by workloads is
// keyed, expired, invalidated and measured.
//
// +kubebuilder:object:generate=true
// +groupName=cache.cacheplane.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "cache.cacheplane.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme. It
	// is apimachinery's builder, not controller-runtime's (deprecated for API
	// packages), so importing the API does not pull in controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers CachePolicy and CachePolicyList under GroupVersion,
// with the meta types (ListOptions and the like) every group needs.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &CachePolicy{}, &CachePolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
