package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// operator plays the controller's part of the Redis contract with a raw client.
type operator struct {
	t     *testing.T
	rc    *redis.Client
	space keyspace.Space
}

func newOperator(t *testing.T, keyPrefix string) *operator {
	return &operator{t: t, rc: rawClient(t), space: keyspace.New(keyPrefix)}
}

// setPolicy writes prefix's TTL into the policy hash; gen > 0 also raises its
// generation by gen in the generations hash, quietly (no event), and
// returns the new generation (otherwise the current one).
func (o *operator) setPolicy(prefix string, ttl time.Duration, gen int64) int64 {
	o.t.Helper()
	p := keyspace.PrefixPolicy{TTLMillis: ttl.Milliseconds()}
	if err := o.rc.HSet(context.Background(), o.space.PolicyKey(), prefix, p.Marshal()).Err(); err != nil {
		o.t.Fatal(err)
	}
	cur := o.generation(prefix)
	if gen <= 0 {
		return cur
	}
	if err := o.rc.HSet(context.Background(), o.space.GenKey(), prefix, cur+gen).Err(); err != nil {
		o.t.Fatal(err)
	}
	return cur + gen
}

// generation returns prefix's generation in the generations hash (creating
// its base if need be, as a Cache would).
func (o *operator) generation(prefix string) int64 {
	o.t.Helper()
	g, err := keyspace.ParseGenerations(o.space.EnsureGenerations(context.Background(), o.rc))
	if err != nil {
		o.t.Fatal(err)
	}
	return g.Of(prefix)
}

// bump invalidates prefix as the operator's runs do (the script publishes
// the new generation) and returns the new generation.
func (o *operator) bump(prefix string) int64 {
	o.t.Helper()
	g, err := o.space.BumpGenerations(context.Background(), o.rc, []string{prefix}, nil)
	if err != nil {
		o.t.Fatal(err)
	}
	return g[prefix]
}

// setPolicyEntry writes one prefix's policy field as the controller does.
func (o *operator) setPolicyEntry(prefix string, p keyspace.PrefixPolicy) {
	o.t.Helper()
	if err := o.rc.HSet(context.Background(), o.space.PolicyKey(), prefix, p.Marshal()).Err(); err != nil {
		o.t.Fatal(err)
	}
}

// publish publishes ev; an invalidated event is made a real bump of its
// prefix (its Generation is ignored), as generations come from the server's
// clock.
func (o *operator) publish(ev keyspace.Event) {
	o.t.Helper()
	if ev.Type == keyspace.EventInvalidated {
		o.bump(ev.Prefix)
		return
	}
	if err := o.rc.Publish(context.Background(), o.space.EventsChannel(), ev.Marshal()).Err(); err != nil {
		o.t.Fatal(err)
	}
}

// waitSubscribed waits until n caches listen on the events channel, so that
// a publish cannot slip in before a subscription.
func (o *operator) waitSubscribed(n int64) {
	o.t.Helper()
	ch := o.space.EventsChannel()
	waitFor(o.t, 10*time.Second, "the cache to subscribe", func() bool {
		return o.rc.PubSubNumSub(context.Background(), ch).Val()[ch] >= n
	})
}

// storedGeneration returns the generation in the entry stored under key.
func (o *operator) storedGeneration(key string) int64 {
	o.t.Helper()
	b, err := o.rc.Get(context.Background(), o.space.DataKey(key)).Bytes()
	if err != nil {
		o.t.Fatalf("raw GET %s: %v", key, err)
	}
	gen, _, err := keyspace.ParseEntry(b)
	if err != nil {
		o.t.Fatal(err)
	}
	return gen
}

func ttlOf(t *testing.T, c *cache.Cache, key string) time.Duration {
	t.Helper()
	d, err := c.TTL(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func hit(c *cache.Cache, key string) bool {
	found, _ := c.Get(context.Background(), key, nil)
	return found
}

func TestPolicyEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	op := newOperator(t, kp)
	op.setPolicy("user", time.Hour, 0) // present before Connect: applies at once

	// An hour-long fallback refresh: everything below must come from events.
	c := newCache(t, cache.Config{KeyPrefix: kp, DefaultTTL: time.Minute, PolicyRefresh: time.Hour})
	if err := c.Set(ctx, "user:1", "old", 0); err != nil {
		t.Fatal(err)
	}
	if d := ttlOf(t, c, "user:1"); d <= 59*time.Minute {
		t.Errorf("TTL right after Connect = %v, want the policy's 1h", d)
	}
	_ = c.Set(ctx, "order:1", "o", 0)
	if d := ttlOf(t, c, "order:1"); d > time.Minute {
		t.Errorf("prefix without policy: TTL %v, want DefaultTTL 1m", d)
	}
	_ = c.Set(ctx, "user:explicit", "e", 10*time.Second)
	if d := ttlOf(t, c, "user:explicit"); d > 10*time.Second {
		t.Errorf("explicit ttl: %v, want 10s (explicit beats policy)", d)
	}
	op.waitSubscribed(1)

	// A changed TTL reaches new writes.
	op.setPolicy("user", 2*time.Hour, 0)
	op.publish(keyspace.Event{Type: keyspace.EventPolicyChanged})
	waitFor(t, 5*time.Second, "the new TTL", func() bool {
		_ = c.Set(ctx, "user:probe", 1, 0)
		return ttlOf(t, c, "user:probe") > 119*time.Minute
	})

	// An invalidation: old entries turn into misses at once, other prefixes
	// keep theirs, and new entries carry the new generation.
	if !hit(c, "user:1") || !hit(c, "order:1") {
		t.Fatal("entries missing before the invalidation")
	}
	start := time.Now()
	bumped := op.bump("user")
	waitFor(t, 5*time.Second, "user:1 to turn stale", func() bool { return !hit(c, "user:1") })
	t.Logf("invalidation visible after %v", time.Since(start))
	if !hit(c, "order:1") {
		t.Error("invalidating user made order:1 a miss")
	}
	if ok, _ := c.Exists(ctx, "user:1"); !ok {
		t.Error("the stale entry was deleted; generations should make deleting unnecessary")
	}
	_ = c.Set(ctx, "user:1", "new", 0)
	if gen := op.storedGeneration("user:1"); gen != bumped {
		t.Errorf("new entry has generation %d, want %d", gen, bumped)
	}
	var v string
	if found, _ := c.Get(ctx, "user:1", &v); !found || v != "new" {
		t.Errorf("entry written after the invalidation: %v, %q", found, v)
	}

	// Generations never go back, even if the hash does.
	op.setPolicy("user", 0, 0)
	if err := op.rc.HSet(ctx, op.space.GenKey(), "user", 1).Err(); err != nil {
		t.Fatal(err)
	}
	op.publish(keyspace.Event{Type: keyspace.EventPolicyChanged})
	waitFor(t, 5*time.Second, "the TTL to fall back to DefaultTTL", func() bool {
		_ = c.Set(ctx, "user:probe2", 1, 0)
		return ttlOf(t, c, "user:probe2") <= time.Minute
	})
	if gen := op.storedGeneration("user:probe2"); gen != bumped {
		t.Errorf("generation went from %d to %d", bumped, gen)
	}
	// And the cache restores what the hash lost, for every other process.
	if gen := op.generation("user"); gen != bumped {
		t.Errorf("generations hash holds %d for user after the re-read, want %d restored", gen, bumped)
	}
}

func TestPolicyFallbackRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	op := newOperator(t, kp)
	c := newCache(t, cache.Config{KeyPrefix: kp, PolicyRefresh: 50 * time.Millisecond})
	if err := c.Set(ctx, "user:1", 1, 0); err != nil {
		t.Fatal(err)
	}
	// No events: only the periodic re-read can carry these.
	gen := op.setPolicy("user", 3*time.Hour, 4)
	waitFor(t, 5*time.Second, "the re-read to invalidate user:1", func() bool { return !hit(c, "user:1") })
	_ = c.Set(ctx, "user:2", 2, 0)
	if d := ttlOf(t, c, "user:2"); d <= 179*time.Minute {
		t.Errorf("TTL after the re-read = %v, want 3h", d)
	}
	if got := op.storedGeneration("user:2"); got != gen {
		t.Errorf("generation %d, want %d", got, gen)
	}
}

// A value loaded before an invalidation must not be cached as fresh after it.
func TestPolicyInvalidationDuringLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	op := newOperator(t, kp)
	c := newCache(t, cache.Config{KeyPrefix: kp, PolicyRefresh: time.Hour})
	op.waitSubscribed(1)
	_ = c.Set(ctx, "user:marker", 1, 0)

	loading, release := make(chan struct{}), make(chan struct{})
	done := make(chan string, 1)
	go func() {
		v, _ := cache.GetOrLoad(ctx, c, "user:1", 0, func(context.Context) (string, error) {
			close(loading)
			<-release
			return "read before the invalidation", nil
		})
		done <- v
	}()
	<-loading
	op.publish(keyspace.Event{Type: keyspace.EventInvalidated, Prefix: "user", Generation: 1})
	waitFor(t, 5*time.Second, "the invalidation to arrive", func() bool { return !hit(c, "user:marker") })
	close(release)
	if v := <-done; v != "read before the invalidation" {
		t.Errorf("GetOrLoad returned %q", v)
	}
	if hit(c, "user:1") {
		t.Error("a value loaded before the invalidation was served after it")
	}
}

func TestPolicyDisabled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	op := newOperator(t, kp)
	op.setPolicy("user", time.Hour, 3)
	c := newCache(t, cache.Config{KeyPrefix: kp, PolicyRefresh: -1, DefaultTTL: time.Minute})
	_ = c.Set(ctx, "user:1", 1, 0)
	if d := ttlOf(t, c, "user:1"); d > time.Minute {
		t.Errorf("TTL %v with policy following disabled, want DefaultTTL", d)
	}
	if gen := op.storedGeneration("user:1"); gen != 0 {
		t.Errorf("generation %d with policy following disabled, want 0", gen)
	}
}
