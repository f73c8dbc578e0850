package v1alpha1

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func TestTTLFor(t *testing.T) {
	prefixes := []PrefixSpec{
		{Name: "users", TTL: dur(10 * time.Minute)},
		{Name: "products"},
		{Name: "zero", TTL: dur(0)},
	}
	tests := []struct {
		name       string
		defaultTTL time.Duration
		prefix     string
		want       time.Duration
	}{
		{"prefix ttl wins over defaultTTL", time.Hour, "users", 10 * time.Minute},
		{"prefix without ttl gets defaultTTL", time.Hour, "products", time.Hour},
		{"zero prefix ttl counts as unset", time.Hour, "zero", time.Hour},
		{"undeclared prefix gets defaultTTL", time.Hour, "orders", time.Hour},
		{"undefaulted object gets the API default", 0, "products", DefaultDefaultTTL},
		{"prefix ttl without defaultTTL", 0, "users", 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &CachePolicy{Spec: CachePolicySpec{
				DefaultTTL: metav1.Duration{Duration: tt.defaultTTL},
				Prefixes:   prefixes,
			}}
			if got := p.TTLFor(tt.prefix); got != tt.want {
				t.Errorf("TTLFor(%q) = %v, want %v", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestInvalidationPrefixes(t *testing.T) {
	declared := []PrefixSpec{{Name: "users"}, {Name: "products"}, {Name: "orders"}}
	tests := []struct {
		name     string
		prefixes []PrefixSpec
		explicit []string
		want     []string
	}{
		{"explicit list", declared, []string{"orders", "users"}, []string{"orders", "users"}},
		{"empty list means every declared prefix, in order", declared, nil, []string{"users", "products", "orders"}},
		{"empty non-nil list too", declared, []string{}, []string{"users", "products", "orders"}},
		{"nothing declared", nil, nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &CachePolicySpec{Prefixes: tt.prefixes, Invalidation: InvalidationSpec{Prefixes: tt.explicit}}
			got := s.InvalidationPrefixes()
			if !slices.Equal(got, tt.want) || got == nil {
				t.Errorf("InvalidationPrefixes() = %#v, want %#v", got, tt.want)
			}
		})
	}
}

// The controller sorts and filters the result; that must not rewrite the spec.
func TestInvalidationPrefixesReturnsACopy(t *testing.T) {
	s := &CachePolicySpec{
		Prefixes:     []PrefixSpec{{Name: "users"}, {Name: "products"}},
		Invalidation: InvalidationSpec{Prefixes: []string{"users", "products"}},
	}
	got := s.InvalidationPrefixes()
	got[0] = "changed"
	if s.Invalidation.Prefixes[0] != "users" {
		t.Fatalf("modifying the result changed spec.invalidation.prefixes to %v", s.Invalidation.Prefixes)
	}
}

func TestWatchTrigger(t *testing.T) {
	if got := WatchTrigger(WatchKindConfigMap, "flags"); got != "ConfigMap/flags" {
		t.Errorf("WatchTrigger(ConfigMap, flags) = %q", got)
	}
	if got := WatchTrigger(WatchKindSecret, "creds"); got != "Secret/creds" {
		t.Errorf("WatchTrigger(Secret, creds) = %q", got)
	}
}
