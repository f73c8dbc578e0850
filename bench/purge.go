package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// The purge benchmark: delete the half of a 1M-key database that matches a
// pattern, three ways, on a server of its own.
const purgePattern = "del:*"

type purgeResult struct {
	name    string
	elapsed time.Duration
	keys    int64
	// serverCPU is the CPU time redis-server spent meanwhile: close to
	// elapsed means the purge ran at the server's own limit.
	serverCPU time.Duration
}

func (r purgeResult) keysPerSec() float64 { return float64(r.keys) / r.elapsed.Seconds() }

// latency is what a concurrent reader saw: a GET of another key in a loop.
type latency struct {
	name          string
	p50, p99, max time.Duration
	reads         int
	purgeTime     time.Duration
}

type purgeBench struct {
	s     *server
	c     *redis.Client
	total int64 // keys in the database, half of them matching
}

func newPurgeBench(total int64) (*purgeBench, error) {
	// DEBUG POPULATE fills a million keys in a fraction of a second,
	// server-side; it needs the debug command, off by default since 7.0.
	s, err := startServer("--enable-debug-command", "yes")
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: s.addr(), PoolSize: 4, ReadTimeout: 30 * time.Second})
	p := &purgeBench{s: s, c: c, total: total}
	ctx := context.Background()
	if err := c.Do(ctx, "DEBUG", "POPULATE", total/2-1, "keep", 16).Err(); err != nil {
		s.close()
		return nil, fmt.Errorf("DEBUG POPULATE: %w", err)
	}
	// The key the latency probe reads is one of the half that stays.
	if err := c.Set(ctx, "probe", "x", 0).Err(); err != nil {
		s.close()
		return nil, err
	}
	return p, nil
}

func (p *purgeBench) close() {
	p.c.Close()
	p.s.close()
}

// refill restores the matching half ("del:0" ... ) and checks the total.
func (p *purgeBench) refill(ctx context.Context) error {
	if err := p.c.Do(ctx, "DEBUG", "POPULATE", p.total/2, "del", 16).Err(); err != nil {
		return err
	}
	if n := p.c.DBSize(ctx).Val(); n != p.total {
		return fmt.Errorf("database holds %d keys, want %d", n, p.total)
	}
	return nil
}

// check confirms that exactly the matching half is gone.
func (p *purgeBench) check(ctx context.Context, name string) error {
	if n := p.c.DBSize(ctx).Val(); n != p.total/2 {
		return fmt.Errorf("%s left %d keys, want %d", name, n, p.total/2)
	}
	return nil
}

func (p *purgeBench) run(ctx context.Context, name string, fn func(context.Context) (int64, error)) (purgeResult, error) {
	if err := p.refill(ctx); err != nil {
		return purgeResult{}, err
	}
	cpu0 := p.serverCPU(ctx)
	start := time.Now()
	n, err := fn(ctx)
	elapsed := time.Since(start)
	cpu := p.serverCPU(ctx) - cpu0
	if err != nil {
		return purgeResult{}, fmt.Errorf("%s: %w", name, err)
	}
	if err := p.check(ctx, name); err != nil {
		return purgeResult{}, err
	}
	if n < 0 {
		n = p.total / 2
	}
	return purgeResult{name: name, elapsed: elapsed, keys: n, serverCPU: cpu}, nil
}

// serverCPU returns the CPU time redis-server has used so far.
func (p *purgeBench) serverCPU(ctx context.Context) time.Duration {
	info, _ := p.c.Info(ctx, "cpu").Result()
	var total float64
	for _, line := range strings.Split(info, "\n") {
		for _, f := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), f); ok {
				x, _ := strconv.ParseFloat(v, 64)
				total += x
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

// engine is the project's purge (pkg/cache/purge), as Invalidate and the
// controller run it.
func (p *purgeBench) engine(opt purge.Options) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		return purge.Node(ctx, p.c, purgePattern, 0, opt, nil)
	}
}

// plainLoop is what one writes by hand: SCAN a page, UNLINK it, repeat.
func (p *purgeBench) plainLoop(ctx context.Context) (int64, error) {
	var cursor uint64
	var deleted int64
	for {
		keys, next, err := p.c.Scan(ctx, cursor, purgePattern, 1000).Result()
		if err != nil {
			return deleted, err
		}
		if len(keys) > 0 {
			n, err := p.c.Unlink(ctx, keys...).Result()
			if err != nil {
				return deleted, err
			}
			deleted += n
		}
		if next == 0 {
			return deleted, nil
		}
		cursor = next
	}
}

// cliPipe is the shell one-liner: redis-cli --scan feeding UNLINK commands,
// in the protocol, to redis-cli --pipe.
func (p *purgeBench) cliPipe(ctx context.Context) (int64, error) {
	port := strconv.Itoa(p.s.Port)
	script := `redis-cli -p ` + port + ` --scan --pattern '` + purgePattern + `' |
  awk '{ printf "*2\r\n$6\r\nUNLINK\r\n$%d\r\n%s\r\n", length($0), $0 }' |
  redis-cli -p ` + port + ` --pipe >/dev/null`
	out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	return -1, nil
}

// withReader runs purge while another client GETs a key in a loop, and
// returns the latencies that reader saw.
func (p *purgeBench) withReader(ctx context.Context, name string, fn func(context.Context) (int64, error)) (latency, error) {
	if err := p.refill(ctx); err != nil {
		return latency{}, err
	}
	reader := redis.NewClient(&redis.Options{Addr: p.s.addr(), PoolSize: 1})
	defer reader.Close()
	reader.Ping(ctx)
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		lat   []time.Duration
		rerr  error
		start = make(chan struct{})
	)
	wg.Go(func() {
		close(start)
		for !stop.Load() {
			t := time.Now()
			if err := reader.Get(ctx, "probe").Err(); err != nil {
				rerr = err
				return
			}
			lat = append(lat, time.Since(t))
		}
	})
	<-start
	t := time.Now()
	var err error
	if fn != nil {
		_, err = fn(ctx)
	} else {
		time.Sleep(time.Second) // the idle baseline
	}
	took := time.Since(t)
	stop.Store(true)
	wg.Wait()
	if err == nil {
		err = rerr
	}
	if err != nil {
		return latency{}, fmt.Errorf("%s: %w", name, err)
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
	return latency{name: name, p50: q(0.50), p99: q(0.99), max: lat[len(lat)-1], reads: len(lat), purgeTime: took}, nil
}
