// Command loadgen sends the example workload a skewed stream of requests: most
// go to a small set of hot users and products, the rest are spread over many
// cold ones, as real traffic is. With the defaults the cache's hit ratio
// climbs to about 90% within seconds (the hot keys stay cached, the cold ones
// almost never repeat).
//
// It prints the hit ratio it sees (from the X-Cache header) every -report
// interval and once more when it stops (SIGINT, SIGTERM or -duration).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// config holds the command line.
type config struct {
	target        string
	rate          float64
	concurrency   int
	duration      time.Duration
	hotKeys       int
	hotFraction   float64
	coldKeys      int
	productShare  float64
	writeFraction float64
	report        time.Duration
	seed          uint64
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.target, "target", "http://127.0.0.1:8080", "Base URL of the workload.")
	fs.Float64Var(&cfg.rate, "rate", 100, "Requests per second, in total.")
	fs.IntVar(&cfg.concurrency, "concurrency", 4, "Requests in flight at most.")
	fs.DurationVar(&cfg.duration, "duration", 0, "Stop after this long; 0 runs until SIGINT or SIGTERM.")
	fs.IntVar(&cfg.hotKeys, "hot-keys", 20, "Number of hot ids per kind.")
	fs.Float64Var(&cfg.hotFraction, "hot-fraction", 0.9, "Share of reads that go to the hot ids (0-1); about the hit ratio to expect.")
	fs.IntVar(&cfg.coldKeys, "cold-keys", 1_000_000, "Number of cold ids per kind, picked uniformly: they rarely repeat.")
	fs.Float64Var(&cfg.productShare, "product-share", 0.4, "Share of requests for products rather than users (0-1).")
	fs.Float64Var(&cfg.writeFraction, "write-fraction", 0, "Share of requests that are PUTs (0-1); each one invalidates its kind's cached entries.")
	fs.DurationVar(&cfg.report, "report", 5*time.Second, "How often to print the hit ratio; 0 prints only at the end.")
	fs.Uint64Var(&cfg.seed, "seed", 1, "Seed of the request mix, for repeatable runs.")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.rate <= 0:
		return cfg, errors.New("-rate must be positive")
	case cfg.concurrency <= 0:
		return cfg, errors.New("-concurrency must be positive")
	case cfg.hotKeys <= 0 || cfg.coldKeys < 0:
		return cfg, errors.New("-hot-keys must be positive and -cold-keys not negative")
	case !fraction(cfg.hotFraction) || !fraction(cfg.productShare) || !fraction(cfg.writeFraction):
		return cfg, errors.New("-hot-fraction, -product-share and -write-fraction must be between 0 and 1")
	}
	cfg.target = strings.TrimSuffix(cfg.target, "/")
	return cfg, nil
}

func fraction(f float64) bool { return f >= 0 && f <= 1 }

// counts are what the load generator has seen.
type counts struct {
	hits, misses, writes, errors atomic.Int64
}

type snapshot struct{ hits, misses, writes, errors int64 }

func (c *counts) snapshot() snapshot {
	return snapshot{c.hits.Load(), c.misses.Load(), c.writes.Load(), c.errors.Load()}
}

func (s snapshot) sub(o snapshot) snapshot {
	return snapshot{s.hits - o.hits, s.misses - o.misses, s.writes - o.writes, s.errors - o.errors}
}

func (s snapshot) ratio() string {
	if s.hits+s.misses == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", float64(s.hits)*100/float64(s.hits+s.misses))
}

// run sends requests until ctx ends or -duration passes, then prints a summary.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.duration)
		defer cancel()
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: cfg.concurrency},
	}
	defer client.CloseIdleConnections()

	fmt.Fprintf(stdout, "loadgen: %s, %.0f req/s, %.0f%% of reads on %d hot ids per kind\n",
		cfg.target, cfg.rate, cfg.hotFraction*100, cfg.hotKeys)
	var (
		c       counts
		wg      sync.WaitGroup
		limiter = rate.NewLimiter(rate.Limit(cfg.rate), max(1, cfg.concurrency))
		start   = time.Now()
	)
	for i := range cfg.concurrency {
		// One generator per worker: *rand.Rand is not safe for concurrent use.
		rng := rand.New(rand.NewPCG(cfg.seed, uint64(i)))
		wg.Go(func() {
			for limiter.Wait(ctx) == nil {
				c.do(ctx, client, cfg, rng)
			}
		})
	}
	if cfg.report > 0 {
		wg.Go(func() {
			t := time.NewTicker(cfg.report)
			defer t.Stop()
			var last snapshot
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				cur := c.snapshot()
				fmt.Fprintf(stdout, "loadgen: %s hit ratio %s over %d reads (last %s: %s), %d writes, %d errors\n",
					time.Since(start).Round(time.Second), cur.ratio(), cur.hits+cur.misses,
					cfg.report, cur.sub(last).ratio(), cur.writes, cur.errors)
				last = cur
			}
		})
	}
	wg.Wait()
	s := c.snapshot()
	fmt.Fprintf(stdout, "loadgen: done after %s: %d reads, %d hits, %d misses, hit ratio %s, %d writes, %d errors\n",
		time.Since(start).Round(time.Millisecond), s.hits+s.misses, s.hits, s.misses, s.ratio(), s.writes, s.errors)
	return nil
}

// do sends one request of the mix and counts its outcome.
func (c *counts) do(ctx context.Context, client *http.Client, cfg config, rng *rand.Rand) {
	kind := "users"
	if rng.Float64() < cfg.productShare {
		kind = "products"
	}
	id := 1 + rng.IntN(cfg.hotKeys)
	if cfg.coldKeys > 0 && rng.Float64() >= cfg.hotFraction {
		id = cfg.hotKeys + 1 + rng.IntN(cfg.coldKeys)
	}
	url := fmt.Sprintf("%s/%s/%d", cfg.target, kind, id)
	method, body := http.MethodGet, io.Reader(nil)
	if rng.Float64() < cfg.writeFraction {
		method, body = http.MethodPut, strings.NewReader(fmt.Sprintf(`{"name":"%s %d renamed"}`, kind, id))
	}
	// A request once sent runs to its end (bounded by the client's timeout):
	// cut off at the deadline, the server would count it and we would not.
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), method, url, body)
	if err != nil {
		c.errors.Add(1)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.errors.Add(1)
		}
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		c.errors.Add(1)
	case method == http.MethodPut:
		c.writes.Add(1)
	case resp.Header.Get("X-Cache") == "HIT":
		c.hits.Add(1)
	default:
		c.misses.Add(1)
	}
}
