package cache_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// getGate is a hook on a Config.Client: it counts the GETs of one key that
// reach Redis (plain or pipelined), and can hold the reply of the next plain
// one after Redis has answered it, so a test can act while a GET that has
// already read the key is still in flight. It also counts the SETs that go
// through a pipeline (the autopipeliner).
type getGate struct {
	key       string // the Redis key, prefix included
	gets      atomic.Int64
	pipedSets atomic.Int64

	mu   sync.Mutex
	hold chan struct{} // non-nil: hold the next GET's reply until closed
	held chan struct{} // closed once it is held
}

func (g *getGate) isGet(cmd redis.Cmder) bool {
	args := cmd.Args()
	return cmd.Name() == "get" && len(args) == 2 && args[1] == g.key
}

// holdNext holds the reply of the next plain GET; held is closed once a GET
// waits, release lets it go.
func (g *getGate) holdNext() (held <-chan struct{}, release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold, g.held = make(chan struct{}), make(chan struct{})
	hold := g.hold
	return g.held, sync.OnceFunc(func() { close(hold) })
}

// viaAutoPipeliner reports whether a process hook runs off the calling
// goroutine: go-redis's autopipeliner runs the hooks of the commands it
// batches on its own goroutines, a plain command on the caller's.
func viaAutoPipeliner() bool {
	pc := make([]uintptr, 64)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "github.com/cacheplane/cacheplane/pkg/cache.") {
			return false
		}
		if !more {
			return true
		}
	}
}

func (g *getGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *getGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "set" && viaAutoPipeliner() {
			g.pipedSets.Add(1)
		}
		if !g.isGet(cmd) {
			return next(ctx, cmd)
		}
		g.gets.Add(1)
		err := next(ctx, cmd)
		g.mu.Lock()
		hold, held := g.hold, g.held
		g.hold = nil
		g.mu.Unlock()
		if hold != nil {
			close(held)
			<-hold
		}
		return err
	}
}

func (g *getGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if g.isGet(cmd) {
				g.gets.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// gatedCache returns a cache on client (closed with the test), whose reads
// of key go through a getGate.
func gatedCache(t *testing.T, client redis.UniversalClient, cfg cache.Config, key string) (*cache.Cache, *getGate) {
	t.Helper()
	cfg.Client = client
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = testPrefix(t)
	}
	g := &getGate{key: cfg.KeyPrefix + ":" + key}
	client.AddHook(g)
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, g
}

type readResult struct {
	v     string
	found bool
	err   error
}

// readAsync reads key with Get (or GetOrLoad, whose loader fails the test)
// in a goroutine.
func readAsync(ctx context.Context, t *testing.T, c *cache.Cache, key string, viaLoad bool) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		var r readResult
		if viaLoad {
			r.v, r.err = cache.GetOrLoad(ctx, c, key, time.Minute, func(context.Context) (string, error) {
				return "loaded", nil
			})
			r.found = r.err == nil && r.v != "loaded"
		} else {
			r.found, r.err = c.Get(ctx, key, &r.v)
		}
		out <- r
	}()
	return out
}

// Redis topologies the coalescing tests run on: a client of each.
func coalescingTopologies(t *testing.T) map[string]func(t *testing.T) redis.UniversalClient {
	var (
		once sync.Once
		cl   *redistest.Cluster
		err  error
	)
	t.Cleanup(func() {
		if cl != nil {
			cl.Close()
		}
	})
	return map[string]func(t *testing.T) redis.UniversalClient{
		"standalone": func(t *testing.T) redis.UniversalClient {
			rc := srv.Client()
			t.Cleanup(func() { rc.Close() })
			return rc
		},
		"cluster": func(t *testing.T) redis.UniversalClient {
			once.Do(func() { cl, err = redistest.StartCluster(3) })
			if err != nil {
				t.Fatal(err)
			}
			rc := cl.Client()
			t.Cleanup(func() { rc.Close() })
			return rc
		},
	}
}

// Concurrent reads of one key share GETs: callers that arrive while a GET of
// the key is in flight share the next one (Get and GetOrLoad alike), one of
// them giving up returns at once with its context's error while the others
// still get the value, and a write or invalidation by this process that
// returned before callers arrived is never hidden from them by a GET sent
// before it.
func TestReadCoalescing(t *testing.T) {
	for name, client := range coalescingTopologies(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("shared", func(t *testing.T) { testReadsShared(t, client(t)) })
			t.Run("after-write", func(t *testing.T) { testReadsAfterWrite(t, client(t)) })
		})
	}
}

func testReadsShared(t *testing.T, client redis.UniversalClient) {
	const key = "user:1"
	c, g := gatedCache(t, client, cache.Config{}, key)
	ctx := context.Background()
	if err := c.Set(ctx, key, "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	g.gets.Store(0)
	held, release := g.holdNext()
	defer release()
	first := readAsync(ctx, t, c, key, false)
	<-held

	const n = 16
	var results []<-chan readResult
	for i := range n {
		results = append(results, readAsync(ctx, t, c, key, i%2 == 1))
	}
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := readAsync(cctx, t, c, key, false)
	waitFor(t, 10*time.Second, "callers gathered behind the GET in flight", func() bool {
		w, _ := cache.ReadWaiters(c, key)
		return w == n+1
	})
	cancel()
	// Back while the GET in flight is still held: it did not wait for it.
	if r := <-gaveUp; !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled caller: %+v, want context.Canceled", r)
	}
	if w, _ := cache.ReadWaiters(c, key); w != n {
		t.Errorf("%d callers wait after one gave up, want %d", w, n)
	}
	release()
	for i, ch := range append(results, first) {
		if r := <-ch; r.err != nil || !r.found || r.v != "v" {
			t.Errorf("caller %d: %+v, want v", i, r)
		}
	}
	// The held one, and one for the n that came while it was in flight.
	if got := g.gets.Load(); got != 2 {
		t.Errorf("%d GETs reached Redis for %d callers, want 2", got, n+2)
	}
	waitFor(t, 10*time.Second, "the key to be idle", func() bool {
		_, busy := cache.ReadWaiters(c, key)
		return !busy
	})
}

func testReadsAfterWrite(t *testing.T, client redis.UniversalClient) {
	const key = "user:1"
	c, g := gatedCache(t, client, cache.Config{}, key)
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context) error
		want  string // "": a miss
	}{
		{"Set", func(ctx context.Context) error { return c.Set(ctx, key, "new", time.Minute) }, "new"},
		{"Delete", func(ctx context.Context) error { _, err := c.Delete(ctx, key); return err }, ""},
		{"Invalidate key", func(ctx context.Context) error { _, err := c.Invalidate(ctx, key); return err }, ""},
		{"Invalidate pattern", func(ctx context.Context) error { _, err := c.Invalidate(ctx, "user:*"); return err }, ""},
		{"InvalidatePrefix", func(ctx context.Context) error { return c.InvalidatePrefix(ctx, "user") }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if err := c.Set(ctx, key, "old", time.Minute); err != nil {
				t.Fatal(err)
			}
			g.gets.Store(0)
			held, release := g.holdNext()
			defer release()
			first := readAsync(ctx, t, c, key, false)
			<-held // Redis has answered it "old"
			if err := tc.write(ctx); err != nil {
				t.Fatal(err)
			}
			const n = 8
			var results []<-chan readResult
			for i := range n {
				results = append(results, readAsync(ctx, t, c, key, i%2 == 1))
			}
			waitFor(t, 10*time.Second, "callers gathered behind the GET in flight", func() bool {
				w, _ := cache.ReadWaiters(c, key)
				return w == n
			})
			release()
			<-first // concurrent with the write: either answer will do
			for i, ch := range results {
				r := <-ch
				got := r.v
				if !r.found {
					got = ""
				}
				if r.err != nil || got != tc.want {
					t.Errorf("caller %d after %s: %+v, want %q", i, tc.name, r, tc.want)
				}
			}
			if got := g.gets.Load(); got != 2 {
				t.Errorf("%d GETs reached Redis, want 2", got)
			}
		})
	}
}

// DisableReadCoalescing sends one GET per read.
func TestReadCoalescingDisabled(t *testing.T) {
	const key = "user:1"
	rc := srv.Client()
	t.Cleanup(func() { rc.Close() })
	c, g := gatedCache(t, rc, cache.Config{DisableReadCoalescing: true}, key)
	ctx := context.Background()
	if err := c.Set(ctx, key, "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	g.gets.Store(0)
	held, release := g.holdNext()
	defer release()
	first := readAsync(ctx, t, c, key, false)
	<-held
	const n = 8
	for range n { // each its own GET: none waits for the held one
		if r := <-readAsync(ctx, t, c, key, false); r.err != nil || r.v != "v" {
			t.Errorf("read %+v", r)
		}
	}
	release()
	<-first
	if got := g.gets.Load(); got != n+1 {
		t.Errorf("%d GETs reached Redis, want %d", got, n+1)
	}
}

// AutoPipeline is on by default: a call made while another is in flight goes
// through the autopipeliner. DisableAutoPipeline turns it off; the deprecated
// AutoPipeline field changes nothing, and contradicting it is an error.
func TestAutoPipelineDefault(t *testing.T) {
	if _, err := cache.New(cache.Config{AutoPipeline: true, DisableAutoPipeline: true}); err == nil ||
		!strings.Contains(err.Error(), "DisableAutoPipeline") {
		t.Errorf("New with both AutoPipeline and DisableAutoPipeline: %v", err)
	}
	for _, tc := range []struct {
		name   string
		cfg    cache.Config
		piped  bool
		prefix string
	}{
		{"default", cache.Config{}, true, "d"},
		{"deprecated AutoPipeline", cache.Config{AutoPipeline: true}, true, "a"},
		{"DisableAutoPipeline", cache.Config{DisableAutoPipeline: true}, false, "n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const key = "user:1"
			rc := srv.Client()
			t.Cleanup(func() { rc.Close() })
			tc.cfg.KeyPrefix = testPrefix(t) + tc.prefix
			c, g := gatedCache(t, rc, tc.cfg, key)
			if got := cache.AutoPipelined(c); got != tc.piped {
				t.Errorf("AutoPipelined = %v, want %v", got, tc.piped)
			}
			ctx := context.Background()
			if err := c.Set(ctx, key, "v", time.Minute); err != nil {
				t.Fatal(err)
			}
			held, release := g.holdNext()
			defer release()
			first := readAsync(ctx, t, c, key, false)
			<-held // one call in flight
			for i := range 3 {
				if err := c.Set(ctx, fmt.Sprint("user:other", i), "w", time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			release()
			<-first
			if piped := g.pipedSets.Load() == 3; piped != tc.piped {
				t.Errorf("%d of 3 SETs made beside a call in flight were pipelined; want pipelining %v", g.pipedSets.Load(), tc.piped)
			}
		})
	}
}
