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
	deadline := time.Now().Add(10 * time.Second)
	for !c.NearCacheStats().Enabled {
		if time.Now().After(deadline) {
			b.Fatal("near-cache tracking not established")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Set(ctx, "user:1", benchValue, time.Hour); err != nil {
		b.Fatal(err)
	}
	var v benchUser
	if _, err := c.Get(ctx, "user:1", &v); err != nil {
		b.Fatal(err)
	}
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
