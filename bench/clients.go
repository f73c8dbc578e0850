package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// user is the value every contender stores: one small JSON object, as in
// pkg/cache's own benchmarks.
type user struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
	Score float64  `json:"score"`
}

var value = user{ID: 123, Name: "Ada Lovelace", Email: "ada@example.com", Roles: []string{"admin", "dev"}, Score: 9.5}

const (
	ttl     = time.Hour
	hitKey  = "user:1"
	missKey = "user:missing"
	setKey  = "user:set"
)

// contenders holds one client of each library, all on the same server, each
// under its own key prefix. Every one decodes with encoding/json, so the
// comparison is of the libraries, not of codecs (go-redis/cache defaults to
// msgpack; it is given JSON here).
type contenders struct {
	pkg     *cache.Cache  // remote only, the library's defaults
	pkgPrev *cache.Cache  // remote only, without read coalescing and autopipelining
	near    *cache.Cache  // with the near-cache
	raw     *redis.Client // plain go-redis, the baseline
	grc     *gocache.Cache
	grcTiny *gocache.Cache // with its local TinyLFU tier
	rue     rueidis.Client
}

func newContenders(ctx context.Context, s *server) (*contenders, error) {
	c := &contenders{}
	var err error
	// The pool size and timeouts are pkg/cache's defaults for every go-redis
	// based contender.
	cfg := cache.Config{URL: s.url(), KeyPrefix: "pkg"}
	if c.pkg, err = connect(ctx, cfg); err != nil {
		return nil, err
	}
	// The defaults before read coalescing and autopipelining, for
	// comparison.
	prev := cfg
	prev.KeyPrefix, prev.DisableReadCoalescing, prev.DisableAutoPipeline = "pkgprev", true, true
	if c.pkgPrev, err = connect(ctx, prev); err != nil {
		return nil, err
	}
	cfg.KeyPrefix = "near"
	cfg.NearCache = &cache.NearCacheConfig{TTL: time.Minute}
	if c.near, err = connect(ctx, cfg); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.near.NearCacheStats().Enabled {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("near-cache tracking not established: %+v", c.near.NearCacheStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.raw = redis.NewClient(&redis.Options{
		Addr: s.addr(), PoolSize: cache.DefaultMaxConnections,
		DialTimeout: cache.DefaultSocketTimeout, ReadTimeout: cache.DefaultSocketTimeout,
		WriteTimeout: cache.DefaultSocketTimeout, PoolTimeout: cache.DefaultSocketTimeout,
	})
	c.grc = gocache.New(&gocache.Options{Redis: c.raw, Marshal: json.Marshal, Unmarshal: json.Unmarshal})
	c.grcTiny = gocache.New(&gocache.Options{
		Redis: c.raw, LocalCache: gocache.NewTinyLFU(10_000, time.Minute),
		Marshal: json.Marshal, Unmarshal: json.Unmarshal,
	})
	if c.rue, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.addr()}}); err != nil {
		return nil, fmt.Errorf("rueidis: %w", err)
	}
	return c, c.seed(ctx)
}

func connect(ctx context.Context, cfg cache.Config) (*cache.Cache, error) {
	c, err := cache.New(cfg)
	if err != nil {
		return nil, err
	}
	return c, c.Connect(ctx)
}

// seed stores the hit key for every contender, each in its own format.
func (c *contenders) seed(ctx context.Context) error {
	b, _ := json.Marshal(value)
	return errors.Join(
		c.pkg.Set(ctx, hitKey, value, ttl),
		c.pkgPrev.Set(ctx, hitKey, value, ttl),
		c.near.Set(ctx, hitKey, value, ttl),
		c.raw.Set(ctx, "raw:"+hitKey, b, ttl).Err(),
		c.grc.Set(&gocache.Item{Ctx: ctx, Key: "grc:" + hitKey, Value: value, TTL: ttl}),
		c.grcTiny.Set(&gocache.Item{Ctx: ctx, Key: "tiny:" + hitKey, Value: value, TTL: ttl}),
		c.rue.Do(ctx, c.rue.B().Set().Key("rue:"+hitKey).Value(string(b)).Ex(ttl).Build()).Error(),
	)
}

func (c *contenders) close() {
	c.pkg.Close()
	c.pkgPrev.Close()
	c.near.Close()
	c.raw.Close()
	c.rue.Close()
}

func load(context.Context) (user, error) { return value, nil }

var errMissed = errors.New("expected a hit, got a miss")
var errHit = errors.New("expected a miss, got a hit")

// The remote operations, per contender. GetOrLoad's hit path for the raw
// clients is their GET + decode: they have no loader of their own.
func (c *contenders) remoteOps() map[string]map[string]op {
	rawGet := func(key string) op {
		return func(ctx context.Context) error {
			b, err := c.raw.Get(ctx, key).Bytes()
			if err != nil {
				return err
			}
			var v user
			return json.Unmarshal(b, &v)
		}
	}
	rueGet := func(key string) op {
		return func(ctx context.Context) error {
			b, err := c.rue.Do(ctx, c.rue.B().Get().Key(key).Build()).AsBytes()
			if err != nil {
				return err
			}
			var v user
			return json.Unmarshal(b, &v)
		}
	}
	pkgGet := func(cc *cache.Cache, key string, want bool) op {
		return func(ctx context.Context) error {
			var v user
			found, err := cc.Get(ctx, key, &v)
			switch {
			case err != nil:
				return err
			case found != want && want:
				return errMissed
			case found != want:
				return errHit
			}
			return nil
		}
	}
	return map[string]map[string]op{
		"hit": {
			pkgDefaults: pkgGet(c.pkg, hitKey, true),
			pkgPrevious: pkgGet(c.pkgPrev, hitKey, true),
			"go-redis":  rawGet("raw:" + hitKey),
			"go-redis/cache": func(ctx context.Context) error {
				var v user
				return c.grc.Get(ctx, "grc:"+hitKey, &v)
			},
			"rueidis": rueGet("rue:" + hitKey),
		},
		"miss": {
			pkgDefaults: pkgGet(c.pkg, missKey, false),
			pkgPrevious: pkgGet(c.pkgPrev, missKey, false),
			"go-redis": func(ctx context.Context) error {
				if err := c.raw.Get(ctx, "raw:"+missKey).Err(); err != redis.Nil {
					return fmt.Errorf("miss: %v", err)
				}
				return nil
			},
			"go-redis/cache": func(ctx context.Context) error {
				var v user
				if err := c.grc.Get(ctx, "grc:"+missKey, &v); err != gocache.ErrCacheMiss {
					return fmt.Errorf("miss: %v", err)
				}
				return nil
			},
			"rueidis": func(ctx context.Context) error {
				if err := c.rue.Do(ctx, c.rue.B().Get().Key("rue:"+missKey).Build()).Error(); !rueidis.IsRedisNil(err) {
					return fmt.Errorf("miss: %v", err)
				}
				return nil
			},
		},
		"set": {
			pkgDefaults: func(ctx context.Context) error { return c.pkg.Set(ctx, setKey, value, ttl) },
			pkgPrevious: func(ctx context.Context) error { return c.pkgPrev.Set(ctx, setKey, value, ttl) },
			"go-redis": func(ctx context.Context) error {
				b, err := json.Marshal(value)
				if err != nil {
					return err
				}
				return c.raw.Set(ctx, "raw:"+setKey, b, ttl).Err()
			},
			"go-redis/cache": func(ctx context.Context) error {
				return c.grc.Set(&gocache.Item{Ctx: ctx, Key: "grc:" + setKey, Value: value, TTL: ttl})
			},
			"rueidis": func(ctx context.Context) error {
				b, err := json.Marshal(value)
				if err != nil {
					return err
				}
				return c.rue.Do(ctx, c.rue.B().Set().Key("rue:"+setKey).Value(rueidis.BinaryString(b)).Ex(ttl).Build()).Error()
			},
		},
		"GetOrLoad hit": {
			pkgDefaults: func(ctx context.Context) error {
				_, err := cache.GetOrLoad(ctx, c.pkg, hitKey, ttl, load)
				return err
			},
			pkgPrevious: func(ctx context.Context) error {
				_, err := cache.GetOrLoad(ctx, c.pkgPrev, hitKey, ttl, load)
				return err
			},
			"go-redis": rawGet("raw:" + hitKey),
			"go-redis/cache": func(ctx context.Context) error {
				var v user
				return c.grc.Once(&gocache.Item{Ctx: ctx, Key: "grc:" + hitKey, Value: &v, TTL: ttl,
					Do: func(*gocache.Item) (any, error) { return value, nil }})
			},
			"rueidis": rueGet("rue:" + hitKey),
		},
	}
}

// localOps are hits of the in-process tiers, beside pkg/cache's remote hit.
func (c *contenders) localOps() map[string]op {
	return map[string]op{
		"pkg/cache near-cache": func(ctx context.Context) error {
			var v user
			found, err := c.near.Get(ctx, hitKey, &v)
			if err == nil && !found {
				err = errMissed
			}
			return err
		},
		"pkg/cache remote": c.remoteOps()["hit"][pkgDefaults],
		"rueidis client-side cache": func(ctx context.Context) error {
			b, err := c.rue.DoCache(ctx, c.rue.B().Get().Key("rue:"+hitKey).Cache(), time.Minute).AsBytes()
			if err != nil {
				return err
			}
			var v user
			return json.Unmarshal(b, &v)
		},
		"go-redis/cache TinyLFU": func(ctx context.Context) error {
			var v user
			return c.grcTiny.Get(ctx, "tiny:"+hitKey, &v)
		},
	}
}
