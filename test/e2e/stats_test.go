package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// TestHitRatioOfTwoPodsInStatus applies the sample as it is (but for its Redis
// URL), drives a known mix of hits and misses from two caches, as two pods
// would, and reads the summed ratio back with kubectl.
func TestHitRatioOfTwoPodsInStatus(t *testing.T) {
	dumpLogsOnFailure(t)
	ns := namespace(t)
	applySample(t, ns, "demo", 0, nil)
	ctx := context.Background()

	// Pod A flushes its counters on its own schedule; pod B only when it
	// closes. Both paths must reach status.
	podA := newCache(t, "demo", 0, func(c *cache.Config) { c.StatsFlushInterval = 200 * time.Millisecond })
	podB := newCache(t, "demo", 0, func(c *cache.Config) { c.StatsFlushInterval = time.Hour })

	// users: 80 hits, 20 misses (80.0%); products: 10 hits, 10 misses (50.0%);
	// in all 90 hits, 30 misses: 75.0%.
	for i := range 8 {
		if err := podA.Set(ctx, fmt.Sprintf("users:%d", i), i, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := podB.Set(ctx, "products:1", "p", 0); err != nil {
		t.Fatal(err)
	}
	get := func(c *cache.Cache, key string, want bool) {
		t.Helper()
		found, err := c.Get(ctx, key, nil)
		if err != nil || found != want {
			t.Fatalf("Get(%q) = %v, %v; want %v", key, found, err, want)
		}
	}
	for i := range 80 {
		get(podA, fmt.Sprintf("users:%d", i%8), true)
	}
	for i := range 20 {
		get(podA, fmt.Sprintf("users:absent-%d", i), false)
	}
	for i := range 10 {
		get(podB, "products:1", true)
		get(podB, fmt.Sprintf("products:absent-%d", i), false)
	}
	if err := podB.Close(); err != nil {
		t.Fatal(err)
	}

	// The controller reads the counters every statsInterval (5s in the sample).
	eventually(t, 30*time.Second, 500*time.Millisecond, "status.hitRatio via kubectl", func() (bool, string) {
		got := jsonpath(t, ns, "{.status.hitRatio}")
		return got == "75.0%", fmt.Sprintf("hitRatio %q", got)
	})
	prefixes := jsonpath(t, ns, `{range .status.prefixes[*]}{.name}={.hitRatio},{.hits},{.misses};{end}`)
	if want := "users=80.0%,80,20;products=50.0%,10,10;"; prefixes != want {
		t.Errorf("status.prefixes: %s, want %s", prefixes, want)
	}

	// The printer columns a user sees.
	table := kubectl(t, "get", "cachepolicies", "-n", ns)
	if got := column(t, table, "HIT RATIO"); got != "75.0%" {
		t.Errorf("kubectl get: Hit Ratio %q, want 75.0%%\n%s", got, table)
	}
	if got := column(t, table, "HITS"); got != "90" {
		t.Errorf("kubectl get: Hits %q, want 90\n%s", got, table)
	}

	// Set with ttl 0 took each prefix's TTL from the published policy.
	rdb := rawRedis(t, 0)
	for key, want := range map[string]time.Duration{"demo:users:1": 10 * time.Minute, "demo:products:1": time.Minute} {
		ttl, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl > want || ttl < want-30*time.Second {
			t.Errorf("PTTL %s = %v, want the policy's %v", key, ttl, want)
		}
	}
}

// column returns the value in the first row of a kubectl table under header.
func column(t *testing.T, table, header string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 {
		t.Fatalf("not a table with a row:\n%s", table)
	}
	i := strings.Index(lines[0], header)
	if i < 0 || i >= len(lines[1]) {
		t.Fatalf("no column %q in:\n%s", header, table)
	}
	f := strings.Fields(lines[1][i:])
	if len(f) == 0 || strings.HasPrefix(lines[1][i:], " ") {
		return "" // empty cell
	}
	return f[0]
}
