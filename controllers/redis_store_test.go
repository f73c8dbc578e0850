package controllers

import (
	"context"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// SyncPolicy raises generations to the floors status remembers, atomically:
// it never lowers one the library bumped since status was written, and a lost
// generations hash comes back above every generation handed out before.
func TestSyncPolicyNeverLowersGenerations(t *testing.T) {
	ctx := context.Background()
	srv, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	store, err := NewRedisStore(redisconn.Options{URL: srv.URL(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rc := srv.Client()
	defer rc.Close()
	space := keyspace.New("sync")
	want := map[string]keyspace.PrefixPolicy{"users": {TTLMillis: 60000}}

	first, err := store.SyncPolicy(ctx, space, want, nil)
	if err != nil || first["users"] == 0 {
		t.Fatalf("first SyncPolicy = %v, %v; want a generation", first, err)
	}
	// The library invalidates users; status still holds the first value.
	lib, err := space.BumpGenerations(ctx, rc, []string{"users"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.SyncPolicy(ctx, space, want, first)
	if err != nil || got["users"] != lib["users"] {
		t.Errorf("SyncPolicy with the older floor = %v, %v; want the library's %d", got, err, lib["users"])
	}
	run, err := store.BumpGenerations(ctx, space, []string{"users"}, got)
	if err != nil || run["users"] <= lib["users"] {
		t.Errorf("a run's bump = %v, %v; want above %d", run, err, lib["users"])
	}
	// The hash is lost: it comes back above everything, floors or not.
	if err := rc.Del(ctx, space.GenKey()).Err(); err != nil {
		t.Fatal(err)
	}
	again, err := store.SyncPolicy(ctx, space, want, run)
	if err != nil || again["users"] <= run["users"] {
		t.Errorf("SyncPolicy after the hash was lost = %v, %v; want above %d", again, err, run["users"])
	}
	// The policy hash carries no generation for libraries to misread.
	raw := rc.HGet(ctx, space.PolicyKey(), "users").Val()
	if p, err := keyspace.ParsePrefixPolicy(raw); err != nil || p.Generation != 0 || p.TTLMillis != 60000 {
		t.Errorf("policy hash users = %q (%v)", raw, err)
	}
}
