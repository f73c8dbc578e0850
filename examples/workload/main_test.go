package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	srv = redistest.MustStart()
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

// syncBuffer is an io.Writer that a test can read while run writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

// start runs the workload until the test ends and returns its base URL and a
// function that stops it and returns run's error and output.
func start(t *testing.T, args ...string) (string, func() (string, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, append([]string{"-listen", "127.0.0.1:0", "-redis-url", srv.URL(0)}, args...), out, out)
	}()
	var base string
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		select {
		case err := <-errc:
			t.Fatalf("workload exited at start: %v\n%s", err, out)
		default:
		}
		m := listening.FindStringSubmatch(out.String())
		if m != nil {
			base = m[1]
		}
		return m != nil, nil
	})
	if err != nil {
		t.Fatalf("workload did not print its address within 10s:\n%s", out)
	}
	stopped := false
	stop := func() (string, error) {
		if !stopped {
			stopped = true
			cancel()
		}
		select {
		case err := <-errc:
			return out.String(), err
		case <-time.After(10 * time.Second):
			t.Fatalf("workload did not stop within 10s of cancel:\n%s", out)
			return "", nil
		}
	}
	t.Cleanup(func() {
		if !stopped {
			_, _ = stop()
		}
	})
	return base, stop
}

// request sends one request and returns its X-Cache header and body.
func request(t *testing.T, method, url, body string) (xcache string, got item) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s %s: body %q: %v", method, url, b, err)
	}
	return resp.Header.Get("X-Cache"), got
}

func TestCachesReadsAndWritesInvalidateTheirKind(t *testing.T) {
	const kp = "wl-cache"
	// A flush interval longer than the test: the counters in Redis at the end
	// can only come from the flush in Close.
	base, stop := start(t, "-key-prefix", kp, "-store-latency", "1ms", "-stats-flush", "1h")

	steps := []struct {
		method, path, body  string
		wantCache, wantName string
	}{
		{"GET", "/users/1", "", "MISS", "users 1"},
		{"GET", "/users/1", "", "HIT", "users 1"},
		{"GET", "/products/7", "", "MISS", "products 7"},
		{"GET", "/products/7", "", "HIT", "products 7"},
		{"PUT", "/users/1", `{"name":"Ada"}`, "", "Ada"},
		// The PUT invalidated every cached user, and no product.
		{"GET", "/users/1", "", "MISS", "Ada"},
		{"GET", "/users/1", "", "HIT", "Ada"},
		{"GET", "/products/7", "", "HIT", "products 7"},
	}
	for _, s := range steps {
		xc, it := request(t, s.method, base+s.path, s.body)
		if s.method == "GET" && xc != s.wantCache {
			t.Errorf("%s %s: X-Cache %q, want %q", s.method, s.path, xc, s.wantCache)
		}
		if it.Name != s.wantName {
			t.Errorf("%s %s: name %q, want %q", s.method, s.path, it.Name, s.wantName)
		}
	}

	resp, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st cache.Stats
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if u, p := st.Prefixes["users"], st.Prefixes["products"]; u.Hits != 2 || u.Misses != 2 || p.Hits != 2 || p.Misses != 1 {
		t.Errorf("/stats: users %+v, products %+v; want users 2 hits 2 misses, products 2 hits 1 miss", u, p)
	}

	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `cacheplane_cache_hits_total{key_prefix="wl-cache",prefix="products"} 2`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %q:\n%s", want, metrics)
	}

	out, err := stop()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "stats flushed") {
		t.Errorf("output does not report the final flush:\n%s", out)
	}
	rdb := srv.Client()
	defer rdb.Close()
	got, err := rdb.HGetAll(context.Background(), keyspace.New(kp).StatsKey("users")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got[keyspace.FieldHits] != "2" || got[keyspace.FieldMisses] != "2" {
		t.Errorf("users stats in Redis after shutdown: %v, want hits 2 misses 2 (flushed by Close)", got)
	}
}

func TestBadPutIsRejectedAndInvalidatesNothing(t *testing.T) {
	base, _ := start(t, "-key-prefix", "wl-badput", "-store-latency", "0s")
	request(t, "GET", base+"/users/3", "")
	req, _ := http.NewRequest("PUT", base+"/users/3", strings.NewReader("not json"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("PUT with a bad body: %s, want 400", resp.Status)
	}
	// The middleware invalidates after 2xx responses only.
	if xc, _ := request(t, "GET", base+"/users/3", ""); xc != "HIT" {
		t.Errorf("after a rejected PUT: X-Cache %q, want HIT", xc)
	}
}

func TestUnreachableRedisFailsAtStart(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = run(ctx, []string{"-listen", "127.0.0.1:0", "-redis-url", "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"}, out, out)
	if err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("run with no Redis: %v, want a connect error", err)
	}
}

// TestTraceStdoutPrintsSpans: -trace-stdout prints the middleware's spans,
// a miss and then a hit, to stdout.
func TestTraceStdoutPrintsSpans(t *testing.T) {
	base, stop := start(t, "-key-prefix", "trace-stdout", "-trace-stdout")
	request(t, "GET", base+"/users/2", "")
	request(t, "GET", base+"/users/2", "")
	out, err := stop()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	for _, want := range []string{`"Name":"cache.http"`, `"Value":"miss"`, `"Value":"hit"`, `"cache.load.duration_ms"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
}

// TestNoTraceOutputByDefault: without the flag nothing is traced.
func TestNoTraceOutputByDefault(t *testing.T) {
	base, stop := start(t, "-key-prefix", "trace-off")
	request(t, "GET", base+"/users/2", "")
	out, err := stop()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if strings.Contains(out, "cache.http") {
		t.Errorf("spans printed without -trace-stdout:\n%s", out)
	}
}
