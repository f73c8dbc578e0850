package cache_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// Each benchmark runs the cache beside a raw go-redis baseline doing the same
// work by hand (GET or SET plus JSON), over a client with the same options,
// against the same server, in the same run.

type benchUser struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
	Score float64  `json:"score"`
}

var benchValue = benchUser{ID: 123, Name: "Ada Lovelace", Email: "ada@example.com", Roles: []string{"admin", "dev"}, Score: 9.5}

func benchSetup(b *testing.B) (*cache.Cache, *redis.Client) {
	b.Helper()
	c := newCache(b, cache.Config{KeyPrefix: "bench"})
	opts, err := redisconn.ClientOptions(redisconn.Options{
		URL: srv.URL(0), PoolSize: cache.DefaultMaxConnections, Timeout: cache.DefaultSocketTimeout, KeepAlive: cache.DefaultKeepAlive,
	})
	if err != nil {
		b.Fatal(err)
	}
	raw := redis.NewClient(opts)
	b.Cleanup(func() { raw.Close() })

	ctx := context.Background()
	if err := c.Set(ctx, "user:1", benchValue, time.Hour); err != nil {
		b.Fatal(err)
	}
	payload, _ := json.Marshal(benchValue)
	if err := raw.Set(ctx, "bench:raw:user:1", payload, time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	return c, raw
}

// pair runs the baseline and the cache as sub-benchmarks, serially and in
// parallel.
func pair(b *testing.B, raw, cached func(ctx context.Context) error) {
	ctx := context.Background()
	serial := func(op func(context.Context) error) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := op(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	parallel := func(op func(context.Context) error) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := op(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	b.Run("raw", serial(raw))
	b.Run("cache", serial(cached))
	b.Run("raw-parallel", parallel(raw))
	b.Run("cache-parallel", parallel(cached))
}

func rawGetDecode(raw *redis.Client, key string) func(context.Context) error {
	return func(ctx context.Context) error {
		b, err := raw.Get(ctx, key).Bytes()
		if err != nil {
			return err
		}
		var v benchUser
		return json.Unmarshal(b, &v)
	}
}

// benchOps returns, per operation, the baseline and the cache doing it.
func benchOps(c *cache.Cache, raw *redis.Client) map[string][2]func(context.Context) error {
	load := func(context.Context) (benchUser, error) { return benchValue, nil }
	return map[string][2]func(context.Context) error{
		"GetHit": {
			rawGetDecode(raw, "bench:raw:user:1"),
			func(ctx context.Context) error {
				var v benchUser
				_, err := c.Get(ctx, "user:1", &v)
				return err
			},
		},
		"GetMiss": {
			func(ctx context.Context) error {
				if err := raw.Get(ctx, "bench:raw:none").Err(); err != redis.Nil {
					return err
				}
				return nil
			},
			func(ctx context.Context) error {
				var v benchUser
				_, err := c.Get(ctx, "none:1", &v)
				return err
			},
		},
		"Set": {
			func(ctx context.Context) error {
				payload, err := json.Marshal(benchValue)
				if err != nil {
					return err
				}
				return raw.Set(ctx, "bench:raw:user:2", payload, time.Hour).Err()
			},
			func(ctx context.Context) error { return c.Set(ctx, "user:2", benchValue, time.Hour) },
		},
		// A miss and its write-back (GET, then the compare-and-set script),
		// against GET plus SET by hand; a new key each time.
		"GetOrLoadMiss": {
			func(ctx context.Context) error {
				key := "bench:raw:miss:" + strconv.FormatInt(missKeys.Add(1), 10)
				if err := raw.Get(ctx, key).Err(); err != redis.Nil {
					return err
				}
				payload, err := json.Marshal(benchValue)
				if err != nil {
					return err
				}
				return raw.Set(ctx, key, payload, time.Minute).Err()
			},
			func(ctx context.Context) error {
				_, err := cache.GetOrLoad(ctx, c, "miss:"+strconv.FormatInt(missKeys.Add(1), 10), time.Minute, load)
				return err
			},
		},
		"GetOrLoadHit": {
			rawGetDecode(raw, "bench:raw:user:1"),
			func(ctx context.Context) error {
				_, err := cache.GetOrLoad(ctx, c, "user:1", time.Hour, load)
				return err
			},
		},
	}
}

func benchPair(b *testing.B, name string) {
	c, raw := benchSetup(b)
	ops := benchOps(c, raw)[name]
	pair(b, ops[0], ops[1])
}

func BenchmarkGetHit(b *testing.B)       { benchPair(b, "GetHit") }
func BenchmarkGetMiss(b *testing.B)      { benchPair(b, "GetMiss") }
func BenchmarkSet(b *testing.B)          { benchPair(b, "Set") }
func BenchmarkGetOrLoadHit(b *testing.B) { benchPair(b, "GetOrLoadHit") }

// BenchmarkGetOrLoadMiss measures a miss and its write-back.
func BenchmarkGetOrLoadMiss(b *testing.B) { benchPair(b, "GetOrLoadMiss") }

// missKeys numbers the keys of BenchmarkGetOrLoadMiss.
var missKeys atomic.Int64

// BenchmarkVersusRaw alternates the raw baseline and the cache in one loop
// and reports the median latency of each and their ratio. On a busy machine
// the run-to-run noise of separate benchmarks exceeds the overhead being
// measured; alternating cancels the drift.
func BenchmarkVersusRaw(b *testing.B) {
	c, raw := benchSetup(b)
	ops := benchOps(c, raw)
	for _, name := range []string{"GetHit", "GetMiss", "Set", "GetOrLoadHit"} {
		b.Run(name, func(b *testing.B) { versus(b, ops[name][0], ops[name][1]) })
	}
}

func versus(b *testing.B, rawOp, cacheOp func(context.Context) error) {
	ctx := context.Background()
	var rawTimes, cacheTimes []time.Duration
	timed := func(op func(context.Context) error, into *[]time.Duration) {
		start := time.Now()
		if err := op(ctx); err != nil {
			b.Fatal(err)
		}
		*into = append(*into, time.Since(start))
	}
	odd := false
	for b.Loop() {
		// Alternate the order too: the second call of a pair runs on a
		// warmer (or more contended) machine than the first.
		if odd = !odd; odd {
			timed(rawOp, &rawTimes)
			timed(cacheOp, &cacheTimes)
		} else {
			timed(cacheOp, &cacheTimes)
			timed(rawOp, &rawTimes)
		}
	}
	rawMedian, cacheMedian := median(rawTimes), median(cacheTimes)
	b.ReportMetric(float64(rawMedian.Nanoseconds()), "raw-median-ns")
	b.ReportMetric(float64(cacheMedian.Nanoseconds()), "cache-median-ns")
	b.ReportMetric(float64(cacheMedian)/float64(rawMedian), "cache/raw")
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}
