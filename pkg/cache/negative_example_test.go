package cache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

func ExampleErrNoValue() {
	ctx := context.Background()
	c, err := cache.New(cache.Config{
		URL:         os.Getenv("REDIS_URL"),
		KeyPrefix:   "example-novalue",
		NegativeTTL: 30 * time.Second, // how long "not found" is remembered
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	queries := 0
	findUser := func(ctx context.Context) (string, error) {
		queries++ // SELECT ... WHERE id = 404: no row
		return "", fmt.Errorf("user 404: %w", cache.ErrNoValue)
	}
	for range 3 {
		_, err := cache.GetOrLoad(ctx, c, "user:404", 5*time.Minute, findUser)
		fmt.Println(errors.Is(err, cache.ErrNoValue))
	}
	fmt.Println("database queries:", queries)
	// Output:
	// true
	// true
	// true
	// database queries: 1
}
