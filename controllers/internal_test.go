package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/cacheplane/cacheplane/internal/redisconn"
)

func TestHitRatio(t *testing.T) {
	tests := []struct {
		hits, misses int64
		want         string
	}{
		{0, 0, ""},
		{1, 0, "100.0%"},
		{0, 7, "0.0%"},
		{948, 52, "94.8%"},
		{2, 1, "66.7%"},     // 66.66...: rounds half up
		{1, 2, "33.3%"},     // 33.33...
		{999, 1, "99.9%"},   // not rounded up to 100.0% before it is
		{9999, 1, "100.0%"}, // 99.99: rounds to 100.0%
		{1 << 40, 0, "100.0%"},
	}
	for _, tt := range tests {
		if got := HitRatio(tt.hits, tt.misses); got != tt.want {
			t.Errorf("HitRatio(%d, %d) = %q, want %q", tt.hits, tt.misses, got, tt.want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	for attempts, want := range map[int32]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 9: 256 * time.Second, 10: 5 * time.Minute, 1000: 5 * time.Minute} {
		if got := retryDelay(attempts); got != want {
			t.Errorf("retryDelay(%d) = %v, want %v", attempts, got, want)
		}
	}
}

type fakeStore struct {
	Store
	closed int
}

func (f *fakeStore) Close() error { f.closed++; return nil }

// Policies with one fingerprint share a store; the last one out closes it; a
// changed fingerprint moves the policy to a new store.
func TestStoreCacheSharesAndReleases(t *testing.T) {
	var opened []*fakeStore
	c := newStoreCache(func(redisconn.Options) (Store, error) {
		s := &fakeStore{}
		opened = append(opened, s)
		return s, nil
	})
	a, b := types.NamespacedName{Name: "a"}, types.NamespacedName{Name: "b"}
	sa, _ := c.get(a, "fp1", redisconn.Options{})
	sb, _ := c.get(b, "fp1", redisconn.Options{})
	if sa != sb || len(opened) != 1 {
		t.Fatalf("two policies on one connection opened %d stores", len(opened))
	}
	again, _ := c.get(a, "fp1", redisconn.Options{})
	if again != sa || len(opened) != 1 {
		t.Fatal("a repeated get opened a new store")
	}
	moved, _ := c.get(a, "fp2", redisconn.Options{})
	if moved == sa || len(opened) != 2 || opened[0].closed != 0 {
		t.Fatalf("moving a: %d stores opened, first closed %d times (b still uses it)", len(opened), opened[0].closed)
	}
	c.forget(b)
	if opened[0].closed != 1 {
		t.Errorf("last user gone, store closed %d times, want 1", opened[0].closed)
	}
	c.closeAll()
	if opened[1].closed != 1 {
		t.Errorf("closeAll closed the second store %d times", opened[1].closed)
	}
	if fingerprint([]byte("ab"), []byte("c")) == fingerprint([]byte("a"), []byte("bc")) {
		t.Error("fingerprint parts are not delimited")
	}
}
