package cache_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestACL runs the cache as an ACL user that may touch only its own key
// prefix (redistest.CacheUser): the whole API works with those rights, and
// Redis really refuses what lies outside them.
func TestACL(t *testing.T) {
	const kp = "myapp"
	u := redistest.CacheUser("app", "app-password", kp)
	s, err := redistest.Start(u.Args()...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	cfg := cache.Config{URL: s.URL(0), Username: u.Name, Password: u.Password, KeyPrefix: kp, DefaultTTL: time.Minute}

	t.Run("API", func(t *testing.T) {
		c := connectTopology(t, cfg)
		exerciseAPI(t, c, newTopoOperator(t, s.Client(), kp))
		c.Close() // its last stats flush and disconnect are checked too
		noACLDenials(t, u.Name, s)
	})

	t.Run("OutsideThePrefix", func(t *testing.T) {
		c := connectTopology(t, cfg)
		for _, key := range []string{"other:user:1", "myappx:user:1", "{cacheplane:other}:policy"} {
			err := c.Client().Set(ctx, key, "v", 0).Err()
			if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
				t.Errorf("SET %q as %s: err = %v, want NOPERM", key, u.Name, err)
			}
		}
		if err := c.Client().Publish(ctx, "{cacheplane:other}:events", "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("PUBLISH to another tenant's channel: err = %v, want NOPERM", err)
		}
		if err := c.Client().FlushAll(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("FLUSHALL: err = %v, want NOPERM", err)
		}
	})

	t.Run("AnotherTenantsPrefix", func(t *testing.T) {
		// The same user with a KeyPrefix it does not own: every Redis call is
		// refused, and the loaders still serve (fail open).
		other := cfg
		other.KeyPrefix = "other"
		c := connectTopology(t, other)
		if err := c.Set(ctx, "user:1", 1, 0); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("Set under another tenant's prefix: err = %v, want NOPERM", err)
		}
		v, err := cache.GetOrLoad(ctx, c, "user:1", 0, func(context.Context) (string, error) { return "loaded", nil })
		if v != "loaded" || err != nil {
			t.Errorf("GetOrLoad = %q, %v; want the loader's value", v, err)
		}
		if n := c.Stats().Errors; n < 2 {
			t.Errorf("%d errors counted, want the refused Set and Get", n)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		bad := cfg
		bad.Password = "not-the-password"
		c, err := cache.New(bad)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Connect(ctx)
		if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
			t.Fatalf("Connect with a wrong password: err = %v, want WRONGPASS", err)
		}
		if strings.Contains(err.Error(), bad.Password) {
			t.Errorf("Connect's error %q shows the password", err)
		}
	})
}
