package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// The LoadLease benchmarks (pkg/cache Config.LoadLease): what the lease adds
// to a hit (nothing, by design: a hit returns before the lease is looked at),
// and how many loads it saves when many processes miss one key at once.

const (
	leaseOff = "pkg/cache, LoadLease off"
	leaseOn  = "pkg/cache, LoadLease on"

	// stampedeProcs Caches, each with its own client and flight group as
	// separate processes have, miss one key at once; the loader takes
	// stampedeLoad.
	stampedeProcs = 50
	stampedeLoad  = 200 * time.Millisecond
	stampedeLease = 2 * time.Second
)

// stampede is one stampede's outcome: loads run, and the slowest caller's
// wait.
type stampede struct {
	loads   int
	slowest time.Duration
}

func (r *report) runLoadLease(ctx context.Context) error {
	s, err := startServer()
	if err != nil {
		return err
	}
	defer s.close()
	if r.redisVersion == "" {
		r.redisVersion = serverVersion(ctx, s)
	}
	caches := map[string]*cache.Cache{}
	for name, lease := range map[string]time.Duration{leaseOff: 0, leaseOn: stampedeLease} {
		c, err := connect(ctx, cache.Config{URL: s.url(), KeyPrefix: "lease", LoadLease: lease})
		if err != nil {
			return err
		}
		defer c.Close()
		caches[name] = c
	}
	load := func(context.Context) (user, error) { return value, nil }
	if _, err := cache.GetOrLoad(ctx, caches[leaseOff], hitKey, ttl, load); err != nil {
		return err
	}
	ops := map[string]op{}
	for name, c := range caches {
		ops[name] = func(ctx context.Context) error {
			_, err := cache.GetOrLoad(ctx, c, hitKey, ttl, load)
			return err
		}
	}
	names := []string{leaseOff, leaseOn}
	for _, n := range callerCounts {
		progress("LoadLease: GetOrLoad hit at %d callers", n)
		m, err := r.measure(n, names, ops)
		if err != nil {
			return err
		}
		on, off := m[leaseOn].nsPerOp, m[leaseOff].nsPerOp
		r.rows = append(r.rows, row{
			what:    "GetOrLoad hit, LoadLease on vs off",
			callers: fmt.Sprint(n),
			ours:    fmtNs(on), peer: fmtNs(off),
			ratio: on / off, speedup: off / on,
			target: "≤ 1.10x (none measurable)", met: yesNo(on/off <= 1.10),
		})
	}

	// The stampede: stampedeProcs Caches, interleaved rounds without and
	// with the lease, a fresh key each round; medians kept.
	procs := make(map[string][]*cache.Cache, 2)
	for name, lease := range map[string]time.Duration{leaseOff: 0, leaseOn: stampedeLease} {
		for range stampedeProcs {
			c, err := connect(ctx, cache.Config{URL: s.url(), KeyPrefix: "stampede", LoadLease: lease, MaxConnections: 4})
			if err != nil {
				return err
			}
			defer c.Close()
			procs[name] = append(procs[name], c)
		}
	}
	results := map[string][]stampede{}
	rounds := min(r.rounds, 5)
	for i := range rounds {
		for _, name := range names {
			progress("LoadLease: stampede %d/%d, %s", i+1, rounds, name)
			st, err := runStampede(ctx, procs[name], fmt.Sprintf("stampede:%d:%s", i, name))
			if err != nil {
				return err
			}
			results[name] = append(results[name], st)
		}
	}
	off, on := medianStampede(results[leaseOff]), medianStampede(results[leaseOn])
	r.rows = append(r.rows,
		row{
			what:    fmt.Sprintf("loads when %d processes miss one key, LoadLease on vs off", stampedeProcs),
			callers: fmt.Sprint(stampedeProcs),
			ours:    fmt.Sprint(on.loads), peer: fmt.Sprint(off.loads),
			ratio:  float64(on.loads) / float64(off.loads),
			target: "1 load", met: yesNo(on.loads == 1),
		},
		row{
			what:    fmt.Sprintf("slowest caller of that stampede (%v loader), LoadLease on vs off", stampedeLoad),
			callers: fmt.Sprint(stampedeProcs),
			ours:    fmtDur(on.slowest), peer: fmtDur(off.slowest),
			ratio: float64(on.slowest) / float64(off.slowest),
		})
	return nil
}

// runStampede has every cache GetOrLoad key at once (one caller each: the
// flight group already makes a process's callers one load) and counts the
// loads.
func runStampede(ctx context.Context, caches []*cache.Cache, key string) (stampede, error) {
	var loads atomic.Int32
	load := func(context.Context) (user, error) {
		loads.Add(1)
		time.Sleep(stampedeLoad)
		return value, nil
	}
	start := make(chan struct{})
	waits := make([]time.Duration, len(caches))
	errs := make([]error, len(caches))
	var wg sync.WaitGroup
	for i, c := range caches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t := time.Now()
			v, err := cache.GetOrLoad(ctx, c, key, ttl, load)
			waits[i] = time.Since(t)
			if err == nil && v.ID != value.ID {
				err = fmt.Errorf("got %+v", v)
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return stampede{}, fmt.Errorf("stampede on %s: %w", key, err)
		}
	}
	return stampede{loads: int(loads.Load()), slowest: slices.Max(waits)}, nil
}

// medianStampede keeps the median of each figure on its own.
func medianStampede(s []stampede) stampede {
	loads := make([]int, len(s))
	slowest := make([]time.Duration, len(s))
	for i, x := range s {
		loads[i], slowest[i] = x.loads, x.slowest
	}
	slices.Sort(loads)
	slices.Sort(slowest)
	return stampede{loads: loads[len(loads)/2], slowest: slowest[len(slowest)/2]}
}
