package main

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// The cluster purge benchmark: the same half-matching database as the
// standalone one, spread over the slots of a 3-master Redis Cluster, purged
// by the engine with every master at once (purge.All, as Invalidate and the
// controller run it) and one master after another (purge.Node per master).

const clusterMasters = 3

type clusterPurgeResult struct {
	elapsed   time.Duration
	serverCPU time.Duration // the masters' CPU time meanwhile, summed
	clientCPU time.Duration // this process's CPU time meanwhile
}

type clusterPurgeBench struct {
	cl      *redistest.Cluster
	cc      *redis.ClusterClient
	masters []*redis.Client
	// tags[i] is a hash tag per slot of masters[i]: DEBUG POPULATE writes
	// keys without regard for slots, so each master populates only keys
	// whose tag hashes to a slot it owns, about the same number per slot.
	tags  [][]string
	total int64
}

func newClusterPurgeBench(ctx context.Context, total int64) (*clusterPurgeBench, error) {
	cl, err := redistest.StartCluster(clusterMasters, "--enable-debug-command", "yes")
	if err != nil {
		return nil, err
	}
	b := &clusterPurgeBench{cl: cl, total: total}
	b.cc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ReadTimeout: 30 * time.Second})
	if err := b.mapSlots(ctx); err != nil {
		b.close()
		return nil, err
	}
	if err := b.populate(ctx, "keep"); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *clusterPurgeBench) close() {
	for _, m := range b.masters {
		m.Close()
	}
	if b.cc != nil {
		b.cc.Close()
	}
	b.cl.Close()
}

// mapSlots finds each master's slots and a hash tag for every slot.
func (b *clusterPurgeBench) mapSlots(ctx context.Context) error {
	var tagOf [16384]string
	for i, found := 0, 0; found < len(tagOf); i++ {
		t := strconv.Itoa(i)
		if s := purge.Slot(t); tagOf[s] == "" {
			tagOf[s] = t
			found++
		}
	}
	shards, err := b.cc.ClusterShards(ctx).Result()
	if err != nil {
		return err
	}
	byAddr := map[string]int{}
	for _, sh := range shards {
		addr := ""
		for _, n := range sh.Nodes {
			if n.Role == "master" {
				addr = net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			}
		}
		if addr == "" || len(sh.Slots) == 0 {
			continue
		}
		i, ok := byAddr[addr]
		if !ok {
			i = len(b.masters)
			byAddr[addr] = i
			b.masters = append(b.masters, redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 30 * time.Second}))
			b.tags = append(b.tags, nil)
		}
		for _, r := range sh.Slots {
			for s := r.Start; s <= r.End; s++ {
				b.tags[i] = append(b.tags[i], tagOf[s])
			}
		}
	}
	if len(b.masters) != clusterMasters {
		return fmt.Errorf("cluster has %d masters, want %d", len(b.masters), clusterMasters)
	}
	return nil
}

// populate writes the half of the keys named prefix: total/2 keys
// "prefix:{tag}:n" spread evenly over all 16384 slots, with DEBUG POPULATE on
// the master of each slot (it skips keys that exist).
func (b *clusterPurgeBench) populate(ctx context.Context, prefix string) error {
	half := b.total / 2
	slot := int64(0)
	for i, m := range b.masters {
		pipe := m.Pipeline()
		for _, tag := range b.tags[i] {
			n := half / 16384
			if slot < half%16384 {
				n++
			}
			slot++
			if n > 0 {
				pipe.Do(ctx, "DEBUG", "POPULATE", n, prefix+":{"+tag+"}", 16)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("DEBUG POPULATE on %s: %w", m.Options().Addr, err)
		}
	}
	return nil
}

func (b *clusterPurgeBench) dbsize(ctx context.Context) (int64, error) {
	var n int64
	for _, m := range b.masters {
		k, err := m.DBSize(ctx).Result()
		if err != nil {
			return 0, err
		}
		n += k
	}
	return n, nil
}

func (b *clusterPurgeBench) serverCPU(ctx context.Context) time.Duration {
	var total float64
	for _, m := range b.masters {
		info, _ := m.Info(ctx, "cpu").Result()
		for _, line := range strings.Split(info, "\n") {
			for _, f := range []string{"used_cpu_sys:", "used_cpu_user:"} {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), f); ok {
					x, _ := strconv.ParseFloat(v, 64)
					total += x
				}
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run refills the matching half, purges it with fn, and checks that exactly
// the other half remains: total/2 keys, and re-populating the kept half adds
// none (so none of it was deleted).
func (b *clusterPurgeBench) run(ctx context.Context, name string, fn func(context.Context) (int64, error)) (clusterPurgeResult, error) {
	if err := b.populate(ctx, "del"); err != nil {
		return clusterPurgeResult{}, err
	}
	if n, err := b.dbsize(ctx); err != nil || n != b.total {
		return clusterPurgeResult{}, fmt.Errorf("cluster holds %d keys (%v), want %d", n, err, b.total)
	}
	cpu0, self0 := b.serverCPU(ctx), processCPU()
	start := time.Now()
	n, err := fn(ctx)
	res := clusterPurgeResult{elapsed: time.Since(start), serverCPU: b.serverCPU(ctx) - cpu0, clientCPU: processCPU() - self0}
	if err != nil {
		return res, fmt.Errorf("cluster purge, %s: %w", name, err)
	}
	if n != b.total/2 {
		return res, fmt.Errorf("cluster purge, %s: deleted %d keys, want %d", name, n, b.total/2)
	}
	if left, err := b.dbsize(ctx); err != nil || left != b.total/2 {
		return res, fmt.Errorf("cluster purge, %s: %d keys left (%v), want %d", name, left, err, b.total/2)
	}
	if err := b.populate(ctx, "keep"); err != nil {
		return res, err
	}
	if left, err := b.dbsize(ctx); err != nil || left != b.total/2 {
		return res, fmt.Errorf("cluster purge, %s: deleted %d kept keys (%v)", name, left-b.total/2, err)
	}
	return res, nil
}

// concurrent purges every master at once, as Invalidate and the controller
// do; count 0 is the adaptive COUNT (the default), else a fixed one.
func (b *clusterPurgeBench) concurrent(count int64) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		return purge.All(ctx, b.cc, "del:*", purge.Options{Count: count})
	}
}

// oneAtATime purges the masters one after another with the same engine.
func (b *clusterPurgeBench) oneAtATime(count int64) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		var total int64
		for _, m := range b.masters {
			n, err := purge.Node(ctx, m, "del:*", 0, purge.Options{Cluster: true, Count: count}, nil)
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
}

// runClusterPurge measures the two ways, interleaved, keeps the medians and
// appends the row and the detail table to the report.
func (r *report) runClusterPurge(ctx context.Context, total int64) error {
	progress("cluster purge: %d masters, filling %d keys", clusterMasters, total)
	b, err := newClusterPurgeBench(ctx, total)
	if err != nil {
		return err
	}
	defer b.close()
	// The adaptive COUNT (the default) aims each round trip at 1 ms of the
	// server's own time (INFO commandstats), so the client's wait for a core
	// shared with the masters does not shrink its pages; the fixed COUNT pair
	// shows what the engine does without that feedback.
	ways := []struct {
		name  string
		count int64
		fn    func(context.Context) (int64, error)
	}{
		{"all at once, adaptive COUNT", 0, b.concurrent(0)},
		{"one at a time, adaptive COUNT", 0, b.oneAtATime(0)},
		{"all at once, COUNT 1000", 1000, b.concurrent(1000)},
		{"one at a time, COUNT 1000", 1000, b.oneAtATime(1000)},
	}
	samples := map[string][]clusterPurgeResult{}
	rounds := min(r.rounds, 3)
	for i := range rounds {
		for _, w := range ways {
			progress("cluster purge %d/%d: %s", i+1, rounds, w.name)
			res, err := b.run(ctx, w.name, w.fn)
			if err != nil {
				return err
			}
			samples[w.name] = append(samples[w.name], res)
		}
	}
	med := func(s []clusterPurgeResult) clusterPurgeResult {
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j].elapsed < s[i].elapsed {
					s[i], s[j] = s[j], s[i]
				}
			}
		}
		return s[len(s)/2]
	}
	cpus := runtime.NumCPU()
	// Three masters cannot go faster than the cores they share allow.
	bound := 1 / float64(min(clusterMasters, cpus))
	var d strings.Builder
	fmt.Fprintf(&d, "\n### Cluster purge of %s of %s keys over %d masters (pattern `del:*`, %d CPUs)\n\n", fmtCount(total/2), fmtCount(total), clusterMasters, cpus)
	d.WriteString("| way | time | keys/s | redis-servers' CPU | client CPU | cores busy |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for i := 0; i < len(ways); i += 2 {
		conc, seq := med(samples[ways[i].name]), med(samples[ways[i+1].name])
		ratio := conc.elapsed.Seconds() / seq.elapsed.Seconds()
		count := "adaptive COUNT"
		if ways[i].count > 0 {
			count = fmt.Sprintf("COUNT %d", ways[i].count)
		}
		r.rows = append(r.rows, row{
			what: fmt.Sprintf("cluster purge %s of %s keys, %d masters, %s: all at once vs one at a time (%d CPUs shared by the %d redis-servers and the client)",
				fmtCount(total/2), fmtCount(total), clusterMasters, count, cpus, clusterMasters),
			callers: "—",
			ours:    conc.elapsed.Round(time.Millisecond).String(), peer: seq.elapsed.Round(time.Millisecond).String(),
			ratio: ratio, speedup: 1 / ratio,
			target: fmt.Sprintf("core bound %.2fx", bound),
		})
		for _, w := range []struct {
			name string
			res  clusterPurgeResult
		}{{ways[i].name, conc}, {ways[i+1].name, seq}} {
			busy := (w.res.serverCPU + w.res.clientCPU).Seconds() / w.res.elapsed.Seconds()
			fmt.Fprintf(&d, "| %s | %v | %s | %v | %v | %.2f of %d |\n", w.name, w.res.elapsed.Round(time.Millisecond),
				fmtRate(float64(total/2)/w.res.elapsed.Seconds()), w.res.serverCPU.Round(time.Millisecond), w.res.clientCPU.Round(time.Millisecond), busy, cpus)
		}
	}
	r.clusterPurge = d.String()
	return nil
}
