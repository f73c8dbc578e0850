package cache_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// Rendering a page of products: the cached ones come from one round trip,
// and the rest from one database query, then cached for the next page view.
func ExampleGetOrLoadMany() {
	ctx := context.Background()
	c, err := cache.Open(ctx, cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: "example-batch"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Ready(ctx); err != nil {
		log.Fatal(err)
	}
	_ = c.InvalidatePrefix(ctx, "product") // a clean slate for the example

	type Product struct{ Name string }
	// queryProducts stands for "SELECT ... WHERE id IN (...)".
	queryProducts := func(_ context.Context, keys []string) (map[string]Product, error) {
		fmt.Println("query", keys)
		m := make(map[string]Product, len(keys))
		for _, k := range keys {
			m[k] = Product{Name: "name of " + k}
		}
		return m, nil
	}

	page := []string{"product:1", "product:2", "product:3"}
	for range 2 {
		products, err := cache.GetOrLoadMany(ctx, c, page, 10*time.Minute, queryProducts)
		if err != nil {
			log.Fatal(err)
		}
		keys := make([]string, 0, len(products))
		for k := range products {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Println(len(products), "products:", keys)
	}
	s := c.Stats()
	fmt.Printf("hits=%d misses=%d\n", s.Hits, s.Misses)
	// Output:
	// query [product:1 product:2 product:3]
	// 3 products: [product:1 product:2 product:3]
	// 3 products: [product:1 product:2 product:3]
	// hits=3 misses=3
}
