package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

// op is one benchmarked call; an error aborts the run.
type op func(ctx context.Context) error

// measurement is the median ns/op of a series over the rounds.
type measurement struct {
	nsPerOp float64
	samples []float64
}

// measureAll runs every named op at the given number of parallel callers,
// rounds times, interleaved (a, b, c, a, b, c, ...), so that a noisy spell on
// this shared machine hits every contender alike; it keeps each one's median.
func measureAll(rounds, callers int, names []string, ops map[string]op) (map[string]measurement, error) {
	res := make(map[string]measurement, len(names))
	for range rounds {
		for _, name := range names {
			ns, err := runOp(callers, ops[name])
			if err != nil {
				return nil, fmt.Errorf("%s at %d callers: %w", name, callers, err)
			}
			m := res[name]
			m.samples = append(m.samples, ns)
			res[name] = m
		}
	}
	for name, m := range res {
		s := slices.Clone(m.samples)
		slices.Sort(s)
		m.nsPerOp = s[len(s)/2]
		res[name] = m
	}
	return res, nil
}

// runOp measures one op with the standard library's benchmark driver:
// serially for one caller, with RunParallel spreading callers goroutines
// over GOMAXPROCS otherwise.
func runOp(callers int, fn op) (float64, error) {
	ctx := context.Background()
	var failed error
	r := testing.Benchmark(func(b *testing.B) {
		if callers <= 1 {
			for i := 0; i < b.N; i++ {
				if err := fn(ctx); err != nil {
					failed = err
					b.SkipNow()
				}
			}
			return
		}
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((callers + procs - 1) / procs)
		errs := make(chan error, 1)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := fn(ctx); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
		select {
		case failed = <-errs:
		default:
		}
	})
	if failed != nil {
		return 0, failed
	}
	if r.N == 0 {
		return 0, fmt.Errorf("benchmark did not run")
	}
	return float64(r.T.Nanoseconds()) / float64(r.N), nil
}

// measureAlternating measures one caller by alternating the contenders call
// by call (in a new random order each time: a fixed cycle would always put
// the same contender right after, say, rueidis, whose background goroutines
// are still busy then), for about d per contender, and keeps
// each one's median latency. On a machine shared with other work the drift
// between separate runs exceeds the differences being measured; alternating
// exposes every contender to the same moments.
func measureAlternating(d time.Duration, names []string, ops map[string]op) (map[string]measurement, error) {
	ctx := context.Background()
	times := make(map[string][]float64, len(names))
	for _, name := range names { // warm up: connections, caches
		for range 100 {
			if err := ops[name](ctx); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	deadline := time.Now().Add(d * time.Duration(len(names)))
	order := slices.Clone(names)
	for i := 0; time.Now().Before(deadline) || i < 1000; i++ {
		rand.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		for _, name := range order {
			start := time.Now()
			if err := ops[name](ctx); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			times[name] = append(times[name], float64(time.Since(start).Nanoseconds()))
		}
	}
	res := make(map[string]measurement, len(names))
	for name, t := range times {
		slices.Sort(t)
		res[name] = measurement{nsPerOp: t[len(t)/2], samples: []float64{float64(len(t))}}
	}
	return res, nil
}
