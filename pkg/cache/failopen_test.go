package cache_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// The tests here break their Redis on purpose: each gets its own server (or a
// proxy of its own in front of the shared one), so they run in parallel with
// the others.

// failOpenCalls exercises every call once and reports, per call, its error
// and how long it took. Fail-open calls must succeed; primitives must fail.
func failOpenCalls(t *testing.T, c *cache.Cache, api *httptest.Server) map[string]struct {
	err     error
	elapsed time.Duration
} {
	t.Helper()
	ctx := context.Background()
	var loads atomic.Int32
	load := func(context.Context) (string, error) { loads.Add(1); return "from source", nil }
	calls := map[string]func() error{
		"Get":    func() error { _, err := c.Get(ctx, "user:1", new(string)); return err },
		"Set":    func() error { return c.Set(ctx, "user:1", "v", 0) },
		"Delete": func() error { _, err := c.Delete(ctx, "user:1"); return err },
		"Exists": func() error { _, err := c.Exists(ctx, "user:1"); return err },
		"TTL":    func() error { _, err := c.TTL(ctx, "user:1"); return err },
		"Invalidate": func() error {
			_, err := c.Invalidate(ctx, "user:*")
			return err
		},
		"GetOrLoad": func() error {
			v, err := cache.GetOrLoad(ctx, c, "user:2", 0, load)
			if err == nil && v != "from source" {
				return errors.New("GetOrLoad returned " + v)
			}
			return err
		},
		"Cached": func() error {
			f := cache.Cached(c, "users", 0, func(id int) map[string]any { return map[string]any{"id": id} },
				func(context.Context, int) (string, error) { return "from source", nil })
			_, err := f(ctx, 1)
			return err
		},
		"InvalidateOnWrite": func() error {
			f := cache.InvalidateOnWrite(c, "users", func(context.Context, int) (int, error) { return 1, nil })
			_, err := f(ctx, 1)
			return err
		},
		"HTTP GET": func() error {
			resp, err := api.Client().Get(api.URL + "/users/1")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "MISS" {
				return errors.New("HTTP GET: " + resp.Status + " X-Cache " + resp.Header.Get("X-Cache"))
			}
			return nil
		},
		"HTTP PUT": func() error {
			req, _ := http.NewRequest(http.MethodPut, api.URL+"/users/1", nil)
			resp, err := api.Client().Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				return errors.New("HTTP PUT: " + resp.Status)
			}
			return nil
		},
	}
	results := map[string]struct {
		err     error
		elapsed time.Duration
	}{}
	for name, call := range calls {
		start := time.Now()
		err := call()
		results[name] = struct {
			err     error
			elapsed time.Duration
		}{err, time.Since(start)}
	}
	if loads.Load() != 1 {
		t.Errorf("GetOrLoad's loader ran %d times, want 1", loads.Load())
	}
	return results
}

// checkStalled makes every call against a stalled server: each fails open or
// errs as it should, within SocketTimeout (timeout), and a shorter caller
// context ends a call sooner.
func checkStalled(t *testing.T, c *cache.Cache, api *httptest.Server, timeout time.Duration) {
	t.Helper()
	for name, r := range failOpenCalls(t, c, api) {
		t.Logf("%s with Redis stalled: %v", name, r.elapsed)
		if failOpen[name] != (r.err == nil) {
			t.Errorf("%s with Redis stalled: %v (fail open: %v)", name, r.err, failOpen[name])
		}
		// Retries would take several timeouts; allow scheduling slack only.
		if limit := timeout + 400*time.Millisecond; r.elapsed > limit {
			t.Errorf("%s with Redis stalled took %v, want at most SocketTimeout %v (+ slack)", name, r.elapsed, timeout)
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Get(short, "user:1", nil); err == nil {
		t.Error("Get with a 50ms context succeeded against a stalled server")
	}
	if elapsed := time.Since(start); elapsed > timeout/2 {
		t.Errorf("Get with a 50ms context took %v", elapsed)
	}
}

var failOpen = map[string]bool{"GetOrLoad": true, "Cached": true, "InvalidateOnWrite": true, "HTTP GET": true, "HTTP PUT": true}

func newMiddlewareAPI(t *testing.T, c *cache.Cache) *httptest.Server {
	mw := cache.HTTPMiddleware(c, "users", 0)
	mux := http.NewServeMux()
	mux.Handle("GET /users/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("user " + r.PathValue("id")))
	})))
	mux.Handle("PUT /users/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)
	return api
}

func TestFailOpenServerDown(t *testing.T) {
	t.Parallel()
	own, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	ctx := context.Background()
	kp := testPrefix(t)
	const timeout = 500 * time.Millisecond
	c := newCache(t, cache.Config{URL: own.URL(0), KeyPrefix: kp, SocketTimeout: timeout, PolicyRefresh: 50 * time.Millisecond})
	api := newMiddlewareAPI(t, c)
	if err := c.Set(ctx, "user:1", "cached", 0); err != nil {
		t.Fatal(err)
	}

	own.Stop()
	errorsBefore := c.Stats().Errors
	for name, r := range failOpenCalls(t, c, api) {
		t.Logf("%s with Redis down: %v", name, r.elapsed)
		if failOpen[name] != (r.err == nil) {
			t.Errorf("%s with Redis down: %v (fail open: %v)", name, r.err, failOpen[name])
		}
		if r.elapsed > timeout {
			t.Errorf("%s with Redis down took %v, more than SocketTimeout %v", name, r.elapsed, timeout)
		}
	}
	if c.Stats().Errors <= errorsBefore {
		t.Error("errors with Redis down were not counted")
	}
	if err := cache.FlushStats(c); err == nil {
		t.Error("a stats flush with Redis down succeeded")
	}

	// Back up: the pool reconnects, the subscription too (and re-reads the
	// policy), and the counters kept through the outage reach Redis.
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "writes to work again", func() bool { return c.Set(ctx, "user:1", "again", 0) == nil })
	if !hit(c, "user:1") {
		t.Error("no hit after the restart")
	}
	rc := own.Client()
	defer rc.Close()
	space := keyspace.New(kp)
	ch := space.EventsChannel()
	waitFor(t, 10*time.Second, "the subscription to come back", func() bool {
		return rc.PubSubNumSub(ctx, ch).Val()[ch] == 1
	})
	if _, err := space.BumpGenerations(ctx, rc, []string{"user"}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the invalidation after the restart", func() bool { return !hit(c, "user:1") })

	if err := cache.FlushStats(c); err != nil {
		t.Fatal(err)
	}
	s := c.Stats().Prefixes["user"]
	got := rc.HGetAll(ctx, space.StatsKey("user")).Val()
	if got["errors"] != itoa(s.Errors) || got["hits"] != itoa(s.Hits) || got["misses"] != itoa(s.Misses) {
		t.Errorf("stats hash after the outage %v, want the in-process totals %+v", got, s)
	}
}

func TestFailOpenServerStalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	proxy := startStallProxy(t, srv.Addr())
	const timeout = 500 * time.Millisecond
	c := newCache(t, cache.Config{URL: proxy.URL(), SocketTimeout: timeout})
	api := newMiddlewareAPI(t, c)
	if err := c.Set(ctx, "user:1", "cached", 0); err != nil {
		t.Fatal(err)
	}

	proxy.Stall()
	checkStalled(t, c, api, timeout)

	proxy.Resume()
	waitFor(t, 10*time.Second, "reads to work again", func() bool { return c.Set(ctx, "user:3", "x", 0) == nil })
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
