package cache_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// Values whose encoding exceeds CompressAbove bytes are stored S2-compressed;
// readers decompress them whatever their own setting, so the option can be
// turned on one service at a time.
func ExampleConfig_compressAbove() {
	ctx := context.Background()
	c, err := cache.New(cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: "myapp-z", CompressAbove: 1024})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	report := strings.Repeat("all systems nominal; ", 1000) // about 20 KiB
	if err := c.Set(ctx, "report:today", report, time.Hour); err != nil {
		log.Fatal(err)
	}
	var got string
	found, err := c.Get(ctx, "report:today", &got)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, got == report)

	// What Redis holds: a fraction of the value.
	opt, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	n, err := rc.StrLen(ctx, "myapp-z:report:today").Result()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n < int64(len(report))/10)
	// Output:
	// true true
	// true
}
