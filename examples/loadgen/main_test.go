package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// perfectCache answers like the workload behind an ideal cache: the first GET
// of a path misses, later ones hit, and a PUT forgets the paths of its kind.
type perfectCache struct {
	mu    sync.Mutex
	seen  map[string]bool
	puts  int
	paths map[string]int // requests per path
}

func (p *perfectCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paths[r.URL.Path]++
	if r.Method == http.MethodPut {
		p.puts++
		kind := strings.Split(r.URL.Path, "/")[1]
		for path := range p.seen {
			if strings.HasPrefix(path, "/"+kind+"/") {
				delete(p.seen, path)
			}
		}
		return
	}
	if p.seen[r.URL.Path] {
		w.Header().Set("X-Cache", "HIT")
	} else {
		w.Header().Set("X-Cache", "MISS")
		p.seen[r.URL.Path] = true
	}
}

var summary = regexp.MustCompile(`done after \S+: (\d+) reads, (\d+) hits, (\d+) misses, hit ratio ([0-9.]+)%, (\d+) writes, (\d+) errors`)

func runAgainst(t *testing.T, h http.Handler, args ...string) []int {
	t.Helper()
	ts := httptest.NewServer(h)
	defer ts.Close()
	var out strings.Builder
	if err := run(context.Background(), append([]string{"-target", ts.URL}, args...), &out, &out); err != nil {
		t.Fatal(err)
	}
	m := summary.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary line in:\n%s", out.String())
	}
	var n []int
	for _, s := range m[1:] {
		if i, err := strconv.Atoi(s); err == nil {
			n = append(n, i)
		} else {
			f, _ := strconv.ParseFloat(s, 64)
			n = append(n, int(f*10)) // hit ratio in tenths of a percent
		}
	}
	return n
}

func TestDefaultMixGivesAboutNinetyPercentHits(t *testing.T) {
	pc := &perfectCache{seen: map[string]bool{}, paths: map[string]int{}}
	n := runAgainst(t, pc, "-rate", "5000", "-duration", "1s", "-report", "0")
	reads, hits, misses, ratio, writes, errs := n[0], n[1], n[2], n[3], n[4], n[5]
	if reads < 1000 || hits+misses != reads || writes != 0 || errs != 0 {
		t.Fatalf("reads %d hits %d misses %d writes %d errors %d: want >= 1000 reads, no writes, no errors", reads, hits, misses, writes, errs)
	}
	// 90% of reads go to 2x20 hot paths (40 misses in all); the cold 10%
	// almost never repeat. So the ratio is just under 90%.
	if ratio < 850 || ratio > 905 {
		t.Errorf("hit ratio %.1f%%, want 85-90.5%%", float64(ratio)/10)
	}
	hot := 0
	for path, count := range pc.paths {
		id, _ := strconv.Atoi(path[strings.LastIndexByte(path, '/')+1:])
		if id <= 20 {
			hot += count
		}
	}
	if share := float64(hot) / float64(reads); share < 0.87 || share > 0.93 {
		t.Errorf("%.1f%% of requests on hot ids, want about 90%%", share*100)
	}
}

func TestWritesInvalidateAndAreCounted(t *testing.T) {
	pc := &perfectCache{seen: map[string]bool{}, paths: map[string]int{}}
	n := runAgainst(t, pc, "-rate", "5000", "-duration", "500ms", "-report", "0", "-write-fraction", "0.2")
	writes := n[4]
	if writes == 0 || writes != pc.puts {
		t.Fatalf("loadgen counted %d writes, server saw %d PUTs; want equal and > 0", writes, pc.puts)
	}
	// A fifth of requests wipe their kind's cache: far fewer hits than 90%.
	if ratio := n[3]; ratio > 800 {
		t.Errorf("hit ratio %.1f%% despite 20%% writes, want < 80%%", float64(ratio)/10)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-rate", "0"},
		{"-hot-fraction", "1.5"},
		{"-concurrency", "0"},
		{"extra"},
	} {
		var out strings.Builder
		if err := run(context.Background(), args, &out, &out); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}
