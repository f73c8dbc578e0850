package cache_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// newTraced returns a span recorder and a provider feeding it.
func newTraced(t *testing.T) (*tracetest.SpanRecorder, trace.TracerProvider) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return rec, tp
}

// lastSpan returns the last ended span, which must be named name.
func lastSpan(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	ended := rec.Ended()
	if len(ended) == 0 {
		t.Fatalf("no span ended, want %s", name)
	}
	s := ended[len(ended)-1]
	if s.Name() != name {
		t.Fatalf("last span is %q, want %q", s.Name(), name)
	}
	return s
}

func spanAttr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttr(t *testing.T, s sdktrace.ReadOnlySpan, key, want string) {
	t.Helper()
	v, ok := spanAttr(s, key)
	if !ok || v.AsString() != want {
		t.Errorf("span %s: %s = %q (present %v), want %q", s.Name(), key, v.String(), ok, want)
	}
}

func TestTraceGetOrLoadOutcomes(t *testing.T) {
	rec, tp := newTraced(t)
	c := newCache(t, cache.Config{TracerProvider: tp})
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	defer parent.End()

	var loadSpan trace.SpanContext
	load := func(lctx context.Context) (string, error) {
		loadSpan = trace.SpanContextFromContext(lctx)
		return "v", nil
	}
	if _, err := cache.GetOrLoad(ctx, c, "user:1", time.Minute, load); err != nil {
		t.Fatal(err)
	}
	s := lastSpan(t, rec, "cache.GetOrLoad")
	if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.Parent().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("span's parent = %v, want the caller's span %v", s.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	if loadSpan.SpanID() != s.SpanContext().SpanID() {
		t.Errorf("the loader's context carries span %v, want the cache's %v", loadSpan.SpanID(), s.SpanContext().SpanID())
	}
	wantAttr(t, s, "cache.outcome", "miss")
	wantAttr(t, s, "cache.prefix", "user")
	if _, ok := spanAttr(s, "cache.load.duration_ms"); !ok {
		t.Error("miss without cache.load.duration_ms")
	}
	if _, ok := spanAttr(s, "cache.key"); ok {
		t.Error("cache.key present without TraceKeys")
	}
	if s.Status().Code != codes.Unset {
		t.Errorf("status = %v, want unset", s.Status())
	}

	if _, err := cache.GetOrLoad(ctx, c, "user:1", time.Minute, load); err != nil {
		t.Fatal(err)
	}
	s = lastSpan(t, rec, "cache.GetOrLoad")
	wantAttr(t, s, "cache.outcome", "hit")
	if _, ok := spanAttr(s, "cache.load.duration_ms"); ok {
		t.Error("hit with cache.load.duration_ms")
	}

	// A "no value" is a result, not an error, and is then a negative hit.
	none := func(context.Context) (string, error) { return "", fmt.Errorf("row 2: %w", cache.ErrNoValue) }
	for _, want := range []string{"miss", "negative-hit"} {
		if _, err := cache.GetOrLoad(ctx, c, "user:2", time.Minute, none); !errors.Is(err, cache.ErrNoValue) {
			t.Fatalf("err = %v, want ErrNoValue", err)
		}
		s = lastSpan(t, rec, "cache.GetOrLoad")
		wantAttr(t, s, "cache.outcome", want)
		if s.Status().Code == codes.Error || len(s.Events()) != 0 {
			t.Errorf("%s of a no value: status %v, events %v; want no error", want, s.Status(), s.Events())
		}
	}

	// A loader's error is recorded.
	boom := errors.New("database down")
	if _, err := cache.GetOrLoad(ctx, c, "user:3", time.Minute, func(context.Context) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	s = lastSpan(t, rec, "cache.GetOrLoad")
	wantAttr(t, s, "cache.outcome", "miss")
	if s.Status().Code != codes.Error || len(s.Events()) == 0 || s.Events()[0].Name != "exception" {
		t.Errorf("loader error: status %v, events %v; want Error and an exception event", s.Status(), s.Events())
	}

	// Cached traces as GetOrLoad does.
	f := cache.Cached(c, "item", time.Minute, nil, func(_ context.Context, id int) (int, error) { return id, nil })
	if _, err := f(ctx, 7); err != nil {
		t.Fatal(err)
	}
	s = lastSpan(t, rec, "cache.GetOrLoad")
	wantAttr(t, s, "cache.prefix", "item")
	wantAttr(t, s, "cache.outcome", "miss")
}

func TestTraceKeysOptIn(t *testing.T) {
	rec, tp := newTraced(t)
	c := newCache(t, cache.Config{TracerProvider: tp, TraceKeys: true})
	if _, err := cache.GetOrLoad(context.Background(), c, "user:42", time.Minute, func(context.Context) (int, error) { return 1, nil }); err != nil {
		t.Fatal(err)
	}
	wantAttr(t, lastSpan(t, rec, "cache.GetOrLoad"), "cache.key", "user:42")
}

func TestTraceNoSpanOnGetSet(t *testing.T) {
	rec, tp := newTraced(t)
	c := newCache(t, cache.Config{TracerProvider: tp})
	ctx := context.Background()
	if err := c.Set(ctx, "user:1", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	var v string
	if _, err := c.Get(ctx, "user:1", &v); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()) + len(rec.Started()); n != 0 {
		t.Errorf("Get and Set made %d spans, want none", n)
	}
}

func TestTraceNearHit(t *testing.T) {
	rec, tp := newTraced(t)
	c := newNearCache(t, cache.Config{TracerProvider: tp})
	ctx := context.Background()
	load := func(context.Context) (string, error) { return "v", nil }
	waitFor(t, 5*time.Second, "a GetOrLoad served from the near-cache", func() bool {
		if _, err := cache.GetOrLoad(ctx, c, "near:1", time.Minute, load); err != nil {
			t.Fatal(err)
		}
		v, _ := spanAttr(lastSpan(t, rec, "cache.GetOrLoad"), "cache.outcome")
		return v.AsString() == "near-hit"
	})
}

func TestTraceInvalidate(t *testing.T) {
	rec, tp := newTraced(t)
	c := newCache(t, cache.Config{TracerProvider: tp})
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	defer parent.End()

	if err := c.InvalidatePrefix(ctx, "user"); err != nil {
		t.Fatal(err)
	}
	s := lastSpan(t, rec, "cache.InvalidatePrefix")
	wantAttr(t, s, "cache.prefix", "user")
	if s.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Error("InvalidatePrefix's span is not a child of the caller's")
	}
	if _, err := c.Invalidate(ctx, "user:a*"); err != nil {
		t.Fatal(err)
	}
	s = lastSpan(t, rec, "cache.Invalidate")
	wantAttr(t, s, "cache.prefix", "user")
	if _, ok := spanAttr(s, "cache.key"); ok {
		t.Error("the pattern is an attribute without TraceKeys")
	}
	write := cache.InvalidateOnWrite(c, "user", func(context.Context, int) (int, error) { return 0, nil })
	if _, err := write(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wantAttr(t, lastSpan(t, rec, "cache.InvalidateOnWrite"), "cache.prefix", "user")
}

func TestTraceMiddleware(t *testing.T) {
	rec, tp := newTraced(t)
	c := newCache(t, cache.Config{TracerProvider: tp})
	var handlerSpan trace.SpanContext
	h := cache.HTTPMiddleware(c, "page", time.Minute)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlerSpan = trace.SpanContextFromContext(r.Context())
		if strings.HasSuffix(r.URL.Path, "/fail") {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("body"))
	}))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	defer parent.End()
	serve := func(path string) {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}

	serve("/a")
	s := lastSpan(t, rec, "cache.http")
	wantAttr(t, s, "cache.outcome", "miss")
	wantAttr(t, s, "cache.prefix", "page")
	if _, ok := spanAttr(s, "cache.load.duration_ms"); !ok {
		t.Error("middleware miss without cache.load.duration_ms")
	}
	if s.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Error("the middleware's span is not a child of the request's")
	}
	if handlerSpan.SpanID() != s.SpanContext().SpanID() {
		t.Error("the handler does not run under the middleware's span")
	}
	serve("/a")
	wantAttr(t, lastSpan(t, rec, "cache.http"), "cache.outcome", "hit")

	serve("/fail")
	if s := lastSpan(t, rec, "cache.http"); s.Status().Code != codes.Error {
		t.Errorf("a 503 from the handler: status %v, want Error", s.Status())
	}
}

// TestTraceOffAllocatesNothing: with no provider registered, GetOrLoad's
// near-cache hit allocates what it did before tracing existed: one more
// than Get (3 and 2 on the commit before tracing), where a span would add
// its context, the span and its attributes.
func TestTraceOffAllocatesNothing(t *testing.T) {
	c := newNearCache(t, cache.Config{})
	ctx := context.Background()
	load := func(context.Context) (string, error) { return "v", nil }
	var v string
	waitFor(t, 5*time.Second, "the key in the near-cache", func() bool {
		before := c.Stats().LocalHits
		if _, err := cache.GetOrLoad(ctx, c, "hot:1", time.Minute, load); err != nil {
			t.Fatal(err)
		}
		_, _ = c.Get(ctx, "hot:1", &v)
		return c.Stats().LocalHits == before+2
	})
	before := c.Stats().LocalHits
	getOrLoad := testing.AllocsPerRun(200, func() { _, _ = cache.GetOrLoad(ctx, c, "hot:1", time.Minute, load) })
	get := testing.AllocsPerRun(200, func() { _, _ = c.Get(ctx, "hot:1", &v) })
	t.Logf("near-hit allocations: GetOrLoad %.1f, Get %.1f", getOrLoad, get)
	if c.Stats().LocalHits-before < 300 {
		t.Skip("the near-cache's lease lapsed during the measurement (a loaded machine); nothing measured")
	}
	if getOrLoad > get+1 {
		t.Errorf("GetOrLoad near-hit allocates %.1f, Get %.1f: tracing costs without a provider", getOrLoad, get)
	}
}

// TestTraceOnAllocations only reports what a recorded near-hit costs.
func TestTraceOnAllocations(t *testing.T) {
	_, tp := newTraced(t)
	c := newNearCache(t, cache.Config{TracerProvider: tp})
	ctx := context.Background()
	load := func(context.Context) (string, error) { return "v", nil }
	_, _ = cache.GetOrLoad(ctx, c, "hot:1", time.Minute, load)
	n := testing.AllocsPerRun(100, func() { _, _ = cache.GetOrLoad(ctx, c, "hot:1", time.Minute, load) })
	t.Logf("GetOrLoad with a recording provider: %.1f allocations", n)
}
