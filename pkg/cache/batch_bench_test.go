package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// BenchmarkGetMany reads 100 cached keys: GetMany, 100 Gets, and a raw
// go-redis MGET decoding the same JSON into the same map (the baseline);
// versus alternates GetMany and the baseline and reports their ratio.
func BenchmarkGetMany(b *testing.B) {
	const n = 100
	c, raw := benchSetup(b)
	ctx := context.Background()
	keys := make([]string, n)
	rawKeys := make([]string, n)
	items := map[string]any{}
	var pairs []any
	for i := range keys {
		keys[i] = "many:" + strconv.Itoa(i)
		rawKeys[i] = "bench:raw:" + keys[i]
		v := benchValue
		v.ID = i
		items[keys[i]] = v
		p, _ := json.Marshal(v)
		pairs = append(pairs, rawKeys[i], p)
	}
	if err := c.SetMany(ctx, items, time.Hour); err != nil {
		b.Fatal(err)
	}
	if err := raw.MSet(ctx, pairs...).Err(); err != nil {
		b.Fatal(err)
	}
	all := func(m map[string]benchUser) error {
		if len(m) != n {
			return fmt.Errorf("read %d of %d values", len(m), n)
		}
		return nil
	}
	getMany := func(ctx context.Context) error {
		m, err := cache.GetMany[benchUser](ctx, c, keys)
		if err != nil {
			return err
		}
		return all(m)
	}
	gets := func(ctx context.Context) error {
		m := make(map[string]benchUser, n)
		for _, k := range keys {
			var v benchUser
			if found, err := c.Get(ctx, k, &v); err != nil || !found {
				return fmt.Errorf("get %s: %v, %v", k, found, err)
			}
			m[k] = v
		}
		return all(m)
	}
	mget := rawMGetDecode(raw, rawKeys)
	run := func(op func(context.Context) error) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := op(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("raw-mget", run(mget))
	b.Run("getmany", run(getMany))
	b.Run("gets", run(gets))
	b.Run("versus", func(b *testing.B) { versus(b, mget, getMany) })
}

// rawMGetDecode is a batch read by hand: MGET, then JSON into a map.
func rawMGetDecode(raw *redis.Client, keys []string) func(context.Context) error {
	return func(ctx context.Context) error {
		vals, err := raw.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		m := make(map[string]benchUser, len(vals))
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("%s: missing", keys[i])
			}
			var u benchUser
			if err := json.Unmarshal([]byte(s), &u); err != nil {
				return err
			}
			m[keys[i]] = u
		}
		if len(m) != len(keys) {
			return fmt.Errorf("read %d of %d values", len(m), len(keys))
		}
		return nil
	}
}
