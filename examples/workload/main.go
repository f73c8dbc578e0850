// Command workload is the example service of cacheplane: a small HTTP API whose
// backing store is slow on purpose, cached in Redis by pkg/cache's HTTP
// middleware. It follows the CachePolicy published for its key prefix (TTLs,
// invalidations) and reports its hit/miss counters for the policy's status.
//
//	GET  /users/{id}     a user, cached under the prefix "users"
//	PUT  /users/{id}     replace a user's name; invalidates every cached user
//	GET  /products/{id}  a product, cached under the prefix "products"
//	PUT  /products/{id}  replace a product's name; invalidates every cached product
//	GET  /stats          the cache's counters in this process (JSON)
//	GET  /metrics        the same counters for Prometheus
//	GET  /healthz        200 once Redis is connected
//
// With -trace-stdout the cache's OpenTelemetry spans (cache.http,
// cache.InvalidateOnWrite) are printed to stdout as JSON.
//
// Responses carry X-Cache: HIT or MISS. SIGINT or SIGTERM stops the server,
// and closing the cache flushes the last counters to Redis.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

// config holds the command line.
type config struct {
	listen       string
	redisURL     string
	keyPrefix    string
	storeLatency time.Duration
	statsFlush   time.Duration
	traceStdout  bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("workload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "Address to serve HTTP on; port 0 picks a free one (the address is printed).")
	fs.StringVar(&cfg.redisURL, "redis-url", envOr("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (default $REDIS_URL, else redis://127.0.0.1:6379/0).")
	fs.StringVar(&cfg.keyPrefix, "key-prefix", "demo", "Key prefix in Redis; the CachePolicy with this spec.keyPrefix governs the cache.")
	fs.DurationVar(&cfg.storeLatency, "store-latency", 20*time.Millisecond, "Time each read of the fake backing store takes, so that hits are visibly faster.")
	fs.DurationVar(&cfg.statsFlush, "stats-flush", cache.DefaultStatsFlushInterval, "How often hit/miss counters are flushed to Redis for the operator.")
	fs.BoolVar(&cfg.traceStdout, "trace-stdout", false, "Print the cache's OpenTelemetry spans to stdout (JSON), to see hits, misses and load times per request.")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// run serves until ctx ends, then shuts the server down and closes the cache.
// It prints "workload: listening on http://<addr>" once requests are served.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	var tp trace.TracerProvider // nil: the global one, a no-op unless registered
	if cfg.traceStdout {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(stdout))
		if err != nil {
			return err
		}
		// A syncer, not a batcher: each span is printed as it ends.
		sdk := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
		defer func() { _ = sdk.Shutdown(context.Background()) }()
		tp = sdk
	}
	c, err := cache.New(cache.Config{
		URL:                cfg.redisURL,
		KeyPrefix:          cfg.keyPrefix,
		StatsFlushInterval: cfg.statsFlush,
		Logger:             log,
		TracerProvider:     tp,
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = c.Connect(cctx)
	cancel()
	if err != nil {
		return err
	}
	// Close flushes the counters gathered since the last flush: without it a
	// stopped workload would lose up to one flush interval of stats.
	defer func() {
		if err := c.Close(); err != nil {
			log.Warn("closing the cache", "err", err)
		} else {
			fmt.Fprintln(stdout, "workload: cache closed, stats flushed")
		}
	}()

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newHandler(c, newStore(cfg.storeLatency)),
		ReadHeaderTimeout: 5 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "workload: listening on http://%s (Redis %s, key prefix %q)\n", ln.Addr(), cfg.redisURL, cfg.keyPrefix)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newHandler routes the API. The middleware wraps each route's handler (not
// the mux) so that requests reach it with their route pattern and path values,
// which key the cache.
func newHandler(c *cache.Cache, st *store) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(cache.NewCollector(c))

	mux := http.NewServeMux()
	for _, kind := range []string{"users", "products"} {
		// ttl 0: the TTL the CachePolicy sets for the prefix, else the default.
		mw := cache.HTTPMiddleware(c, kind, 0, "id")
		mux.Handle("GET /"+kind+"/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			it, err := st.get(r.Context(), kind, r.PathValue("id"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			writeJSON(w, it)
		})))
		mux.Handle("PUT /"+kind+"/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body struct {
				Name string `json:"name"`
			}
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil || body.Name == "" {
				http.Error(w, `body must be JSON such as {"name": "Ada"}`, http.StatusBadRequest)
				return
			}
			writeJSON(w, st.put(kind, r.PathValue("id"), body.Name))
		})))
	}
	mux.Handle("GET /stats", cache.StatsHandler(c))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if c.Client() == nil {
			http.Error(w, "cache not connected", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "cacheplane example workload: GET|PUT /users/{id}, GET|PUT /products/{id}, GET /stats, GET /metrics")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// item is a user or a product.
type item struct {
	Kind    string `json:"kind"`
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// store is the fake backing store: every id exists, with a made-up name until
// a PUT replaces it, and every read takes latency.
type store struct {
	latency time.Duration
	reads   atomic.Int64

	mu      sync.Mutex
	renamed map[string]item // by kind + "/" + id
}

func newStore(latency time.Duration) *store {
	return &store{latency: latency, renamed: map[string]item{}}
}

func (s *store) get(ctx context.Context, kind, id string) (item, error) {
	s.reads.Add(1)
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return item{}, ctx.Err()
	case <-t.C:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.renamed[kind+"/"+id]; ok {
		return it, nil
	}
	return item{Kind: kind, ID: id, Name: fmt.Sprintf("%s %s", kind, id), Version: 1}, nil
}

func (s *store) put(kind, id, name string) item {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.renamed[kind+"/"+id]
	if !ok {
		it = item{Kind: kind, ID: id, Version: 1}
	}
	it.Name = name
	it.Version++
	s.renamed[kind+"/"+id] = it
	return it
}
