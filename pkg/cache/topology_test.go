package cache_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Helpers shared by the tests that run the cache against other topologies
// (cluster_test.go, sentinel_test.go) and secured servers (tls_test.go,
// acl_test.go). Unlike newCache, they fill in nothing from the package's
// standalone server.

// connect returns a connected cache, closed when the test ends.
func connectTopology(t *testing.T, cfg cache.Config) *cache.Cache {
	t.Helper()
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// remote plays the controller's part, and checks what is stored, with an
// unrestricted client of any topology.
type topoOperator struct {
	t     *testing.T
	rc    redis.UniversalClient
	space keyspace.Space
}

func newTopoOperator(t *testing.T, rc redis.UniversalClient, keyPrefix string) *topoOperator {
	t.Cleanup(func() { rc.Close() })
	return &topoOperator{t: t, rc: rc, space: keyspace.New(keyPrefix)}
}

func (r *topoOperator) setPolicy(prefix string, ttl time.Duration) {
	r.t.Helper()
	p := keyspace.PrefixPolicy{TTLMillis: ttl.Milliseconds()}
	if err := r.rc.HSet(context.Background(), r.space.PolicyKey(), prefix, p.Marshal()).Err(); err != nil {
		r.t.Fatal(err)
	}
}

// publish publishes ev; an invalidated event is made a real bump of its
// prefix (its Generation is ignored), as generations come from the server's
// clock.
func (r *topoOperator) publish(ev keyspace.Event) {
	r.t.Helper()
	if ev.Type == keyspace.EventInvalidated {
		if _, err := r.space.BumpGenerations(context.Background(), r.rc, []string{ev.Prefix}, nil); err != nil {
			r.t.Fatal(err)
		}
		return
	}
	if err := r.rc.Publish(context.Background(), r.space.EventsChannel(), ev.Marshal()).Err(); err != nil {
		r.t.Fatal(err)
	}
}

// subscribers counts the subscribers of the events channel. A cluster node
// knows only its own subscribers (messages are broadcast to every node), so
// the masters' counts are added up.
func (r *topoOperator) subscribers() int64 {
	ctx := context.Background()
	ch := r.space.EventsChannel()
	cc, ok := r.rc.(*redis.ClusterClient)
	if !ok {
		return r.rc.PubSubNumSub(ctx, ch).Val()[ch]
	}
	var n atomic.Int64
	_ = cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		n.Add(node.PubSubNumSub(ctx, ch).Val()[ch])
		return nil
	})
	return n.Load()
}

func (r *topoOperator) waitSubscribed(n int64) {
	r.t.Helper()
	waitFor(r.t, 10*time.Second, "the cache to subscribe to its events", func() bool { return r.subscribers() >= n })
}

func (r *topoOperator) exists(key string) bool {
	r.t.Helper()
	n, err := r.rc.Exists(context.Background(), r.space.DataKey(key)).Result()
	if err != nil {
		r.t.Fatal(err)
	}
	return n == 1
}

type topoItem struct{ N int }

// exercise runs every part of the cache's API against c and checks the
// results, with r as the operator: the same expectations on every topology.
func exerciseAPI(t *testing.T, c *cache.Cache, r *topoOperator) {
	t.Helper()
	ctx := context.Background()

	// Typed Set and Get over many keys: on a cluster, over every master.
	for i := range 100 {
		if err := c.Set(ctx, "user:"+strconv.Itoa(i), topoItem{i}, 0); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}
	for i := range 100 {
		var got topoItem
		found, err := c.Get(ctx, "user:"+strconv.Itoa(i), &got)
		if err != nil || !found || got.N != i {
			t.Fatalf("Get user:%d = %v, %v, %v; want {%d}", i, got, found, err, i)
		}
	}
	if found, err := c.Get(ctx, "user:none", nil); found || err != nil {
		t.Errorf("Get of a missing key = %v, %v; want a miss", found, err)
	}
	if ok, err := c.Exists(ctx, "user:1"); !ok || err != nil {
		t.Errorf("Exists user:1 = %v, %v", ok, err)
	}
	if d, err := c.TTL(ctx, "user:1"); err != nil || d <= 0 || d > time.Minute {
		t.Errorf("TTL user:1 = %v, %v; want (0, 1m] (DefaultTTL)", d, err)
	}
	if !r.exists("user:1") {
		t.Error("the entry is not stored under the KeyPrefix")
	}
	// A multi-key Delete: on a cluster the keys lie in different slots.
	var keys []string
	for i := range 50 {
		keys = append(keys, "user:"+strconv.Itoa(i))
	}
	if n, err := c.Delete(ctx, keys...); n != 50 || err != nil {
		t.Errorf("Delete of 50 keys = %d, %v; want 50", n, err)
	}
	if hit(c, "user:0") || !hit(c, "user:50") {
		t.Error("Delete removed the wrong keys")
	}

	// GetOrLoad loads once, then serves from Redis.
	var loads atomic.Int32
	for range 3 {
		v, err := cache.GetOrLoad(ctx, c, "load:1", 0, func(context.Context) (string, error) {
			loads.Add(1)
			return "loaded", nil
		})
		if v != "loaded" || err != nil {
			t.Fatalf("GetOrLoad = %q, %v", v, err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("GetOrLoad called its loader %d times, want 1", n)
	}

	// The middleware serves the second GET from Redis; a PUT invalidates.
	var calls atomic.Int32
	h := cache.HTTPMiddleware(c, "page", time.Minute)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		fmt.Fprintf(w, "page %d", calls.Add(1))
	}))
	get := func() string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/page/1", nil))
		return w.Body.String()
	}
	if a, b := get(), get(); a != "page 1" || b != "page 1" {
		t.Errorf("middleware responses %q, %q; want the first one twice", a, b)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/page/1", nil))
	if got := get(); got != "page 2" {
		t.Errorf("after a PUT the middleware served %q, want a fresh \"page 2\"", got)
	}

	// Invalidate deletes what matches, on every node, and nothing else.
	for i := range 300 {
		_ = c.Set(ctx, "inv:"+strconv.Itoa(i), i, 0)
	}
	for i := range 10 {
		_ = c.Set(ctx, "keep:"+strconv.Itoa(i), i, 0)
	}
	if n, err := c.Invalidate(ctx, "inv:*"); n != 300 || err != nil {
		t.Errorf("Invalidate inv:* = %d, %v; want 300", n, err)
	}
	for i := range 10 {
		if !hit(c, "keep:"+strconv.Itoa(i)) {
			t.Errorf("Invalidate inv:* deleted keep:%d", i)
		}
	}
	if n, _ := c.Invalidate(ctx, "inv:*"); n != 0 {
		t.Errorf("a second Invalidate found %d keys", n)
	}

	// The cache follows the policy: a TTL change and an invalidation,
	// announced on the events channel.
	r.waitSubscribed(1)
	r.setPolicy("pol", time.Hour)
	r.publish(keyspace.Event{Type: keyspace.EventPolicyChanged})
	waitFor(t, 5*time.Second, "the policy TTL", func() bool {
		_ = c.Set(ctx, "pol:probe", 1, 0)
		d, _ := c.TTL(ctx, "pol:probe")
		return d > 59*time.Minute
	})
	_ = c.Set(ctx, "pol:1", 1, 0)
	if !hit(c, "pol:1") {
		t.Fatal("pol:1 missing before the invalidation")
	}
	r.publish(keyspace.Event{Type: keyspace.EventInvalidated, Prefix: "pol", Generation: 1})
	waitFor(t, 5*time.Second, "pol:1 to turn stale", func() bool { return !hit(c, "pol:1") })
	_ = c.Set(ctx, "pol:2", 2, 0)
	if !hit(c, "pol:2") {
		t.Error("an entry written after the invalidation is not served")
	}

	// Stats land in the prefix's hash (one pipelined round trip, one slot).
	if err := cache.FlushStats(c); err != nil {
		t.Fatalf("FlushStats: %v", err)
	}
	want := c.Stats().Prefixes
	for _, prefix := range []string{"user", "load", "pol"} {
		got, err := r.rc.HGetAll(ctx, r.space.StatsKey(prefix)).Result()
		if err != nil {
			t.Fatal(err)
		}
		w := want[prefix]
		if got[keyspace.FieldHits] != strconv.FormatInt(w.Hits, 10) || got[keyspace.FieldMisses] != strconv.FormatInt(w.Misses, 10) {
			t.Errorf("stats hash of %q = %v; want hits %d, misses %d", prefix, got, w.Hits, w.Misses)
		}
	}
	if s := c.Stats(); s.Errors != 0 {
		t.Errorf("%d errors counted: %+v", s.Errors, s.Prefixes)
	}
}

// noACLDenials fails the test if any server refused anything to user.
func noACLDenials(t *testing.T, user string, servers ...*redistest.Server) {
	t.Helper()
	for _, s := range servers {
		log, err := s.ACLLog()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range log {
			if e["username"] == user {
				t.Errorf("%s refused %s: %v", s.Addr(), user, e)
			}
		}
	}
}

// TestConfigModes checks that New refuses incomplete topologies with a
// message that says what is missing, and that Connect names the topology it
// could not reach.
func TestConfigModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  cache.Config
		want string
	}{
		{"unknown mode", cache.Config{Mode: "cluster", Addrs: []string{"127.0.0.1:1"}}, `unknown Redis mode "cluster"`},
		// No DefaultURL fallback: that would quietly seed a cluster with localhost.
		{"cluster without addresses", cache.Config{Mode: cache.ModeCluster}, "Cluster mode needs addresses"},
		{"sentinel without master", cache.Config{Mode: cache.ModeSentinel, Addrs: []string{"127.0.0.1:1"}}, "master's name"},
		{"bad address", cache.Config{Mode: cache.ModeSentinel, MasterName: "m", Addrs: []string{"sentinel-0"}}, "not host:port"},
		{"cluster database", cache.Config{Mode: cache.ModeCluster, URL: "redis://127.0.0.1:1/3"}, "database 0 only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cache.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: err = %v, want one saying %q", err, tc.want)
			}
		})
	}

	dead := blackhole(t) // accepts connections, never answers
	addr := strings.TrimSuffix(strings.TrimPrefix(dead, "redis://"), "/0")
	for _, cfg := range []cache.Config{
		{Mode: cache.ModeCluster, Addrs: []string{addr}},
		{Mode: cache.ModeSentinel, Addrs: []string{addr}, MasterName: "mymaster"},
	} {
		const timeout = 300 * time.Millisecond
		cfg.SocketTimeout = timeout
		c, err := cache.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = c.Connect(context.Background())
		elapsed := time.Since(start)
		c.Close()
		if err == nil {
			t.Fatalf("%s: Connect to a server that never answers succeeded", cfg.Mode)
		}
		t.Logf("%s: %v (after %v)", cfg.Mode, err, elapsed)
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("%s: Connect's error %q does not name %s", cfg.Mode, err, addr)
		}
		if elapsed > timeout+200*time.Millisecond {
			t.Errorf("%s: Connect took %v, more than SocketTimeout %v", cfg.Mode, elapsed, timeout)
		}
	}
}
