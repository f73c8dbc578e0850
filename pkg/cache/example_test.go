package cache_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

func Example() {
	ctx := context.Background()
	// Open fails only on a bad Config. If Redis is down it connects in the
	// background, and the cache fails open (loaders serve) until then.
	c, err := cache.Open(ctx, cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: "myapp"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Optional: give Redis a moment, so that the first calls use it.
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ready(wait); err != nil {
		log.Printf("Redis not reachable yet, serving without it: %v", err)
	}

	type User struct {
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	err = c.Set(ctx, "user:123", User{"John", "john@example.com"}, 5*time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	var u User
	found, err := c.Get(ctx, "user:123", &u)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, u.Name)

	s := c.Stats()
	fmt.Printf("hits=%d misses=%d hit rate=%.1f%%\n", s.Hits, s.Misses, s.HitRate)
	// Output:
	// true John
	// hits=1 misses=0 hit rate=100.0%
}

// A service with an instrumented go-redis client (redisotel hooks, say)
// hands it to the cache: the cache's commands go through its hooks, and
// the client stays the service's to close.
func ExampleConfig_client() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	// rdb.AddHook(...): redisotel.InstrumentTracing(rdb), for instance.

	c, err := cache.Open(ctx, cache.Config{Client: rdb, KeyPrefix: "example-client"})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Ready(ctx); err != nil {
		log.Fatal(err)
	}
	if err := c.Set(ctx, "greeting:1", "hello", time.Minute); err != nil {
		log.Fatal(err)
	}
	c.Close() // rdb stays open

	// In Redis, a key is the KeyPrefix, a colon, then the cache's key.
	n, err := rdb.Exists(ctx, "example-client:greeting:1").Result()
	fmt.Println(n, err, rdb.Ping(ctx).Val())
	// Output: 1 <nil> PONG
}

// redisAddr is REDIS_URL's host:port.
func redisAddr() string {
	opt, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		log.Fatal(err)
	}
	return opt.Addr
}

func ExampleGenerateKey() {
	a := cache.GenerateKey("tasks", map[string]any{"user_id": 1, "status": "active"})
	b := cache.GenerateKey("tasks", map[string]any{"status": "active", "user_id": 1})
	fmt.Println(a, a == b)
	// Output: tasks:de6de3223cf3c5b2 true
}

func ExampleGetOrLoad() {
	ctx := context.Background()
	c := connect("example-getorload")
	defer c.Close()

	load := func(ctx context.Context) (int, error) {
		fmt.Println("computing")
		return 42, nil
	}
	for range 2 {
		v, err := cache.GetOrLoad(ctx, c, "answer:1", time.Minute, load)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(v)
	}
	// Output:
	// computing
	// 42
	// 42
}

func ExampleCached() {
	ctx := context.Background()
	c := connect("example-cached")
	defer c.Close()

	type Query struct {
		UserID  int
		Details bool // does not change the result: not a key parameter
	}
	getUser := cache.Cached(c, "users", 10*time.Minute,
		func(q Query) map[string]any { return map[string]any{"user_id": q.UserID} },
		func(ctx context.Context, q Query) (string, error) {
			fmt.Println("loading user", q.UserID)
			return fmt.Sprint("user ", q.UserID), nil
		})
	updateUser := cache.InvalidateOnWrite(c, "users",
		func(ctx context.Context, id int) (bool, error) { return true, nil })

	for _, q := range []Query{{1, false}, {1, true}, {2, false}} {
		name, err := getUser(ctx, q)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(name)
	}
	if _, err := updateUser(ctx, 1); err != nil { // clears users:*
		log.Fatal(err)
	}
	name, _ := getUser(ctx, Query{UserID: 1})
	fmt.Println(name)
	// Output:
	// loading user 1
	// user 1
	// user 1
	// loading user 2
	// user 2
	// loading user 1
	// user 1
}

func ExampleCache_InvalidatePrefix() {
	ctx := context.Background()
	c := connect("example-invalidateprefix")
	defer c.Close()

	_ = c.Set(ctx, "prices:apple", 3, 0)
	_ = c.Set(ctx, "stock:apple", 10, 0)
	// Prices changed at the source: every cached price is stale now, in
	// every process sharing the KeyPrefix, whatever the number of keys.
	if err := c.InvalidatePrefix(ctx, "prices"); err != nil {
		log.Fatal(err)
	}
	price, _ := c.Get(ctx, "prices:apple", nil)
	stock, _ := c.Get(ctx, "stock:apple", nil)
	fmt.Println("price cached:", price, "stock cached:", stock)
	// Output: price cached: false stock cached: true
}

func ExampleHTTPMiddleware() {
	c := connect("example-http")
	defer c.Close()

	users := cache.HTTPMiddleware(c, "users", time.Minute, "id")
	mux := http.NewServeMux()
	mux.Handle("GET /users/{id}", users(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user %s", r.PathValue("id"))
	})))
	mux.Handle("PUT /users/{id}", users(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent) // a successful write invalidates users:*
	})))
	mux.Handle("GET /cache/stats", cache.StatsHandler(c))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, method := range []string{"GET", "GET", "PUT", "GET"} {
		req, _ := http.NewRequest(method, srv.URL+"/users/1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		line := fmt.Sprintf("%s %d %s %s", method, resp.StatusCode, resp.Header.Get("X-Cache"), body)
		fmt.Println(strings.TrimSpace(line))
	}
	// Output:
	// GET 200 MISS user 1
	// GET 200 HIT user 1
	// PUT 204
	// GET 200 MISS user 1
}

// connect returns a connected cache whose keyspace starts empty, so that the
// examples print the same on every run.
func connect(keyPrefix string) *cache.Cache {
	ctx := context.Background()
	c, err := cache.New(cache.Config{URL: os.Getenv("REDIS_URL"), KeyPrefix: keyPrefix})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Invalidate(ctx, "*"); err != nil {
		log.Fatal(err)
	}
	return c
}
