package cache_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  cache.Config
		want string // substring of the error; "" = valid
	}{
		{"zero config", cache.Config{}, ""},
		{"rediss", cache.Config{URL: "rediss://example.com:6380/1"}, ""},
		{"password in URL", cache.Config{URL: "redis://:hunter2@localhost:6379"}, "must not contain a password"},
		{"bad scheme", cache.Config{URL: "http://localhost:6379"}, "scheme"},
		{"negative timeout", cache.Config{SocketTimeout: -time.Second}, "SocketTimeout"},
		{"negative TTL", cache.Config{DefaultTTL: -time.Second}, "DefaultTTL"},
		{"negative pool", cache.Config{MaxConnections: -1}, "MaxConnections"},
		{"negative keep-alive disables", cache.Config{KeepAlive: -1}, ""},
		{"negative intervals disable", cache.Config{PolicyRefresh: -1, StatsFlushInterval: -1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cache.New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New: got %v, want an error containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Fatalf("error reveals the password: %v", err)
			}
		})
	}
}

func TestConnectUnreachable(t *testing.T) {
	t.Parallel()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		url  string
	}{
		{"refused", fmt.Sprintf("redis://127.0.0.1:%d/0", port)},
		{"never answers", blackhole(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			c, err := cache.New(cache.Config{URL: tc.url, SocketTimeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = c.Connect(context.Background())
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("Connect succeeded against an unusable server")
			}
			if addr := strings.TrimPrefix(strings.TrimSuffix(tc.url, "/0"), "redis://"); !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name the server %s", err, addr)
			}
			if elapsed > timeout+time.Second {
				t.Errorf("Connect took %v, want about SocketTimeout (%v)", elapsed, timeout)
			}
			if _, err := c.Get(context.Background(), "k", nil); !errors.Is(err, cache.ErrNotConnected) {
				t.Errorf("Get after failed Connect: %v, want ErrNotConnected", err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := cache.New(cache.Config{URL: srv.URL(0), KeyPrefix: testPrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if c.Client() != nil {
		t.Error("Client() before Connect is not nil")
	}
	if _, err := c.Get(ctx, "k", nil); !errors.Is(err, cache.ErrNotConnected) {
		t.Errorf("Get before Connect: %v, want ErrNotConnected", err)
	}
	if err := c.Set(ctx, "k", 1, 0); !errors.Is(err, cache.ErrNotConnected) {
		t.Errorf("Set before Connect: %v, want ErrNotConnected", err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Errorf("second Connect: %v", err)
	}
	if err := c.Client().Ping(ctx).Err(); err != nil {
		t.Errorf("Client().Ping: %v", err)
	}
	if err := c.Set(ctx, "k", 1, 0); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	for name, err := range map[string]error{
		"Get":     func() error { _, err := c.Get(ctx, "k", nil); return err }(),
		"Set":     c.Set(ctx, "k", 1, 0),
		"Connect": c.Connect(ctx),
	} {
		if !errors.Is(err, cache.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if c.Client() != nil {
		t.Error("Client() after Close is not nil")
	}
}

type user struct {
	ID    int      `json:"id"`
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

func TestSetGetRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp})
	rc := rawClient(t)
	for _, tc := range []struct {
		name  string
		value any
		dst   func() any // a fresh pointer to decode into
	}{
		{"struct", user{ID: 1, Name: "Ada", Roles: []string{"admin"}}, func() any { return new(user) }},
		{"map", map[string]any{"a": 1.5, "b": "x"}, func() any { return new(map[string]any) }},
		{"string", "héllo", func() any { return new(string) }},
		{"int", 42, func() any { return new(int) }},
		{"slice", []int{3, 1, 2}, func() any { return new([]int) }},
		{"bytes", []byte{0, 1, 255}, func() any { return new([]byte) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "rt:" + tc.name
			if err := c.Set(ctx, key, tc.value, time.Minute); err != nil {
				t.Fatal(err)
			}
			dst := tc.dst()
			found, err := c.Get(ctx, key, dst)
			if err != nil || !found {
				t.Fatalf("Get = %v, %v", found, err)
			}
			if got := reflect.ValueOf(dst).Elem().Interface(); !reflect.DeepEqual(got, tc.value) {
				t.Errorf("Get decoded %#v, want %#v", got, tc.value)
			}
			// Stored under KeyPrefix, as entry header + the value's JSON.
			raw, err := rc.Get(ctx, kp+":"+key).Bytes()
			if err != nil {
				t.Fatalf("raw GET of the prefixed key: %v", err)
			}
			gen, payload, err := keyspace.ParseEntry(raw)
			gens, _ := keyspace.ParseGenerations(keyspace.New(kp).EnsureGenerations(ctx, rc))
			if want := gens.Of(keyspace.PrefixOf(key)); err != nil || gen != want {
				t.Fatalf("stored value: generation %d, %v; want the prefix's %d", gen, err, want)
			}
			want, _ := json.Marshal(tc.value)
			if string(payload) != string(want) {
				t.Errorf("stored payload %s, want %s", payload, want)
			}
		})
	}
}

func TestGetMissing(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	var v user
	found, err := c.Get(context.Background(), "user:missing", &v)
	if found || err != nil {
		t.Fatalf("Get of a missing key = %v, %v; want false, nil", found, err)
	}
	if s := c.Stats(); s.Misses != 1 || s.Hits != 0 || s.Errors != 0 {
		t.Errorf("stats after one miss: %+v", s)
	}
}

func TestValueErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	rc := rawClient(t)
	kp := testPrefix(t)

	for _, v := range []any{make(chan int), math.NaN(), func() {}} {
		if err := c.Set(ctx, "bad:v", v, 0); err == nil || !strings.Contains(err.Error(), "encode") {
			t.Errorf("Set(%T) = %v, want an encode error", v, err)
		}
	}
	if n, _ := rc.Exists(ctx, kp+":bad:v").Result(); n != 0 {
		t.Error("an unencodable value left a key behind")
	}

	if err := c.Set(ctx, "bad:type", "text", 0); err != nil {
		t.Fatal(err)
	}
	var n int
	if found, err := c.Get(ctx, "bad:type", &n); found || err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("Get into the wrong type = %v, %v; want a decode error", found, err)
	}

	// Values not written by the cache are misses, never decoded.
	for i, foreign := range []string{"plain", "", "\xff", "\xff\x01", "\xff\x02\x00{}", `{"id":1}`} {
		key := "bad:foreign" + strconv.Itoa(i)
		if err := rc.Set(ctx, kp+":"+key, foreign, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		var u user
		if found, err := c.Get(ctx, key, &u); found || err != nil {
			t.Errorf("Get of foreign value %q = %v, %v; want a miss", foreign, found, err)
		}
	}
	s := c.Stats().Prefixes["bad"]
	// 3 encode + 1 decode + 6 foreign errors; 1 decode + 6 foreign misses.
	if s.Errors != 10 || s.Misses != 7 || s.Hits != 0 {
		t.Errorf("stats of prefix bad = %+v, want 10 errors, 7 misses", s)
	}
}

func TestDeleteExistsTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{DefaultTTL: 7 * time.Minute})
	rc := rawClient(t)

	for _, k := range []string{"d:1", "d:2", "d:3"} {
		if err := c.Set(ctx, k, k, 0); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := c.Exists(ctx, "d:1"); !ok || err != nil {
		t.Errorf("Exists(d:1) = %v, %v", ok, err)
	}
	if ok, err := c.Exists(ctx, "d:none"); ok || err != nil {
		t.Errorf("Exists(d:none) = %v, %v", ok, err)
	}

	ttl, err := c.TTL(ctx, "d:1")
	if err != nil || ttl <= 7*time.Minute-10*time.Second || ttl > 7*time.Minute {
		t.Errorf("TTL with ttl 0 = %v, %v; want about DefaultTTL (7m)", ttl, err)
	}
	if err := c.Set(ctx, "d:1", 1, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	if ttl, err := c.TTL(ctx, "d:1"); err != nil || ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Errorf("TTL with ttl 90s = %v, %v", ttl, err)
	}
	if _, err := c.TTL(ctx, "d:none"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("TTL of a missing key: %v, want ErrNotFound", err)
	}
	if err := rc.Set(ctx, testPrefix(t)+":d:forever", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if ttl, err := c.TTL(ctx, "d:forever"); ttl != -1 || err != nil {
		t.Errorf("TTL of a key without expiry = %v, %v; want -1", ttl, err)
	}

	if n, err := c.Delete(ctx, "d:1", "d:2", "d:none"); n != 2 || err != nil {
		t.Errorf("Delete = %d, %v; want 2", n, err)
	}
	if n, err := c.Delete(ctx); n != 0 || err != nil {
		t.Errorf("Delete() = %d, %v", n, err)
	}
	if ok, _ := c.Exists(ctx, "d:1"); ok {
		t.Error("d:1 exists after Delete")
	}
	if ok, _ := c.Exists(ctx, "d:3"); !ok {
		t.Error("Delete removed a key it was not given")
	}
}

func TestTTLExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	rc := rawClient(t)
	if err := c.Set(ctx, "short:1", "v", 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if found, _ := c.Get(ctx, "short:1", nil); !found {
		t.Fatal("value missing right after Set")
	}
	redisKey := testPrefix(t) + ":short:1"
	waitFor(t, 5*time.Second, "the key to expire in Redis", func() bool {
		return rc.Exists(ctx, redisKey).Val() == 0
	})
	if found, err := c.Get(ctx, "short:1", nil); found || err != nil {
		t.Errorf("Get after expiry = %v, %v; want a miss", found, err)
	}
}

func TestInvalidate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp})
	rc := rawClient(t)

	const users = 10_500
	// Bulk keys are written raw (10k Sets through the cache would only slow
	// the test down); a few go through Set to cover real entries.
	write := func(prefix string, n int) {
		pipe := rc.Pipeline()
		for i := range n {
			pipe.Set(ctx, fmt.Sprintf("%s%d", prefix, i), "x", time.Hour)
			if i%1000 == 999 {
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write(kp+":user:", users)
	write(kp+":order:", 100)
	write(kp+":users:", 10)  // shares "user" as a string prefix, not as a prefix
	write(kp+"x:user:", 100) // another tenant whose name extends ours
	for i := range 5 {
		if err := c.Set(ctx, fmt.Sprintf("user:set%d", i), i, 0); err != nil {
			t.Fatal(err)
		}
	}

	n, err := c.Invalidate(ctx, "user:*")
	if err != nil {
		t.Fatal(err)
	}
	if n != users+5 {
		t.Errorf("Invalidate deleted %d keys, want %d", n, users+5)
	}
	count := func(pattern string) int {
		keys, err := rc.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}
	for pattern, want := range map[string]int{
		kp + ":user:*":  0,
		kp + ":order:*": 100,
		kp + ":users:*": 10,
		kp + "x:user:*": 100,
	} {
		if got := count(pattern); got != want {
			t.Errorf("%s: %d keys left, want %d", pattern, got, want)
		}
	}
	if n, err := c.Invalidate(ctx, "user:*"); n != 0 || err != nil {
		t.Errorf("second Invalidate = %d, %v; want 0", n, err)
	}
}

func TestKeyPrefixEscaping(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := rawClient(t)
	base := testPrefix(t)
	for _, tc := range []struct {
		name      string
		keyPrefix string   // appended to the test's prefix
		outside   []string // keys (appended to the test's prefix) the tenant must not reach
	}{
		// Glob characters and ':' never reach a Space through New
		// (TestNewRejectsWhatTheCRDRejects); FuzzPatternEscape covers their
		// escaping in pkg/cache/keyspace.
		{"plain", "a", []string{"ab:user:1", "b:user:1", "a", "ab"}},
		{"dash", "a-b", []string{"a-bc:user:1", "a:user:1", "a-b", "a:b:user:1"}},
		{"slash", "a/b", []string{"a/bc:user:1", "a:user:1", "a/b/c:user:1"}},
		{"dot", "a.b", []string{"axb:user:1", "a.bc:user:1", "a:user:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kp := base + "/" + tc.keyPrefix
			c := newCache(t, cache.Config{KeyPrefix: kp})
			for _, k := range tc.outside {
				if err := rc.Set(ctx, base+"/"+k, "outsider", time.Hour).Err(); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range []string{"user:1", "user:2", "x"} {
				if err := c.Set(ctx, k, k, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			if got := rc.Exists(ctx, kp+":user:1").Val(); got != 1 {
				t.Fatalf("Set did not store %s:user:1", kp)
			}
			n, err := c.Invalidate(ctx, "*")
			if err != nil {
				t.Fatal(err)
			}
			if n != 3 {
				t.Errorf("Invalidate(*) deleted %d keys, want the tenant's 3", n)
			}
			for _, k := range tc.outside {
				if rc.Exists(ctx, base+"/"+k).Val() != 1 {
					t.Errorf("Invalidate(*) of tenant %q deleted %q", kp, base+"/"+k)
				}
			}
		})
	}
}

// markedCodec stores JSON with a marker, to prove the configured codec is used
// both ways.
type markedCodec struct{ marshals, unmarshals int }

func (m *markedCodec) Marshal(v any) ([]byte, error) {
	m.marshals++
	b, err := json.Marshal(v)
	return append([]byte("M"), b...), err
}

func (m *markedCodec) Unmarshal(b []byte, v any) error {
	m.unmarshals++
	if len(b) == 0 || b[0] != 'M' {
		return errors.New("not marked")
	}
	return json.Unmarshal(b[1:], v)
}

func TestCustomCodec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	codec := &markedCodec{}
	c := newCache(t, cache.Config{Codec: codec})
	if err := c.Set(ctx, "c:1", user{ID: 7}, 0); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t).Get(ctx, testPrefix(t)+":c:1").Val()
	if _, payload, _ := keyspace.ParseEntry([]byte(raw)); !strings.HasPrefix(string(payload), `M{"id":7`) {
		t.Errorf("stored payload %q was not written by the codec", payload)
	}
	var u user
	if found, err := c.Get(ctx, "c:1", &u); !found || err != nil || u.ID != 7 {
		t.Errorf("Get = %v, %v, %+v", found, err, u)
	}
	if codec.marshals != 1 || codec.unmarshals != 1 {
		t.Errorf("codec used %d/%d times, want 1/1", codec.marshals, codec.unmarshals)
	}
}

func TestContextCancelled(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{
		"Get":        func() error { _, err := c.Get(ctx, "x:1", nil); return err }(),
		"Set":        c.Set(ctx, "x:1", 1, 0),
		"Delete":     func() error { _, err := c.Delete(ctx, "x:1"); return err }(),
		"Exists":     func() error { _, err := c.Exists(ctx, "x:1"); return err }(),
		"TTL":        func() error { _, err := c.TTL(ctx, "x:1"); return err }(),
		"Invalidate": func() error { _, err := c.Invalidate(ctx, "x:*"); return err }(),
		"GetOrLoad": func() error {
			_, err := cache.GetOrLoad(ctx, c, "x:2", 0, func(context.Context) (int, error) {
				t.Error("loader called with a cancelled context")
				return 0, nil
			})
			return err
		}(),
	}
	for name, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	if s := c.Stats(); s.Errors != 0 {
		t.Errorf("the caller's cancellation counted as %d errors", s.Errors)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	for _, k := range []string{"user:1", "user:2", "order:1"} {
		if err := c.Set(ctx, k, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	reads := []string{"user:1", "user:1", "user:2", "user:3", "order:1", "order:2", "order:3", "plain"}
	for _, k := range reads {
		if _, err := c.Get(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Set(ctx, "user:bad", make(chan int), 0) // one error
	want := cache.Stats{
		Hits: 4, Misses: 4, Errors: 1, HitRate: 50,
		Prefixes: map[string]cache.PrefixStats{
			"user":  {Hits: 3, Misses: 1, Errors: 1, HitRate: 75},
			"order": {Hits: 1, Misses: 2, HitRate: 100.0 / 3},
			"plain": {Misses: 1},
		},
	}
	if got := c.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats() = %+v\nwant      %+v", got, want)
	}

	rec := httptest.NewRecorder()
	cache.StatsHandler(c).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/cache/stats", nil))
	var served cache.Stats
	if err := json.Unmarshal(rec.Body.Bytes(), &served); err != nil {
		t.Fatalf("StatsHandler body %q: %v", rec.Body, err)
	}
	if rec.Header().Get("Content-Type") != "application/json" || !reflect.DeepEqual(served, want) {
		t.Errorf("StatsHandler served %s (%s)", rec.Body, rec.Header().Get("Content-Type"))
	}
	if s := (*cache.Cache)(nil).Stats(); s.Hits != 0 || s.Prefixes == nil {
		t.Errorf("nil cache Stats() = %+v", s)
	}
}

func TestStatsPrefixCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	n := cache.MaxPrefixes + 100
	for i := range n {
		if _, err := c.Get(ctx, "p"+strconv.Itoa(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	s := c.Stats()
	if len(s.Prefixes) > cache.MaxPrefixes+1 {
		t.Errorf("%d prefixes kept apart, want at most %d", len(s.Prefixes), cache.MaxPrefixes+1)
	}
	if s.Misses != int64(n) || s.Prefixes[cache.OtherPrefix].Misses == 0 {
		t.Errorf("misses %d (want %d), under %s: %d", s.Misses, n, cache.OtherPrefix, s.Prefixes[cache.OtherPrefix].Misses)
	}
}

func TestStatsFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kp := testPrefix(t)
	rc := rawClient(t)
	statsKey := keyspace.New(kp).StatsKey("user")

	// Two processes' worth of caches under one KeyPrefix: their counts add up.
	a := newCache(t, cache.Config{KeyPrefix: kp, StatsFlushInterval: time.Hour})
	b := newCache(t, cache.Config{KeyPrefix: kp, StatsFlushInterval: time.Hour})
	_ = a.Set(ctx, "user:1", 1, 0)
	for range 3 {
		_, _ = a.Get(ctx, "user:1", nil)
	}
	_, _ = b.Get(ctx, "user:1", nil)
	_, _ = b.Get(ctx, "user:2", nil)
	_ = b.Set(ctx, "user:3", make(chan int), 0)

	if err := cache.FlushStats(a); err != nil {
		t.Fatal(err)
	}
	if err := cache.FlushStats(a); err != nil { // nothing new: adds nothing
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // Close flushes
		t.Fatal(err)
	}
	want := map[string]string{"hits": "4", "misses": "1", "errors": "1"}
	if got := rc.HGetAll(ctx, statsKey).Val(); !reflect.DeepEqual(got, want) {
		t.Errorf("stats hash %s = %v, want %v", statsKey, got, want)
	}

	// Periodic flushes.
	c := newCache(t, cache.Config{KeyPrefix: kp, StatsFlushInterval: 20 * time.Millisecond})
	_, _ = c.Get(ctx, "user:1", nil)
	waitFor(t, 5*time.Second, "the periodic flush", func() bool {
		return rc.HGet(ctx, statsKey, "hits").Val() == "5"
	})
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	hash := func(canonical string) string {
		sum := sha256.Sum256([]byte(canonical))
		return hex.EncodeToString(sum[:8])
	}
	for _, tc := range []struct {
		name      string
		params    map[string]any
		canonical string // the documented bytes hashed
	}{
		{"doc example", map[string]any{"user_id": 1, "status": "active"}, `{"status":"active","user_id":1}`},
		{"nil", nil, `{}`},
		{"empty", map[string]any{}, `{}`},
		{"html not escaped", map[string]any{"q": "<a&b>"}, `{"q":"<a&b>"}`},
		{"nested sorted", map[string]any{"b": map[string]any{"z": true, "a": nil}, "a": []any{1.5, "x"}}, `{"a":[1.5,"x"],"b":{"a":null,"z":true}}`},
		{"unicode and escapes", map[string]any{"é": "line\n\"q\"\t\x01"}, `{"é":"line\n\"q\"\t\u0001"}`},
		{"floats", map[string]any{"big": 1e21, "small": 1e-7, "int": 2.0}, `{"big":1e+21,"int":2,"small":1e-7}`},
		{"unencodable", map[string]any{"f": math.Inf(1)}, `{"f":"float64(+Inf)"}`},
		{"invalid UTF-8", map[string]any{"b": []any{"\xfe\xfe"}, "a": "\xff", "c": "\ufffd"}, `{"a":"\ufffd","b":["\ufffd\ufffd"],"c":"�"}` + "\x00\x01\xff\x02\xfe\xfe"},
		{"escaped backslash-u", map[string]any{"q": `\ufffd`}, `{"q":"\\ufffd"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cache.GenerateKey("tasks", tc.params)
			if want := "tasks:" + hash(tc.canonical); got != want {
				t.Errorf("GenerateKey = %s, want %s (sha256 of %s)", got, want, tc.canonical)
			}
		})
	}
	a := cache.GenerateKey("tasks", map[string]any{"user_id": 1, "status": "active"})
	b := cache.GenerateKey("tasks", map[string]any{"status": "active", "user_id": 1})
	if a != b {
		t.Errorf("insertion order changed the key: %s != %s", a, b)
	}
	if c := cache.GenerateKey("tasks", map[string]any{"status": "active", "user_id": 2}); c == a {
		t.Error("different parameters gave the same key")
	}
}

func TestDefault(t *testing.T) {
	// Not parallel: the default cache is process-wide.
	ctx := context.Background()
	if cache.Default() != nil {
		t.Fatal("Default() before InitDefault is not nil")
	}
	if err := cache.CloseDefault(); err != nil {
		t.Errorf("CloseDefault without a default: %v", err)
	}
	cfg := cache.Config{URL: srv.URL(0), KeyPrefix: testPrefix(t)}
	c, err := cache.InitDefault(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cache.Default() != c {
		t.Error("Default() is not the cache InitDefault returned")
	}
	if _, err := cache.InitDefault(ctx, cfg); err == nil {
		t.Error("a second InitDefault succeeded")
	}
	if err := cache.Default().Set(ctx, "k:1", 1, 0); err != nil {
		t.Error(err)
	}
	if err := cache.CloseDefault(); err != nil {
		t.Error(err)
	}
	if cache.Default() != nil {
		t.Error("Default() after CloseDefault is not nil")
	}
	if err := c.Set(ctx, "k:1", 1, 0); !errors.Is(err, cache.ErrClosed) {
		t.Errorf("the closed default cache still works: %v", err)
	}
	port, _ := redistest.FreePort()
	if _, err := cache.InitDefault(ctx, cache.Config{URL: fmt.Sprintf("redis://127.0.0.1:%d", port)}); err == nil || cache.Default() != nil {
		t.Errorf("InitDefault against a closed port = %v, Default() = %v", err, cache.Default())
	}
}

func TestCollector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(cache.NewCollector(c)); err != nil {
		t.Fatal(err)
	}
	_ = c.Set(ctx, "m:1", 1, 0)
	_, _ = c.Get(ctx, "m:1", nil)
	_, _ = c.Get(ctx, "m:2", nil)
	if _, err := cache.GetOrLoad(ctx, c, "m:3", 0, func(context.Context) (int, error) { return 3, nil }); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["prefix"] != "m" || labels["key_prefix"] != testPrefix(t) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				got[f.GetName()] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[f.GetName()] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"cacheplane_cache_hits_total":            1,
		"cacheplane_cache_misses_total":          2,
		"cacheplane_cache_errors_total":          0,
		"cacheplane_cache_load_duration_seconds": 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("collected %v, want %v", got, want)
	}
}

// encoding/json writes every invalid UTF-8 byte as \ufffd, so strings that
// differ only there would share a key, and one caller would be served
// another's result. Valid strings keep their documented bytes.
func TestGenerateKeyInvalidUTF8(t *testing.T) {
	t.Parallel()
	type query struct {
		Terms []string
		By    map[string]string
	}
	distinct := []map[string]any{
		{"q": "\xff"},
		{"q": "\xfe"},
		{"q": "\ufffd"}, // a real U+FFFD is a third string
		{"q": []any{"a", "\xff"}},
		{"q": []any{"a", "\xfe"}},
		{"q": map[string]any{"\xff": 1}},
		{"q": map[string]any{"\xfe": 1}},
		{"q": query{Terms: []string{"\xff"}}},
		{"q": query{Terms: []string{"\xfe"}}},
		{"q": &query{By: map[string]string{"k": "x\xffy"}}},
		{"q": &query{By: map[string]string{"k": "x\xfey"}}},
		{"\xff": 1},
		{"\xfe": 1},
	}
	seen := map[string]int{}
	for i, p := range distinct {
		k := cache.GenerateKey("p", p)
		if j, dup := seen[k]; dup {
			t.Errorf("params #%d %v and #%d %v share key %s", j, distinct[j], i, p, k)
		}
		seen[k] = i
		if again := cache.GenerateKey("p", p); again != k {
			t.Errorf("params #%d: key %s, then %s", i, k, again)
		}
	}
}
