package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// A service that should start, and serve from its database, even while Redis
// is down opens its cache with Open; it waits for Redis with Ready only as long
// as it is willing to.
func ExampleOpen() {
	ctx := context.Background()
	c, err := cache.Open(ctx, cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: "example-open"})
	if err != nil {
		log.Fatal(err) // a bad Config only: the error names the field
	}
	defer c.Close()

	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ready(wait); err != nil {
		log.Printf("serving without Redis for now: %v", err)
	}
	fmt.Println(c.Set(ctx, "greeting:1", "hello", time.Minute))
	// Output: <nil>
}

// The write path of a service wraps its update function, so that a successful
// update invalidates every cached read of the prefix, in every process; a
// failed update leaves the cache as it was.
func ExampleInvalidateOnWrite() {
	ctx := context.Background()
	c := connect("example-invalidateonwrite")
	defer c.Close()

	db := map[int]string{1: "Ada"} // stands for the service's database
	getUser := func(ctx context.Context, id int) (string, error) {
		return cache.GetOrLoad(ctx, c, fmt.Sprint("users:", id), time.Minute,
			func(context.Context) (string, error) {
				fmt.Println("query user", id)
				return db[id], nil
			})
	}
	type rename struct {
		id   int
		name string
	}
	renameUser := cache.InvalidateOnWrite(c, "users",
		func(ctx context.Context, r rename) (bool, error) {
			if r.name == "" {
				return false, errors.New("empty name")
			}
			db[r.id] = r.name
			return true, nil
		})

	name, _ := getUser(ctx, 1) // a miss: queries the database
	fmt.Println(name)
	if _, err := renameUser(ctx, rename{1, ""}); err != nil {
		fmt.Println("update failed:", err) // nothing invalidated
	}
	name, _ = getUser(ctx, 1) // still a hit
	fmt.Println(name)
	if _, err := renameUser(ctx, rename{1, "Grace"}); err != nil {
		log.Fatal(err)
	}
	name, _ = getUser(ctx, 1) // users:* was invalidated: queries again
	fmt.Println(name)
	// Output:
	// query user 1
	// Ada
	// update failed: empty name
	// Ada
	// query user 1
	// Grace
}

// A near-cache serves hot keys from memory. A write by another process (here
// a second Cache on the same Redis) evicts the copy within the notification
// delay, and never later than NearCacheConfig.Lease.
func ExampleNearCacheConfig() {
	ctx := context.Background()
	cfg := cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: "example-nearcache"}
	writer := connect(cfg.KeyPrefix) // another process, without a near-cache
	defer writer.Close()

	cfg.NearCache = &cache.NearCacheConfig{
		MaxEntries: 1000,
		Prefixes:   []string{"config"}, // only these keys are held in memory
	}
	c, err := cache.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// The tier serves once its invalidation channel is established.
	exampleWait(func() bool { return c.NearCacheStats().Enabled })
	fmt.Println("near-cache:", c.NearCacheStats().State)

	if err := writer.Set(ctx, "config:theme", "light", time.Hour); err != nil {
		log.Fatal(err)
	}
	// The first read fills the tier; later ones are served from memory.
	exampleWait(func() bool {
		var theme string
		_, _ = c.Get(ctx, "config:theme", &theme)
		return c.Stats().LocalHits > 0
	})
	var theme string
	_, _ = c.Get(ctx, "config:theme", &theme)
	fmt.Println("theme:", theme)

	if err := writer.Set(ctx, "config:theme", "dark", time.Hour); err != nil {
		log.Fatal(err)
	}
	exampleWait(func() bool {
		_, _ = c.Get(ctx, "config:theme", &theme)
		return theme == "dark"
	})
	fmt.Println("theme:", theme)
	// Output:
	// near-cache: active
	// theme: light
	// theme: dark
}

// exampleWait polls cond until it holds, for at most 10 seconds.
func exampleWait(cond func() bool) {
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			log.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The cache's hit, miss and error counters, by key prefix, exported to
// Prometheus. A service registers the collector once, on the registry it
// serves at /metrics.
func ExampleNewCollector() {
	ctx := context.Background()
	c := connect("example-collector")
	defer c.Close()

	reg := prometheus.NewRegistry() // or prometheus.MustRegister, for the default one
	reg.MustRegister(cache.NewCollector(c))

	_ = c.Set(ctx, "user:1", "Ada", time.Minute)
	_, _ = c.Get(ctx, "user:1", nil) // a hit
	_, _ = c.Get(ctx, "user:2", nil) // a miss

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() == 0 { // the histogram, and counters at zero
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			fmt.Println(f.GetName(), labels, m.GetCounter().GetValue())
		}
	}
	// Output:
	// cacheplane_cache_hits_total [key_prefix=example-collector prefix=user] 1
	// cacheplane_cache_misses_total [key_prefix=example-collector prefix=user] 1
}

// A batch of writes goes out in one round trip, and GetMany reads a batch
// back: keys that are not cached are absent from its map.
func ExampleCache_SetMany() {
	ctx := context.Background()
	c := connect("example-setmany")
	defer c.Close()

	err := c.SetMany(ctx, map[string]any{"price:apple": 3, "price:pear": 4}, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	prices, err := cache.GetMany[int](ctx, c, []string{"price:apple", "price:pear", "price:plum"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(prices), prices["price:apple"], prices["price:pear"])
	_, plum := prices["price:plum"]
	fmt.Println("plum cached:", plum)
	// Output:
	// 2 3 4
	// plum cached: false
}

// Delete removes single keys after a write to their source; its tombstone
// keeps a load that raced the write from caching what it read before it.
func ExampleCache_Delete() {
	ctx := context.Background()
	c := connect("example-delete")
	defer c.Close()

	_ = c.Set(ctx, "user:1", "Ada", time.Minute)
	n, err := c.Delete(ctx, "user:1", "user:2")
	fmt.Println(n, err)
	found, _ := c.Get(ctx, "user:1", nil)
	fmt.Println("cached:", found)
	// Output:
	// 1 <nil>
	// cached: false
}
