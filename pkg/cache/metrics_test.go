package cache_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// Keys come from URL slugs and other input: a prefix that is not valid
// UTF-8 must not panic a loader nor break a scrape. Prefixes that differ
// only in invalid bytes share one label value (each bad run becomes U+FFFD)
// and their counters add up.
func TestCollectorInvalidUTF8Prefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCache(t, cache.Config{})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(cache.NewCollector(c)); err != nil {
		t.Fatal(err)
	}
	load := func(context.Context) (int, error) { return 1, nil }
	for _, key := range []string{"\xff:1", "\xfe:1", "\xff:1", "ok:1"} {
		if _, err := cache.GetOrLoad(ctx, c, key, time.Minute, load); err != nil {
			t.Fatalf("GetOrLoad(%q): %v", key, err)
		}
	}
	_, _ = c.Get(ctx, "\xff\xfe:x", nil) // another miss of the same label

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather after keys with invalid UTF-8: %v", err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var prefix string
			for _, l := range m.GetLabel() {
				if l.GetName() == "prefix" {
					prefix = l.GetValue()
				}
			}
			name := f.GetName() + "/" + prefix
			switch {
			case m.GetCounter() != nil:
				got[name] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[name] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"cacheplane_cache_hits_total/\uFFFD":            1, // the second "\xff:1"
		"cacheplane_cache_misses_total/\uFFFD":          3, // "\xff:1", "\xfe:1", "\xff\xfe:x"
		"cacheplane_cache_load_duration_seconds/\uFFFD": 2,
		"cacheplane_cache_misses_total/ok":              1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}

	// And through the HTTP handler a Prometheus server scrapes.
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `prefix="`+"\uFFFD"+`"} 3`) {
		t.Errorf("scrape = %d:\n%s", resp.StatusCode, body)
	}

	// StatsHandler's JSON keeps one entry per name it can write.
	rec := httptest.NewRecorder()
	cache.StatsHandler(c).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var stats cache.Stats
	if err := json.Unmarshal(rec.Body.Bytes(), &stats); err != nil {
		t.Fatal(err)
	}
	if p := stats.Prefixes["\uFFFD"]; p.Misses != 3 || p.Hits != 1 {
		t.Errorf("StatsHandler: prefix U+FFFD = %+v, want 3 misses and 1 hit (body %s)", p, rec.Body)
	}
}
