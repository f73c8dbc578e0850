package cache_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// BenchmarkNearCacheHit measures a near-cache hit beside the decode it
// cannot avoid (the JSON of benchValue), so the tier's own cost is the
// difference.
func BenchmarkNearCacheHit(b *testing.B) {
	c := newCache(b, cache.Config{KeyPrefix: "benchnear", NearCache: &cache.NearCacheConfig{}})
	ctx := context.Background()
	waitFor(b, 10*time.Second, "near-cache tracking", func() bool { return c.NearCacheStats().Enabled })
	if err := c.Set(ctx, "user:1", benchValue, time.Hour); err != nil {
		b.Fatal(err)
	}
	// Our own write's invalidation arrives asynchronously and may evict the
	// first copy: read until the tier serves the key.
	waitFor(b, 5*time.Second, "user:1 served from the near-cache", func() bool {
		before := c.Stats().LocalHits
		var v benchUser
		if _, err := c.Get(ctx, "user:1", &v); err != nil {
			b.Fatal(err)
		}
		return c.Stats().LocalHits > before
	})
	payload, _ := json.Marshal(benchValue)
	get := func() {
		var v benchUser
		if found, err := c.Get(ctx, "user:1", &v); !found || err != nil {
			b.Fatalf("Get = %v, %v", found, err)
		}
	}
	b.Run("decode-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v benchUser
			if err := json.Unmarshal(payload, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		before := c.Stats().LocalHits
		for b.Loop() {
			get()
		}
		if got := c.Stats().LocalHits - before; got < int64(b.N) {
			b.Fatalf("%d of %d hits from the near-cache", got, b.N)
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				get()
			}
		})
	})
}
