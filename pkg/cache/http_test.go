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
