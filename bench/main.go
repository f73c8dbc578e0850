// Command bench compares pkg/cache with the Go Redis libraries people use
// (raw go-redis, go-redis/cache, rueidis) and the project's purge engine with
// the usual ways of deleting keys by pattern. It starts its own redis-servers,
// measures every contender in the same run, prints one table of ratios and
// writes it, with the details and a chart, to docs/benchmarks.md and
// docs/benchmarks.png.
//
// It is its own module, so that the peers it measures never enter the main
// module's dependencies. Run it from the repository root with `make bench`,
// or `cd bench && go run .` (-h lists the flags).
//
// With -dashboard-png it benchmarks nothing: it draws panels of the Grafana
// dashboard from a Prometheus instead (make dashboard-png, see dashboard.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

func main() {
	rounds := flag.Int("rounds", 10, "measurements of each series, interleaved; the median is kept")
	benchtime := flag.Duration("benchtime", 100*time.Millisecond, "time per measurement")
	purgeKeys := flag.Int64("purge-keys", 1_000_000, "keys in the purge benchmark's database (half of them match)")
	rateLimit := flag.Int64("rate-limit", 200_000, "MaxKeysPerSecond of the rate-limited purge")
	docs := flag.String("docs", "../docs", "directory to write benchmarks.md and benchmarks.png into; empty: print only")
	skipPurge := flag.Bool("skip-purge", false, "skip the purge benchmarks")
	skipOps := flag.Bool("skip-ops", false, "skip the cache operation benchmarks")
	skipBatch := flag.Bool("skip-batch", false, "skip the batch read and compression benchmarks")
	skipClusterPurge := flag.Bool("skip-cluster-purge", false, "skip the 3-master cluster purge benchmark (-purge-keys keys)")
	skipLoadLease := flag.Bool("skip-loadlease", false, "skip the LoadLease benchmarks")
	skipClusterNear := flag.Bool("skip-cluster-near", false, "skip the near-cache benchmark on a 3-master cluster")
	flag.Parse()
	if *dashboardPNG {
		if err := runDashboardPNG(context.Background()); err != nil {
			fatal(err)
		}
		return
	}

	// testing.Benchmark reads the test flags.
	testing.Init()
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		fatal(err)
	}
	start := time.Now()
	r := &report{rounds: *rounds, benchtime: *benchtime}
	ctx := context.Background()
	if !*skipOps {
		if err := r.runOps(ctx); err != nil {
			fatal(err)
		}
	}
	if !*skipBatch {
		if err := r.runBatch(ctx); err != nil {
			fatal(err)
		}
	}
	if !*skipLoadLease {
		if err := r.runLoadLease(ctx); err != nil {
			fatal(err)
		}
	}
	if !*skipClusterNear {
		if err := r.runClusterNear(ctx); err != nil {
			fatal(err)
		}
	}
	if !*skipPurge {
		if err := r.runPurge(ctx, *purgeKeys, *rateLimit); err != nil {
			fatal(err)
		}
	}
	if !*skipClusterPurge {
		if err := r.runClusterPurge(ctx, *purgeKeys); err != nil {
			fatal(err)
		}
	}
	r.took = time.Since(start)
	fmt.Print(r.table())
	if *docs != "" {
		md := filepath.Join(*docs, "benchmarks.md")
		png := filepath.Join(*docs, "benchmarks.png")
		if err := writeChart(png, r.rows); err != nil {
			fatal(err)
		}
		if err := writeDoc(md, r.generated()); err != nil {
			fatal(err)
		}
		fmt.Printf("\nwrote %s and %s in %v\n", md, png, r.took.Round(time.Second))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// The pkg/cache contenders: its defaults, and the defaults before read
// coalescing and autopipelining (Config.DisableReadCoalescing and
// DisableAutoPipeline), for comparison.
const (
	pkgDefaults = "pkg/cache (defaults)"
	pkgPrevious = "pkg/cache no coalescing, no autopipeline"
)

var libs = []string{pkgDefaults, pkgPrevious, "go-redis", "go-redis/cache", "rueidis"}

var opNames = []string{"hit", "miss", "set", "GetOrLoad hit"}

var localNames = []string{"pkg/cache near-cache", "pkg/cache remote", "rueidis client-side cache", "go-redis/cache TinyLFU"}

var callerCounts = []int{1, 64}

func (r *report) runOps(ctx context.Context) error {
	s, err := startServer()
	if err != nil {
		return err
	}
	defer s.close()
	c, err := newContenders(ctx, s)
	if err != nil {
		return err
	}
	defer c.close()
	r.redisVersion = serverVersion(ctx, s)
	ops := c.remoteOps()
	r.ops = map[string]map[int]map[string]measurement{}
	for _, name := range opNames {
		r.ops[name] = map[int]map[string]measurement{}
		for _, n := range callerCounts {
			progress("%s at %d callers", name, n)
			m, err := r.measure(n, libs, ops[name])
			if err != nil {
				return err
			}
			r.ops[name][n] = m
		}
	}
	r.local = map[int]map[string]measurement{}
	local := c.localOps()
	before := c.near.Stats()
	for _, n := range callerCounts {
		progress("in-process tiers at %d callers", n)
		m, err := r.measure(n, localNames, local)
		if err != nil {
			return err
		}
		r.local[n] = m
	}
	// The near-cache series must have been served from memory: a tier that
	// had turned itself off would make it a remote benchmark in disguise.
	after := c.near.Stats()
	if hits, local := after.Hits-before.Hits, after.LocalHits-before.LocalHits; hits == 0 || float64(local) < 0.999*float64(hits) {
		return fmt.Errorf("near-cache served %d of %d hits from memory: %+v", local, hits, c.near.NearCacheStats())
	}
	r.rows = append(r.rows, r.opRows()...)
	return nil
}

// measure alternates call by call at one caller, and interleaves rounds of
// RunParallel at more.
func (r *report) measure(callers int, names []string, ops map[string]op) (map[string]measurement, error) {
	if callers == 1 {
		return measureAlternating(time.Duration(r.rounds)*r.benchtime, names, ops)
	}
	return measureAll(r.rounds, callers, names, ops)
}

func (r *report) runPurge(ctx context.Context, total, rateLimit int64) error {
	progress("purge: filling %d keys", total)
	p, err := newPurgeBench(total)
	if err != nil {
		return err
	}
	defer p.close()
	if r.redisVersion == "" {
		r.redisVersion = serverVersion(ctx, p.s)
	}
	methods := []struct {
		name string
		fn   func(context.Context) (int64, error)
	}{
		{"project engine", p.engine(purge.Options{})},
		{"SCAN COUNT 1000 + UNLINK loop", p.plainLoop},
	}
	r.purge = map[string]purgeResult{}
	samples := map[string][]purgeResult{}
	// Each purge takes seconds, so fewer rounds than the operations get.
	rounds := min(r.rounds, 3)
	for i := range rounds {
		for _, m := range methods {
			progress("purge %d/%d: %s", i+1, rounds, m.name)
			res, err := p.run(ctx, m.name, m.fn)
			if err != nil {
				return err
			}
			samples[m.name] = append(samples[m.name], res)
		}
	}
	for name, s := range samples {
		r.purge[name] = medianPurge(s)
	}
	progress("purge: redis-cli --scan | redis-cli --pipe")
	cli, err := p.run(ctx, "redis-cli --scan | redis-cli --pipe", p.cliPipe)
	if err != nil {
		return err
	}
	r.purge[cli.name] = cli
	r.rateLimit = rateLimit
	for _, l := range []struct {
		name string
		fn   func(context.Context) (int64, error)
	}{
		{"no purge (idle)", nil},
		{"project engine, unthrottled", p.engine(purge.Options{})},
		{fmt.Sprintf("project engine, %d keys/s", rateLimit), p.engine(purge.Options{MaxKeysPerSecond: rateLimit})},
		{"SCAN COUNT 1000 + UNLINK loop", p.plainLoop},
	} {
		progress("GET latency during: %s", l.name)
		lat, err := p.withReader(ctx, l.name, l.fn)
		if err != nil {
			return err
		}
		r.latency = append(r.latency, lat)
	}
	r.purgeKeys = total
	r.rows = append(r.rows, r.purgeRows()...)
	return nil
}

func medianPurge(s []purgeResult) purgeResult {
	sorted := append([]purgeResult(nil), s...)
	for i := range sorted {
		for j := i + 1; j < len(sorted); j++ {
			if sorted[j].elapsed < sorted[i].elapsed {
				sorted[i], sorted[j] = sorted[j], sorted[i]
			}
		}
	}
	return sorted[len(sorted)/2]
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func serverVersion(ctx context.Context, s *server) string {
	c := newRawClient(s)
	defer c.Close()
	out, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "?"
}

func machine() string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), GOMAXPROCS %d, %s %s/%s", runtime.NumCPU(), model, runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
