package cache_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Issue 12, item 2: Open returns a usable cache while Redis is down; it
// serves from loaders meanwhile, connects by itself once Redis is up, and
// Ready waits for that.
func TestOpenWithRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	own.Stop() // a free port with nothing listening, restarted below
	logs := &recordingHandler{}
	c, err := cache.Open(ctx, cache.Config{URL: own.URL(0), KeyPrefix: uniquePrefix(t), SocketTimeout: time.Second, Logger: slog.New(logs)})
	if err != nil {
		t.Fatalf("Open with Redis down: %v", err)
	}
	t.Cleanup(func() { c.Close() })

	var loads atomic.Int32
	load := func(context.Context) (string, error) { loads.Add(1); return "v", nil }
	if v, err := cache.GetOrLoad(ctx, c, "user:1", 0, load); err != nil || v != "v" {
		t.Fatalf("GetOrLoad while Redis is down = %q, %v; want the loader's value", v, err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Ready(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ready while Redis is down = %v, want the context's error", err)
	}
	waitFor(t, 10*time.Second, "a warning about the failed attempts", func() bool { return logs.has(slog.LevelWarn, "unreachable") })

	ready := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ready <- c.Ready(rctx)
	}()
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	if err := <-ready; err != nil {
		t.Fatalf("Ready once Redis is up: %v", err)
	}
	if c.Client() == nil {
		t.Fatal("Ready returned before the cache connected")
	}
	before := loads.Load()
	for range 3 {
		if v, err := cache.GetOrLoad(ctx, c, "user:1", 0, load); err != nil || v != "v" {
			t.Fatalf("GetOrLoad after Ready = %q, %v", v, err)
		}
	}
	if n := loads.Load() - before; n != 1 {
		t.Errorf("the loader ran %d times for 3 calls after Ready, want 1 (cached)", n)
	}
	if !logs.has(slog.LevelInfo, "connected") {
		t.Error("the connection was not logged")
	}
}

func TestOpenReady(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := cache.Open(ctx, cache.Config{URL: srv.URL(0), KeyPrefix: uniquePrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := c.Set(ctx, "k", 1, time.Minute); err != nil {
		t.Fatalf("Set after Ready: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(ctx); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Ready after Close = %v, want ErrClosed", err)
	}
}

// Ready on a cache that never connected ends with Close, with ErrClosed.
func TestReadyAfterCloseWhileDown(t *testing.T) {
	t.Parallel()
	c, err := cache.Open(context.Background(), cache.Config{URL: blackhole(t), SocketTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() { ready <- c.Ready(context.Background()) }()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-ready; !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Ready across Close = %v, want ErrClosed", err)
	}
	if err := c.Ready(context.Background()); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("Ready after Close = %v, want ErrClosed", err)
	}
}

// Open fails only on configuration errors, and each names its field.
func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": srv.Addr()}})
	t.Cleanup(func() { ring.Close() })
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { failover.Close() })
	for _, tc := range []struct {
		name string
		cfg  cache.Config
		want string
	}{
		{"URL scheme", cache.Config{URL: "http://localhost:6379"}, "Config.URL"},
		{"URL without host", cache.Config{URL: "redis://"}, "Config.URL"},
		{"URL with password", cache.Config{URL: "redis://:secret@localhost:6379"}, "Config.URL"},
		{"Mode", cache.Config{Mode: "cluster", Addrs: []string{"127.0.0.1:1"}}, "Config.Mode"},
		{"Addrs missing", cache.Config{Mode: cache.ModeCluster}, "Config.Addrs"},
		{"Addrs malformed", cache.Config{Mode: cache.ModeCluster, Addrs: []string{"node-0"}}, "Config.Addrs"},
		{"Addrs in Standalone mode", cache.Config{Addrs: []string{"127.0.0.1:1"}}, "Config.Addrs"},
		{"MasterName missing", cache.Config{Mode: cache.ModeSentinel, Addrs: []string{"127.0.0.1:1"}}, "Config.MasterName"},
		{"MasterName outside Sentinel mode", cache.Config{MasterName: "m"}, "Config.MasterName"},
		{"KeyPrefix", cache.Config{KeyPrefix: "a:b"}, "Config.KeyPrefix"},
		{"SocketTimeout", cache.Config{SocketTimeout: -time.Second}, "Config.SocketTimeout"},
		{"DefaultTTL", cache.Config{DefaultTTL: -time.Second}, "Config.DefaultTTL"},
		{"TombstoneTTL", cache.Config{TombstoneTTL: -time.Second}, "Config.TombstoneTTL"},
		{"EventsLease", cache.Config{EventsLease: time.Millisecond}, "Config.EventsLease"},
		{"MaxConnections", cache.Config{MaxConnections: -1}, "Config.MaxConnections"},
		{"NearCache.MaxEntries", cache.Config{NearCache: &cache.NearCacheConfig{MaxEntries: -1}}, "NearCache.MaxEntries"},
		{"NearCache.Lease", cache.Config{NearCache: &cache.NearCacheConfig{Lease: time.Microsecond}}, "NearCache.Lease"},
		{"Client with URL", cache.Config{Client: client, URL: srv.URL(0)}, "Config.URL"},
		{"Client with Addrs", cache.Config{Client: client, Addrs: []string{srv.Addr()}}, "Config.Addrs"},
		{"Client with MasterName", cache.Config{Client: client, MasterName: "m"}, "Config.MasterName"},
		{"Client with credentials", cache.Config{Client: client, Username: "u", Password: "p"}, "Config.Username, Config.Password"},
		{"Client with TLSConfig", cache.Config{Client: client, TLSConfig: &tls.Config{}}, "Config.TLSConfig"},
		{"Client alone", cache.Config{Client: client}, ""},
		{"Client with MaxConnections", cache.Config{Client: client, MaxConnections: 5}, "Config.MaxConnections"},
		{"Client of another mode", cache.Config{Client: client, Mode: cache.ModeCluster}, "Config.Mode"},
		{"failover Client in Cluster mode", cache.Config{Client: failover, Mode: cache.ModeCluster}, "Sentinel"},
		{"Ring Client", cache.Config{Client: ring}, "*redis.Ring"},
		{"nil Client", cache.Config{Client: (*redis.Client)(nil)}, "Config.Client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cache.Open(context.Background(), tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("Open succeeded, want an error naming %s", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v; want it to name %s", err, tc.want)
			}
		})
	}
}

// Without Config.Logger the cache logs to slog.Default(), so a cache that
// cannot reach Redis is visible. Not parallel: it swaps the default logger.
func TestOpenLogsToSlogDefault(t *testing.T) {
	logs := &recordingHandler{}
	old := slog.Default()
	slog.SetDefault(slog.New(logs))
	defer slog.SetDefault(old)
	c, err := cache.Open(context.Background(), cache.Config{URL: blackhole(t), SocketTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 10*time.Second, "a warning on slog.Default()", func() bool { return logs.has(slog.LevelWarn, "unreachable") })
}

// countingHook counts the commands a client sends.
type countingHook struct{ cmds atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// Issue 12, item 3: with Config.Client the cache's commands go through the
// caller's client, hooks included, and Close leaves that client open.
func TestConfigClientUsesCallersClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: 2, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	hook := &countingHook{}
	client.AddHook(hook)

	kp := uniquePrefix(t)
	c, err := cache.Open(ctx, cache.Config{Client: client, KeyPrefix: kp, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Client() != client {
		t.Errorf("Client() = %v, want the caller's client", c.Client())
	}
	step := func(what string, fn func() error) {
		t.Helper()
		before := hook.cmds.Load()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if hook.cmds.Load() == before {
			t.Errorf("%s sent no command through the caller's client", what)
		}
	}
	step("Set", func() error { return c.Set(ctx, "user:1", "ann", time.Minute) })
	step("Get", func() error {
		var v string
		if found, err := c.Get(ctx, "user:1", &v); err != nil || !found || v != "ann" {
			return errors.Join(err, errors.New("user:1 not read back"))
		}
		return nil
	})
	step("GetOrLoad", func() error {
		_, err := cache.GetOrLoad(ctx, c, "user:2", time.Minute, func(context.Context) (string, error) { return "bob", nil })
		return err
	})
	// The keys are in the client's database.
	keys := strings.Join(keysOf(t, client, kp), " ")
	if !strings.Contains(keys, "user:1") || !strings.Contains(keys, "user:2") {
		t.Errorf("the client's database holds %q, want user:1 and user:2", keys)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		t.Errorf("the caller's client after Close: %v", err)
	}
}

// keysOf lists the keys of KeyPrefix kp in client's database.
func keysOf(t *testing.T, client *redis.Client, kp string) []string {
	t.Helper()
	var keys []string
	iter := client.Scan(context.Background(), 0, kp+":*", 0).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// The near-cache dials its tracking connection with the caller's client's
// options and serves hits.
func TestConfigClientNearCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	c, err := cache.Open(ctx, cache.Config{Client: client, KeyPrefix: uniquePrefix(t), NearCache: &cache.NearCacheConfig{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the near-cache to serve", func() bool { return c.NearCacheStats().Enabled })
}
