package cache_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// TestNestedKeyPrefixEscape reproduces issue 9 item 2: tenant "a" read and
// invalidated the keys of tenant "a:b" (its Get("b:users:1") is "a:b:users:1").
// Key prefixes can no longer nest because New rejects the inner one; should
// it ever accept it again, the test shows the escape it reopens.
func TestNestedKeyPrefixEscape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	outer := testPrefix(t)
	inner := outer + ":b"
	a := newCache(t, cache.Config{KeyPrefix: outer})

	b, err := cache.New(cache.Config{URL: srv.URL(0), KeyPrefix: inner})
	if err == nil {
		defer b.Close()
		if err := b.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Set(ctx, "users:1", "tenant b's secret", time.Hour); err != nil {
			t.Fatal(err)
		}
		var got string
		if found, err := a.Get(ctx, "b:users:1", &got); err != nil || found {
			t.Errorf("tenant %q read tenant %q's key users:1 as b:users:1: found=%v value=%q err=%v", outer, inner, found, got, err)
		}
		if n, err := a.Invalidate(ctx, "b:*"); err != nil || n != 0 {
			t.Errorf("tenant %q's Invalidate(\"b:*\") deleted %d keys of tenant %q (err %v)", outer, n, inner, err)
		}
		t.Fatalf("New accepted KeyPrefix %q, which nests inside KeyPrefix %q", inner, outer)
	}
	for _, want := range []string{"Config.KeyPrefix", "':' is not allowed", "cannot nest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(KeyPrefix %q): %q does not contain %q", inner, err, want)
		}
	}
}

// TestNewRejectsWhatTheCRDRejects: New applies keyspace.ValidateKeyPrefix
// (whose agreement with the CRD api/v1alpha1's tests check) to every
// non-empty KeyPrefix, before anything dials.
func TestNewRejectsWhatTheCRDRejects(t *testing.T) {
	t.Parallel()
	for _, kp := range []string{
		"a:b", "shop:", ":shop", "shop*", "shop?", "shop[1]", `shop\x`, "{shop}", "my shop", "shop\t",
		"caf\u00e9", "\xffshop", strings.Repeat("k", keyspace.MaxKeyPrefixLen+1),
	} {
		_, err := cache.New(cache.Config{URL: "redis://127.0.0.1:1/0", KeyPrefix: kp})
		want := keyspace.ValidateKeyPrefix(kp)
		if err == nil || want == nil || !strings.Contains(err.Error(), want.Error()) {
			t.Errorf("New(KeyPrefix %q) = %v, want the error %q", kp, err, want)
		}
	}
	for _, kp := range []string{"", "shop", "team-a/shop", "shop.v2_eu", strings.Repeat("k", keyspace.MaxKeyPrefixLen)} {
		if _, err := cache.New(cache.Config{URL: "redis://127.0.0.1:1/0", KeyPrefix: kp}); err != nil {
			t.Errorf("New(KeyPrefix %q): %v", kp, err)
		}
	}
}

// TestEmptyKeyPrefixReachesPrefixedTenants pins down what Config.KeyPrefix
// documents: an unprefixed cache is not isolated from prefixed ones (it is
// the whole database), so isolation is promised only among prefixed caches.
func TestEmptyKeyPrefixReachesPrefixedTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	tenant := newCache(t, cache.Config{KeyPrefix: kp})
	if err := tenant.Set(ctx, "users:1", "v", time.Hour); err != nil {
		t.Fatal(err)
	}
	// Built by hand: newCache would fill in a KeyPrefix. Read-only, and
	// without policy or stats, so it leaves the shared database as it is.
	bare, err := cache.New(cache.Config{URL: srv.URL(0), PolicyRefresh: -1, StatsFlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if err := bare.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	var got string
	if found, err := bare.Get(ctx, kp+":users:1", &got); err != nil || !found || got != "v" {
		t.Fatalf("unprefixed Get(%q) = %v %q %v; Config.KeyPrefix says it reaches the tenant's key", kp+":users:1", found, got, err)
	}
}
