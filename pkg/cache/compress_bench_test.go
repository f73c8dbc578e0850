package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// tenKiBUsers is a JSON value of about 10 KiB: a page of users, the kind of
// value compression is for.
func tenKiBUsers() []benchUser {
	var us []benchUser
	for i := 0; ; i++ {
		us = append(us, benchUser{ID: i, Name: fmt.Sprintf("User Number %d", i), Email: fmt.Sprintf("user%d@example.com", i), Roles: []string{"reader", "dev"}, Score: float64(i%50) / 10})
		if b, _ := json.Marshal(us); len(b) >= 10<<10 {
			return us
		}
	}
}

// BenchmarkCompress10KiBJSON compares a 10 KiB JSON value stored plain and
// S2-compressed (CompressAbove): stored-B is what Redis holds (STRLEN), the
// get and set timings are the cost of a hit and a write, decoding included;
// decode is the entry decoding alone, the part compression adds to a hit.
func BenchmarkCompress10KiBJSON(b *testing.B) {
	v := tenKiBUsers()
	for _, mode := range []struct {
		name  string
		above int
	}{{"plain", 0}, {"s2", 1024}} {
		kp := "bench-z-" + mode.name
		c := newCache(b, cache.Config{KeyPrefix: kp, CompressAbove: mode.above})
		ctx := context.Background()
		if err := c.Set(ctx, "users", v, time.Hour); err != nil {
			b.Fatal(err)
		}
		stored, err := rawClient(b).StrLen(ctx, kp+":users").Result()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(mode.name+"/get", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var got []benchUser
				if ok, err := c.Get(ctx, "users", &got); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
			b.ReportMetric(float64(stored), "stored-B")
		})
		// The entry decoding alone (decompression included), without the
		// round trip and the JSON decoding that dominate a hit.
		raw, err := rawClient(b).Get(ctx, kp+":users").Bytes()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(mode.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := cache.DecodeEntry(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode.name+"/set", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Set(ctx, "users", v, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(stored), "stored-B")
		})
	}
}
