package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

func TestQuotePattern(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	ids := []string{"*", "1", "2", "a?", "[ab]", `x\`, "\xff*"}
	for _, id := range ids {
		if err := c.Set(ctx, "user:"+id+":profile", id, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		n, err := c.Invalidate(ctx, "user:"+cache.QuotePattern(id)+":*")
		if err != nil || n != 1 {
			t.Fatalf("Invalidate of user %q's keys deleted %d, %v; want exactly its own key", id, n, err)
		}
		if found, _ := c.Get(ctx, "user:"+id+":profile", nil); found {
			t.Errorf("user %q's key survived its invalidation", id)
		}
	}
	if got := cache.QuotePattern(`a*b?c[d]e\f`); got != `a\*b\?c\[d\]e\\f` {
		t.Errorf("QuotePattern = %q", got)
	}
}

// QuotePattern keeps a user-supplied id from widening an invalidation: with
// id "*" unquoted, the pattern would match every user.
func ExampleQuotePattern() {
	ctx := context.Background()
	c := connect("example-quote")
	defer c.Close()

	for _, id := range []string{"*", "42"} {
		if err := c.Set(ctx, "user:"+id+":profile", "...", time.Minute); err != nil {
			log.Fatal(err)
		}
	}
	id := "*" // from a request
	n, err := c.Invalidate(ctx, "user:"+cache.QuotePattern(id)+":*")
	if err != nil {
		log.Fatal(err)
	}
	found, _ := c.Get(ctx, "user:42:profile", nil)
	fmt.Println(n, found)
	// Output: 1 true
}

func TestNegativeTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	if err := c.Set(ctx, "neg:1", "v", -time.Second); !errors.Is(err, cache.ErrInvalidTTL) {
		t.Errorf("Set with ttl -1s = %v, want ErrInvalidTTL", err)
	}
	if ok, err := c.Exists(ctx, "neg:1"); ok || err != nil {
		t.Errorf("Set with a negative ttl stored the key (Exists = %v, %v)", ok, err)
	}
	if err := c.Set(ctx, "neg:2", "v", 0); err != nil {
		t.Errorf("Set with ttl 0 (the default): %v", err)
	}

	calls := 0
	load := func(context.Context) (int, error) { calls++; return 1, nil }
	for _, cc := range []*cache.Cache{c, nil} { // a nil cache rejects it too
		if _, err := cache.GetOrLoad(ctx, cc, "neg:3", -time.Minute, load); !errors.Is(err, cache.ErrInvalidTTL) {
			t.Errorf("GetOrLoad with a negative ttl = %v, want ErrInvalidTTL", err)
		}
		cached := cache.Cached(cc, "neg", -time.Minute, nil, func(_ context.Context, a int) (int, error) { return load(ctx) })
		if _, err := cached(ctx, 1); !errors.Is(err, cache.ErrInvalidTTL) {
			t.Errorf("Cached with a negative ttl = %v, want ErrInvalidTTL", err)
		}
	}
	if calls != 0 {
		t.Errorf("loads ran %d times with a negative ttl, want 0", calls)
	}
	if ok, _ := c.Exists(ctx, "neg:3"); ok {
		t.Error("GetOrLoad with a negative ttl stored the key")
	}

	// A middleware cannot return an error: it panics when built, like
	// http.ServeMux given a bad pattern, so the mistake shows at startup.
	for _, cc := range []*cache.Cache{c, nil} {
		func() {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, cache.ErrInvalidTTL) {
					t.Errorf("HTTPMiddleware with a negative ttl: recovered %v, want a panic with ErrInvalidTTL", err)
				}
			}()
			cache.HTTPMiddleware(cc, "neg", -time.Second)(http.NotFoundHandler())
		}()
	}
}

func TestTTLNoExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	rc := rawClient(t)
	if err := rc.Set(ctx, testPrefix(t)+":k:forever", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d, err := c.TTL(ctx, "k:forever")
	if err != nil || d != cache.NoExpiry {
		t.Errorf("TTL of a key without expiry = %v, %v; want NoExpiry (%v)", d, err, cache.NoExpiry)
	}
	if err := c.Set(ctx, "k:1", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if d, err := c.TTL(ctx, "k:1"); err != nil || d == cache.NoExpiry || d <= 0 {
		t.Errorf("TTL of a key with expiry = %v, %v", d, err)
	}
}
