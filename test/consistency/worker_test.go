package consistency_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// The source of truth, the database behind the cache, is a second
// redis-server that no fault touches, so that worker processes share it. A
// write allocates the next version from one counter and stores it as the
// key's value in one script, so a key's versions rise in the order they were
// committed and every version is unique across keys.

var writeScript = redis.NewScript(`
local v = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], v)
return v`)

type source struct{ rc *redis.Client }

func newSource(addr string) *source {
	return &source{rc: redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})}
}

func srcKey(k string) string { return "src:" + k }

// write commits the next version of k and returns it.
func (s *source) write(ctx context.Context, k string) (int64, error) {
	return writeScript.Run(ctx, s.rc, []string{"ver", srcKey(k)}).Int64()
}

// read returns k's current version, 0 before its first write.
func (s *source) read(ctx context.Context, k string) (int64, error) {
	v, err := s.rc.Get(ctx, srcKey(k)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

// snapshot reads the current versions of keys.
func (s *source) snapshot(ctx context.Context, keys []string) (map[string]int64, error) {
	sk := make([]string, len(keys))
	for i, k := range keys {
		sk[i] = srcKey(k)
	}
	vals, err := s.rc.MGet(ctx, sk...).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(keys))
	for i, v := range vals {
		var n int64
		if str, ok := v.(string); ok {
			if _, err := fmt.Sscan(str, &n); err != nil {
				return nil, err
			}
		}
		out[keys[i]] = n
	}
	return out, nil
}

// value is what the cache holds: a version of one key.
type value struct {
	K string `json:"k"`
	V int64  `json:"v"`
}

// mix weighs the operations a worker goroutine draws.
type mix struct {
	Get, GetOrLoad, Set, Delete, Invalidate, IOW int
}

func (m mix) total() int { return m.Get + m.GetOrLoad + m.Set + m.Delete + m.Invalidate + m.IOW }

func (m mix) pick(r *rand.Rand) string {
	n := r.IntN(m.total())
	for _, c := range []struct {
		w  int
		op string
	}{{m.Get, opGet}, {m.GetOrLoad, opGetOrLoad}, {m.Set, opSet}, {m.Delete, opDelete}, {m.Invalidate, opInvalidate}, {m.IOW, opIOW}} {
		if n < c.w {
			return c.op
		}
		n -= c.w
	}
	panic("unreachable")
}

var (
	fullMix     = mix{Get: 30, GetOrLoad: 30, Set: 10, Delete: 10, Invalidate: 10, IOW: 10}
	noLoadMix   = mix{Get: 60, Set: 20, Delete: 10, Invalidate: 5, IOW: 5}
	readOnlyMix = mix{Get: 1}
)

// workerConfig is one cache process: what it connects to and what it does.
// It travels to worker processes as JSON.
type workerConfig struct {
	Proc     int
	Seed     uint64
	Scenario string
	CacheURL string // through this process's own stall proxy
	// Mode and Addrs, when set, connect to a Redis Cluster instead of
	// CacheURL (cluster_test.go).
	Mode          string   `json:",omitempty"`
	Addrs         []string `json:",omitempty"`
	SourceAddr    string
	KeyPrefix     string
	Keys          []string
	Near          bool
	NearPrefixes  []string
	AutoPipeline  bool
	LoadLease     time.Duration
	SocketTimeout time.Duration
	Goroutines    int
	Mix           mix
	LoadDelayMax  time.Duration // a loader sleeps up to this after reading the source
	Think         time.Duration // pause between a goroutine's operations
	// PinKeys gives goroutine g the key Keys[g%len(Keys)] alone, so that a
	// goroutine blocked on one key does not stop the reads of the others.
	PinKeys bool
}

func (w *workerConfig) cacheConfig() cache.Config {
	cfg := cache.Config{
		URL:           w.CacheURL,
		KeyPrefix:     w.KeyPrefix,
		SocketTimeout: w.SocketTimeout,
		// The library autopipelines by default; the plain scenarios
		// keep checking the way without.
		DisableAutoPipeline: !w.AutoPipeline,
		LoadLease:           w.LoadLease,
	}
	if w.Mode != "" {
		cfg.URL, cfg.Mode, cfg.Addrs = "", w.Mode, w.Addrs
	}
	if w.Near {
		cfg.NearCache = &cache.NearCacheConfig{Prefixes: w.NearPrefixes}
	}
	return cfg
}

// openCache connects a Cache for w and waits for its near-cache, if any.
func openCache(ctx context.Context, w *workerConfig) (*cache.Cache, error) {
	c, err := cache.New(w.cacheConfig())
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err
	}
	if w.Near {
		deadline := time.Now().Add(10 * time.Second)
		for !c.NearCacheStats().Enabled {
			if time.Now().After(deadline) {
				c.Close()
				return nil, fmt.Errorf("near-cache of process %d not enabled after 10s: %+v", w.Proc, c.NearCacheStats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return c, nil
}

// worker runs random operations on one Cache and reports each as an Event.
type worker struct {
	cfg  workerConfig
	c    *cache.Cache
	src  *source
	emit func(Event)
}

// run runs cfg.Goroutines goroutines of operations until stop is closed.
func (w *worker) run(stop <-chan struct{}) {
	var wg sync.WaitGroup
	for g := range w.cfg.Goroutines {
		rng := rand.New(rand.NewPCG(w.cfg.Seed, streamID(w.cfg.Scenario, w.cfg.Proc, g)))
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				w.emit(w.step(g, rng))
				if w.cfg.Think > 0 {
					time.Sleep(w.cfg.Think)
				}
			}
		})
	}
	wg.Wait()
}

// streamID derives a goroutine's random stream, so that a seed replays each
// goroutine's sequence of operations.
func streamID(scenario string, proc, gor int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d/%d", scenario, proc, gor)
	return h.Sum64()
}

func prefixOf(k string) string {
	p, _, _ := strings.Cut(k, ":")
	return p
}

// keysUnder returns the keys a prefix pattern "p:*" reaches.
func keysUnder(keys []string, prefix string) []string {
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix+":") {
			out = append(out, k)
		}
	}
	return out
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// step draws and runs one operation. Every random choice is drawn here,
// before any call, so the sequence depends on the seed alone.
func (w *worker) step(g int, rng *rand.Rand) Event {
	ctx := context.Background() // each call is bounded by SocketTimeout
	op := w.cfg.Mix.pick(rng)
	k := w.cfg.Keys[rng.IntN(len(w.cfg.Keys))]
	if w.cfg.PinKeys {
		k = w.cfg.Keys[g%len(w.cfg.Keys)]
	}
	withWrite := rng.IntN(10) < 7
	wholePrefix := rng.IntN(2) == 0
	var delay time.Duration
	if w.cfg.LoadDelayMax > 0 {
		delay = time.Duration(rng.Int64N(int64(w.cfg.LoadDelayMax)))
	}

	e := Event{Proc: w.cfg.Proc, Gor: g, Op: op, Key: k, Start: mono()}
	switch op {
	case opGet:
		var v value
		found, err := w.c.Get(ctx, k, &v)
		e.End = mono()
		e.Found, e.Ver, e.Err = found, v.V, errString(err)
		switch {
		case err != nil && strings.Contains(err.Error(), "decode"):
			e.Corrupt = err.Error()
		case found && v.K != k:
			e.Corrupt = fmt.Sprintf("value of key %q", v.K)
		}
		return e

	case opGetOrLoad:
		var own atomic.Bool
		v, err := cache.GetOrLoad(ctx, w.c, k, time.Hour, func(lctx context.Context) (value, error) {
			own.Store(true)
			ls := mono()
			ver, err := w.src.read(lctx, k)
			w.emit(Event{Proc: w.cfg.Proc, Gor: g, Op: opLoad, Key: k, Start: ls, End: mono(), Ver: ver, Err: errString(err)})
			// A slow loader: it has read its source, and works on.
			if delay > 0 {
				time.Sleep(delay)
			}
			return value{K: k, V: ver}, err
		})
		e.End = mono()
		e.Ver, e.OwnLoad, e.Err = v.V, own.Load(), errString(err)
		if err == nil && v.K != k {
			e.Corrupt = fmt.Sprintf("value of key %q", v.K)
		}
		return e

	case opSet:
		e.SrcStart = e.Start
		ver, err := w.src.write(ctx, k)
		if err != nil {
			e.End, e.Err = mono(), "source: "+err.Error()
			return e
		}
		e.Wrote, e.Floors = ver, map[string]int64{k: ver}
		e.CacheStart = mono()
		err = w.c.Set(ctx, k, value{K: k, V: ver}, time.Hour)
		e.End, e.Err = mono(), errString(err)
		return e

	case opDelete:
		var floor int64
		var err error
		if withWrite {
			e.SrcStart = e.Start
			floor, err = w.src.write(ctx, k)
			e.Wrote = floor
		} else {
			floor, err = w.src.read(ctx, k)
		}
		if err != nil {
			e.End, e.Err = mono(), "source: "+err.Error()
			return e
		}
		e.Floors = map[string]int64{k: floor}
		e.CacheStart = mono()
		_, err = w.c.Delete(ctx, k)
		e.End, e.Err = mono(), errString(err)
		return e

	case opInvalidate:
		reach := []string{k}
		e.Pattern = k
		if wholePrefix {
			e.Pattern = prefixOf(k) + ":*"
			reach = keysUnder(w.cfg.Keys, prefixOf(k))
		}
		floors, err := w.src.snapshot(ctx, reach)
		if err != nil {
			e.End, e.Err = mono(), "source: "+err.Error()
			return e
		}
		e.Floors = floors
		e.CacheStart = mono()
		_, err = w.c.Invalidate(ctx, e.Pattern)
		e.End, e.Err = mono(), errString(err)
		return e

	case opIOW:
		p := prefixOf(k)
		e.Pattern = p
		e.SrcStart = e.Start
		write := cache.InvalidateOnWrite(w.c, p, func(ctx context.Context, k string) (int64, error) {
			ver, err := w.src.write(ctx, k)
			if err != nil {
				return 0, err
			}
			// Read after the write, before the invalidation starts: the
			// floors its completion promises.
			floors, err := w.src.snapshot(ctx, keysUnder(w.cfg.Keys, p))
			e.Floors = floors
			e.CacheStart = mono()
			return ver, err
		})
		ver, err := write(ctx, k)
		e.End = mono()
		e.Wrote = ver
		if err != nil {
			e.Err = "source: " + err.Error()
			e.Floors = nil
		}
		return e
	}
	panic("unknown op " + op)
}
