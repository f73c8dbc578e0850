package cache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
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
