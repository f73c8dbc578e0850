package cache_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// testAPI is a small service behind the middleware; it counts handler calls.
type testAPI struct {
	calls atomic.Int32
	srv   *httptest.Server
}

func newTestAPI(t *testing.T, c *cache.Cache, keyParams ...string) *testAPI {
	t.Helper()
	api := &testAPI{}
	mw := cache.HTTPMiddleware(c, "users", time.Minute, keyParams...)
	mux := http.NewServeMux()
	mux.Handle("GET /users/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := api.calls.Add(1)
		switch r.URL.Query().Get("mode") {
		case "error":
			http.Error(w, "nope", http.StatusInternalServerError)
			return
		case "cookie":
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "secret"})
		case "private":
			w.Header().Set("Cache-Control", "private")
		case "nocache":
			w.Header().Set("Cache-Control", "max-age=60, no-cache")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Custom", "kept")
		if r.Method == http.MethodHead {
			return // a HEAD handler that writes no body: must not be stored
		}
		fmt.Fprintf(w, `{"id":%q,"page":%q,"call":%d}`, r.PathValue("id"), r.URL.Query().Get("page"), n)
	})))
	mux.Handle("GET /users/{id}/posts", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.calls.Add(1)
		fmt.Fprintf(w, "posts of %s", r.PathValue("id"))
	})))
	mux.Handle("PUT /users/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	api.srv = httptest.NewServer(mux)
	t.Cleanup(api.srv.Close)
	return api
}

type response struct {
	status int
	xcache string
	header http.Header
	body   string
}

func (api *testAPI) do(t *testing.T, method, path string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, api.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := api.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header.Get("X-Cache"), resp.Header, string(body)}
}

func TestHTTPMiddleware(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	api := newTestAPI(t, c, "id", "page")

	// Each step: a request, the X-Cache answer, whether the handler ran.
	steps := []struct {
		name, method, path string
		header             []string
		status             int
		xcache             string
		handled            bool
		body               string // "" = not checked
	}{
		{"first GET misses", "GET", "/users/1?page=2", nil, 200, "MISS", true, `{"id":"1","page":"2","call":1}`},
		{"second GET hits", "GET", "/users/1?page=2", nil, 200, "HIT", false, `{"id":"1","page":"2","call":1}`},
		{"unlisted query parameter ignored", "GET", "/users/1?page=2&utm=x", nil, 200, "HIT", false, ""},
		{"other path value misses", "GET", "/users/2?page=2", nil, 200, "MISS", true, ""},
		{"other listed query value misses", "GET", "/users/1?page=3", nil, 200, "MISS", true, ""},
		{"other route, same id misses", "GET", "/users/1/posts", nil, 200, "MISS", true, "posts of 1"},
		{"HEAD served from GET entry", "HEAD", "/users/1?page=2", nil, 200, "HIT", false, ""},
		{"HEAD miss passes through", "HEAD", "/users/9", nil, 200, "MISS", true, ""},
		{"HEAD miss was not stored", "GET", "/users/9", nil, 200, "MISS", true, ""},
		{"no-cache refreshes", "GET", "/users/1?page=2", []string{"Cache-Control", "no-cache"}, 200, "MISS", true, ""},
		{"refreshed entry served", "GET", "/users/1?page=2", nil, 200, "HIT", false, `{"id":"1","page":"2","call":7}`},
		{"no-store bypasses", "GET", "/users/7", []string{"Cache-Control", "no-store"}, 200, "MISS", true, ""},
		{"no-store did not store", "GET", "/users/7", nil, 200, "MISS", true, ""},
		{"errors are not stored", "GET", "/users/3?mode=error", nil, 500, "MISS", true, ""},
		{"errors are not stored, again", "GET", "/users/3?mode=error", nil, 500, "MISS", true, ""},
		{"cookies are not stored", "GET", "/users/4?mode=cookie", nil, 200, "MISS", true, ""},
		{"cookies are not stored, again", "GET", "/users/4?mode=cookie", nil, 200, "MISS", true, ""},
		{"private is not stored", "GET", "/users/5?mode=private", nil, 200, "MISS", true, ""},
		{"private is not stored, again", "GET", "/users/5?mode=private", nil, 200, "MISS", true, ""},
		{"no-cache is not stored", "GET", "/users/6?mode=nocache", nil, 200, "MISS", true, ""},
		{"no-cache is not stored, again", "GET", "/users/6?mode=nocache", nil, 200, "MISS", true, ""},
		{"failed PUT keeps the cache", "PUT", "/users/1?fail=1", nil, 400, "", false, ""},
		{"still cached", "GET", "/users/1?page=2", nil, 200, "HIT", false, ""},
		{"2xx PUT invalidates", "PUT", "/users/1", nil, 204, "", false, ""},
		{"invalidated", "GET", "/users/1?page=2", nil, 200, "MISS", true, ""},
		{"other entries of the prefix too", "GET", "/users/2?page=2", nil, 200, "MISS", true, ""},
	}
	for _, s := range steps {
		before := api.calls.Load()
		r := api.do(t, s.method, s.path, s.header...)
		handled := api.calls.Load() != before
		if r.status != s.status || r.xcache != s.xcache || handled != s.handled {
			t.Fatalf("%s: %s %s = %d, X-Cache %q, handler ran %v; want %d, %q, %v",
				s.name, s.method, s.path, r.status, r.xcache, handled, s.status, s.xcache, s.handled)
		}
		if s.body != "" && r.body != s.body {
			t.Fatalf("%s: body %q, want %q", s.name, r.body, s.body)
		}
		if s.xcache == "HIT" && (r.header.Get("X-Custom") != "kept" || r.header.Get("Content-Type") != "application/json") {
			t.Fatalf("%s: stored headers not served: %v", s.name, r.header)
		}
		if s.method == "HEAD" && r.body != "" {
			t.Fatalf("%s: HEAD response has a body", s.name)
		}
	}
}

func TestHTTPMiddlewareDefaultKey(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	api := newTestAPI(t, c) // no keyParams: every path value and query parameter
	for _, s := range []struct {
		path   string
		xcache string
	}{
		{"/users/1?page=1", "MISS"},
		{"/users/1?page=1", "HIT"},
		{"/users/1?page=1&utm=x", "MISS"},
		{"/users/1?utm=x&page=1", "HIT"},
		{"/users/2?page=1", "MISS"},
	} {
		if r := api.do(t, "GET", s.path); r.xcache != s.xcache {
			t.Fatalf("GET %s: X-Cache %q, want %q", s.path, r.xcache, s.xcache)
		}
	}
}

func TestHTTPMiddlewareNilCache(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil)
	for range 2 {
		if r := api.do(t, "GET", "/users/1"); r.xcache != "" || r.status != 200 {
			t.Fatalf("nil cache: %d, X-Cache %q", r.status, r.xcache)
		}
	}
	if n := api.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestHTTPMiddlewareLargeAndStreamed(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	var calls atomic.Int32
	mw := cache.HTTPMiddleware(c, "big", 0)
	mux := http.NewServeMux()
	mux.Handle("GET /big", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.WriteString(w, strings.Repeat("x", 2<<20))
	})))
	mux.Handle("GET /stream", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.WriteString(w, "a")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "b")
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/big", "/stream"} {
		for i := range 2 {
			resp, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Header.Get("X-Cache") != "MISS" || len(body) == 0 {
				t.Errorf("GET %s #%d: X-Cache %q, %d bytes; want an uncached full response", path, i, resp.Header.Get("X-Cache"), len(body))
			}
		}
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("handlers ran %d times, want 4", n)
	}
}

// A response that names request headers in Vary differs by more than the
// key: stored, it would be served to requests it was not made for (a gzip
// body to a client without gzip, one origin's CORS grant to another).
func TestHTTPMiddlewareVaryNotStored(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	var calls atomic.Int32
	mw := cache.HTTPMiddleware(c, "vary", 0)
	mux := http.NewServeMux()
	mux.Handle("GET /doc", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Vary", "Accept-Language")
		fmt.Fprint(w, "lang="+r.Header.Get("Accept-Language"))
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, lang := range []string{"de", "fr", "fr"} {
		req, _ := http.NewRequest("GET", srv.URL+"/doc", nil)
		req.Header.Set("Accept-Language", lang)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "lang="+lang || resp.Header.Get("X-Cache") != "MISS" {
			t.Errorf("Accept-Language %s: %q, X-Cache %q; want lang=%s from the handler", lang, body, resp.Header.Get("X-Cache"), lang)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

// A ServeMux pattern that ends in '/' matches a whole subtree: the rest of
// the path picks the response, so it must pick the entry too.
func TestHTTPMiddlewareSubtreePattern(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	mw := cache.HTTPMiddleware(c, "static", 0)
	mux := http.NewServeMux()
	mux.Handle("GET /static/", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "file "+r.URL.Path)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, s := range []struct{ path, xcache string }{
		{"/static/a.css", "MISS"},
		{"/static/b.js", "MISS"},
		{"/static/a.css", "HIT"},
		{"/static/b.js", "HIT"},
	} {
		resp, err := srv.Client().Get(srv.URL + s.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "file "+s.path || resp.Header.Get("X-Cache") != s.xcache {
			t.Errorf("GET %s = %q, X-Cache %q; want %q, %s", s.path, body, resp.Header.Get("X-Cache"), "file "+s.path, s.xcache)
		}
	}
}

// An informational response (103 Early Hints) before the final one must not
// be taken for the status: a 2xx write after it still invalidates, and a 200
// after it is still cached.
func TestHTTPMiddlewareInformationalStatus(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	var calls atomic.Int32
	mw := cache.HTTPMiddleware(c, "hints", 0)
	earlyHints := func(w http.ResponseWriter) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /page", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		earlyHints(w)
		fmt.Fprint(w, "page ", calls.Add(1))
	})))
	mux.Handle("PUT /page", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		earlyHints(w)
		w.WriteHeader(http.StatusNoContent)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func() (string, string) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/page")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body), resp.Header.Get("X-Cache")
	}
	if body, x := get(); body != "page 1" || x != "MISS" {
		t.Fatalf("first GET = %q, %s", body, x)
	}
	if body, x := get(); body != "page 1" || x != "HIT" {
		t.Fatalf("second GET = %q, %s; want the 200 after the hints cached", body, x)
	}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/page", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT = %d", resp.StatusCode)
	}
	if body, x := get(); body != "page 2" || x != "MISS" {
		t.Errorf("GET after a 204 PUT = %q, %s; want a fresh page 2", body, x)
	}
}

// Query values are bytes: two that differ only in invalid UTF-8 are two
// requests, not one entry.
func TestHTTPMiddlewareInvalidUTF8Query(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	mw := cache.HTTPMiddleware(c, "search", 0)
	mux := http.NewServeMux()
	mux.Handle("GET /search", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%x", r.URL.Query().Get("q"))
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, q := range []string{"%FF", "%FE", "%FF"} {
		resp, err := srv.Client().Get(srv.URL + "/search?q=" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := strings.ToLower(q[1:]); string(body) != want {
			t.Errorf("q=%s answered %q (X-Cache %s), want %q", q, body, resp.Header.Get("X-Cache"), want)
		}
	}
}

// A GET whose handler read its data before a PUT must not store that
// response after the PUT's invalidation.
func TestHTTPMiddlewareWriteDuringGet(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	mw := cache.HTTPMiddleware(c, "docs", 0)
	var doc atomic.Value
	doc.Store("v1")
	reading, release := make(chan struct{}), make(chan struct{})
	var gets atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("GET /doc", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := doc.Load().(string)
		if gets.Add(1) == 1 {
			close(reading)
			<-release
		}
		fmt.Fprint(w, v)
	})))
	mux.Handle("PUT /doc", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc.Store("v2")
		w.WriteHeader(http.StatusNoContent)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func() (string, string) {
		resp, err := srv.Client().Get(srv.URL + "/doc")
		if err != nil {
			return err.Error(), ""
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body), resp.Header.Get("X-Cache")
	}
	first := make(chan string, 1)
	go func() { body, _ := get(); first <- body }()
	<-reading
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/doc", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	close(release)
	if body := <-first; body != "v1" {
		t.Fatalf("the GET in flight answered %q, want v1", body)
	}
	for range 2 {
		if body, x := get(); body != "v2" {
			t.Fatalf("GET after the PUT = %q (X-Cache %s), want v2", body, x)
		}
	}
}

// Outer middleware sets headers of its own on every request (a request id,
// CORS, a session cookie): they are neither stored nor replayed over the
// next request's, and its cookie does not keep the response out of the
// cache. What the handler set is stored and served.
func TestHTTPMiddlewareOuterHeaders(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	var requests, calls atomic.Int32
	outer := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := strconv.Itoa(int(requests.Add(1)))
			h := w.Header()
			h.Set("X-Request-Id", id)
			h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
			h.Set("Vary", "Origin") // about the outer layer's own header
			h.Set("Link", "<outer-"+id+">")
			h.Set("Cache-Control", "no-store") // a blanket default the handler overrides
			http.SetCookie(w, &http.Cookie{Name: "session", Value: id})
			next.ServeHTTP(w, r)
		})
	}
	mw := cache.HTTPMiddleware(c, "outer", time.Minute)
	mux := http.NewServeMux()
	mux.Handle("GET /doc", outer(mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Custom", "kept")
		w.Header().Add("Link", "<handler>")
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprint(w, "doc ", n)
	}))))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/doc", nil)
		req.Header.Set("Origin", origin)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Header.Set("Body", string(body))
		return resp
	}
	if r := get("https://a.example"); r.Header.Get("X-Cache") != "MISS" || r.Header.Get("Body") != "doc 1" {
		t.Fatalf("first GET: %v", r.Header)
	}
	r := get("https://b.example")
	want := map[string][]string{
		"X-Cache":                     {"HIT"},
		"Body":                        {"doc 1"},
		"X-Request-Id":                {"2"},
		"Access-Control-Allow-Origin": {"https://b.example"},
		"Set-Cookie":                  {"session=2"},
		"Vary":                        {"Origin"},
		"Link":                        {"<outer-2>", "<handler>"},
		"Content-Type":                {"text/plain"},
		"X-Custom":                    {"kept"},
		"Cache-Control":               {"public, max-age=60"},
	}
	for name, values := range want {
		if got := r.Header.Values(name); !slices.Equal(got, values) {
			t.Errorf("second GET: %s = %q, want %q", name, got, values)
		}
	}
	if age, err := strconv.Atoi(r.Header.Get("Age")); err != nil || age < 0 {
		t.Errorf("second GET: Age %q, want the seconds since it was stored", r.Header.Get("Age"))
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// Only the client going away ends a request during the lookup: when the
// request's deadline passes there, the handler still answers (it sees the
// expired context, as it would without the cache).
func TestHTTPMiddlewareDeadlineDuringLookup(t *testing.T) {
	t.Parallel()
	proxy := startStallProxy(t, srv.Addr())
	// SocketTimeout well above the request's deadline, so that the
	// deadline is what ends the lookup.
	c := newCache(t, cache.Config{URL: proxy.URL(), SocketTimeout: 2 * time.Second, StatsFlushInterval: -1, PolicyRefresh: -1})
	var calls atomic.Int32
	h := cache.HTTPMiddleware(c, "slow", time.Minute)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		fmt.Fprint(w, "fresh")
	}))
	proxy.Stall()
	defer proxy.Resume()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/slow", nil).WithContext(ctx))
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("the request's context: %v, want its deadline passed", ctx.Err())
	}
	if calls.Load() != 1 || rec.Code != 200 || rec.Body.String() != "fresh" {
		t.Errorf("deadline during the lookup: handler ran %d times, answer %d %q; want the handler's", calls.Load(), rec.Code, rec.Body)
	}

	// A cancelled request (the client is gone) ends without the handler.
	// (go-redis notices a cancellation only at its next deadline, so this
	// lookup ends after SocketTimeout, its context cancelled.)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/slow", nil).WithContext(ctx))
	if calls.Load() != 1 || rec.Body.Len() != 0 {
		t.Errorf("cancelled during the lookup: handler ran %d times in all, body %q; want it not run", calls.Load(), rec.Body)
	}
}

// The response's own Cache-Control and Expires bound what is stored.
func TestHTTPMiddlewareResponseFreshness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{DefaultTTL: 5 * time.Minute})
	date := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	modes := map[string]func(h http.Header){
		"maxage0":       func(h http.Header) { h.Set("Cache-Control", "max-age=0") },
		"smaxage0":      func(h http.Header) { h.Set("Cache-Control", "max-age=60, s-maxage=0") },
		"maxage30":      func(h http.Header) { h.Set("Cache-Control", "public, max-age=30") },
		"smaxage20":     func(h http.Header) { h.Set("Cache-Control", "max-age=60, s-maxage=20") },
		"maxagebad":     func(h http.Header) { h.Set("Cache-Control", "max-age=soon") },
		"nostore":       func(h http.Header) { h.Set("Cache-Control", "no-store") },
		"private":       func(h http.Header) { h.Set("Cache-Control", `private="X-Custom"`) },
		"nocache":       func(h http.Header) { h.Set("Cache-Control", `No-Cache`) },
		"maxagelong":    func(h http.Header) { h.Set("Cache-Control", "max-age=86400") },
		"maxageoverexp": func(h http.Header) { h.Set("Cache-Control", "max-age=30"); h.Set("Expires", "0") },
		"expires40":     func(h http.Header) { h.Set("Expires", time.Now().Add(40*time.Second).UTC().Format(http.TimeFormat)) },
		"expiresdate": func(h http.Header) {
			h.Set("Date", date.Format(http.TimeFormat))
			h.Set("Expires", date.Add(25*time.Second).Format(http.TimeFormat))
		},
		"expirespast":    func(h http.Header) { h.Set("Expires", time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat)) },
		"expiresinvalid": func(h http.Header) { h.Set("Expires", "0") },
		"none":           func(h http.Header) {},
	}
	mux := http.NewServeMux()
	for _, ttl := range []time.Duration{time.Hour, 0} {
		route := fmt.Sprintf("GET /ttl%d/{mode}", ttl/time.Second)
		mux.Handle(route, cache.HTTPMiddleware(c, "fresh", ttl)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			modes[r.PathValue("mode")](w.Header())
			fmt.Fprint(w, "x")
		})))
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tc := range []struct {
		ttl      time.Duration // the middleware's
		mode     string
		min, max time.Duration // of the stored entry; 0, 0: not stored
	}{
		{time.Hour, "maxage0", 0, 0},
		{time.Hour, "smaxage0", 0, 0},
		{time.Hour, "maxagebad", 0, 0},
		{time.Hour, "nostore", 0, 0},
		{time.Hour, "private", 0, 0},
		{time.Hour, "nocache", 0, 0},
		{time.Hour, "expirespast", 0, 0},
		{time.Hour, "expiresinvalid", 0, 0},
		{time.Hour, "maxage30", 20 * time.Second, 30 * time.Second},
		{time.Hour, "smaxage20", 10 * time.Second, 20 * time.Second},
		{time.Hour, "maxageoverexp", 20 * time.Second, 30 * time.Second}, // max-age beats Expires
		{time.Hour, "expires40", 20 * time.Second, 40 * time.Second},
		{time.Hour, "expiresdate", 15 * time.Second, 25 * time.Second}, // relative to Date
		{time.Hour, "maxagelong", 50 * time.Minute, time.Hour},
		{time.Hour, "none", 50 * time.Minute, time.Hour},
		{0, "maxage30", 20 * time.Second, 30 * time.Second},
		{0, "maxagelong", 4 * time.Minute, 5 * time.Minute}, // DefaultTTL still caps
	} {
		name := fmt.Sprintf("ttl %v, %s", tc.ttl, tc.mode)
		route := fmt.Sprintf("GET /ttl%d/{mode}", tc.ttl/time.Second)
		path := fmt.Sprintf("/ttl%d/%s", tc.ttl/time.Second, tc.mode)
		for i := range 2 {
			resp, err := srv.Client().Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := "MISS"
			if i == 1 && tc.max > 0 {
				want = "HIT"
			}
			if x := resp.Header.Get("X-Cache"); x != want {
				t.Errorf("%s: GET #%d X-Cache %s, want %s", name, i+1, x, want)
			}
		}
		key := cache.GenerateKey("fresh", map[string]any{
			"route": route, "path": map[string]any{"mode": tc.mode}, "query": map[string]any{},
		})
		d, err := c.TTL(ctx, key)
		switch {
		case tc.max == 0 && !errors.Is(err, cache.ErrNotFound):
			t.Errorf("%s: stored (TTL %v, %v), want not stored", name, d, err)
		case tc.max > 0 && (err != nil || d < tc.min || d > tc.max):
			t.Errorf("%s: TTL %v, %v; want between %v and %v", name, d, err, tc.min, tc.max)
		}
	}
}

// Handlers behind the middleware keep the writer's optional interfaces; a
// hijacked or flushed response is not stored.
func TestHTTPMiddlewareHijackAndFlush(t *testing.T) {
	t.Parallel()
	c := newCache(t, cache.Config{})
	var calls atomic.Int32
	mw := cache.HTTPMiddleware(c, "iface", time.Minute)
	mux := http.NewServeMux()
	mux.Handle("GET /hijack", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "no http.Hijacker", http.StatusInternalServerError)
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		buf.Flush()
	})))
	mux.Handle("GET /flush", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		f, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "no http.Flusher", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "part 1, ")
		f.Flush()
		io.WriteString(w, "part 2")
	})))
	mux.Handle("GET /controller", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\ncontroller")
		buf.Flush()
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tc := range []struct{ path, body string }{
		{"/hijack", "hijacked"},
		{"/flush", "part 1, part 2"},
		{"/controller", "controller"},
	} {
		for i := range 2 {
			before := calls.Load()
			resp, err := srv.Client().Get(srv.URL + tc.path)
			if err != nil {
				t.Fatalf("GET %s #%d: %v", tc.path, i+1, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tc.body || calls.Load() != before+1 {
				t.Errorf("GET %s #%d = %d %q, handler ran %v; want %q from the handler", tc.path, i+1, resp.StatusCode, body, calls.Load() != before, tc.body)
			}
		}
	}
}

// An entry of the first stored-response format (the whole header map) is
// a miss, not an error, and is replaced by the handler's response.
func TestHTTPMiddlewareOldFormatIsAMiss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	var calls atomic.Int32
	mw := cache.HTTPMiddleware(c, "old", time.Minute)
	mux := http.NewServeMux()
	mux.Handle("GET /doc", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "doc ", calls.Add(1))
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	key := cache.GenerateKey("old", map[string]any{"route": "GET /doc", "path": map[string]any{}, "query": map[string]any{}})
	// Version 1: status 200, one header X-Request-Id: a, body "stale".
	v1 := []byte{1, 0xc8, 0x01, 1, 12}
	v1 = append(v1, "X-Request-Id"...)
	v1 = append(v1, 1, 1, 'a')
	v1 = append(v1, "stale"...)
	if err := rawClient(t).Set(ctx, testPrefix(t)+":"+key, keyspace.AppendEntry(nil, 0, v1), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"MISS doc 1", "HIT doc 1"} {
		resp, err := srv.Client().Get(srv.URL + "/doc")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Cache") + " " + string(body); got != want || resp.Header.Get("X-Request-Id") != "" {
			t.Errorf("GET #%d = %q (X-Request-Id %q), want %q", i+1, got, resp.Header.Get("X-Request-Id"), want)
		}
	}
	if s := c.Stats().Prefixes["old"]; s.Errors != 0 {
		t.Errorf("an old-format entry counted %d errors, want 0", s.Errors)
	}
}
