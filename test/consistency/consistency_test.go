package consistency_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// procSpec describes one cache process of a scenario.
type procSpec struct {
	OS            bool // a re-executed test binary rather than a Cache in this one
	Near          bool
	NearPrefixes  []string
	AutoPipeline  bool
	LoadLease     time.Duration // Config.LoadLease; 0: off
	SocketTimeout time.Duration // 0: the library's default
	Goroutines    int
	Mix           mix
	LoadDelayMax  time.Duration
	Think         time.Duration
	PinKeys       bool
}

func (p procSpec) String() string {
	var parts []string
	if p.OS {
		parts = append(parts, "os")
	}
	if p.Near {
		parts = append(parts, "near")
	}
	if p.AutoPipeline {
		parts = append(parts, "autopipeline")
	}
	if p.LoadLease > 0 {
		parts = append(parts, "loadlease")
	}
	if len(parts) == 0 {
		parts = append(parts, "plain")
	}
	return strings.Join(parts, "+")
}

// scenario is one run: processes, keys, faults, and when to stop.
type scenario struct {
	Name   string
	Keys   []string
	Procs  []procSpec
	Faults []faultSpec
	// Ops is how many operations to record at least; MinDur how long to
	// run at least. The run also lasts until every fault has been injected.
	Ops    int64
	MinDur time.Duration
	// Soak, when set, runs for this long with random faults of every kind
	// instead of Faults.
	Soak time.Duration
	// Expect names the defect of issue 9 the scenario exposes on code that
	// has it, for the failure message.
	Expect string
}

var eightKeys = []string{"a:1", "a:2", "a:3", "a:4", "b:1", "b:2", "b:3", "b:4"}

// procs returns n copies of p plus, if withOS, one more in an OS process.
func procs(n int, p procSpec, withOS bool) []procSpec {
	out := make([]procSpec, 0, n+1)
	for range n {
		out = append(out, p)
	}
	if withOS {
		q := p
		q.OS = true
		out = append(out, q)
	}
	return out
}

// worker is the configuration of process i of a scenario run as p says,
// reading the source at sourceAddr; the caller says how it reaches Redis
// (CacheURL, or Mode and Addrs).
func (p procSpec) worker(i int, seed uint64, scenario, sourceAddr string, keys []string) workerConfig {
	return workerConfig{
		Proc: i, Seed: seed, Scenario: scenario, SourceAddr: sourceAddr,
		KeyPrefix: "cons", Keys: keys,
		Near: p.Near, NearPrefixes: p.NearPrefixes, AutoPipeline: p.AutoPipeline, LoadLease: p.LoadLease,
		SocketTimeout: p.SocketTimeout, Goroutines: p.Goroutines, Mix: p.Mix,
		LoadDelayMax: p.LoadDelayMax, Think: p.Think, PinKeys: p.PinKeys,
	}
}

// start starts the process of cfg, in this binary or, if p.OS, re-executed.
func (p procSpec) start(ctx context.Context, t *testing.T, cfg workerConfig, rec *recorder) process {
	t.Helper()
	var proc process
	var err error
	if p.OS {
		proc, err = newOSProcess(ctx, cfg, rec)
	} else {
		proc, err = newInProcess(ctx, cfg, rec)
	}
	if err != nil {
		t.Fatalf("process %d (%s): %v", cfg.Proc, p, err)
	}
	return proc
}

func shortScenarios() []scenario {
	worker := procSpec{Goroutines: 2, Mix: fullMix, LoadDelayMax: 5 * time.Millisecond, SocketTimeout: time.Second}
	plain := worker
	ap := worker
	ap.AutoPipeline = true
	near := worker
	near.Near = true
	nearAP := near
	nearAP.AutoPipeline = true
	nearOS := inOS(near)

	// defects/key-equals-prefix: near-caches that list their prefixes, and
	// keys equal to those prefixes. No loads, so that only item 1 can fail.
	kp := procSpec{Near: true, NearPrefixes: []string{"a", "b"}, Goroutines: 2, Mix: noLoadMix, SocketTimeout: time.Second, Think: 2 * time.Millisecond}

	// defects/stalled-near: process 0 only reads, from its near-cache, at
	// the library's default SocketTimeout; it is stalled for 3s while the
	// others write. Each of its goroutines reads one key, so the keys it
	// holds in memory when the stall begins go on being read while the
	// others block. No loads, so that only item 4 can fail.
	reader := procSpec{Near: true, Goroutines: 16, Mix: readOnlyMix, Think: 2 * time.Millisecond, PinKeys: true}
	writer := procSpec{Goroutines: 2, Mix: mix{Get: 20, Set: 40, Delete: 20, Invalidate: 10, IOW: 10}, SocketTimeout: time.Second, Think: 20 * time.Millisecond}
	writerOS := inOS(writer)

	// defects/writeback-fence: slow loaders racing other processes'
	// invalidations, and no plain Set (which would excuse a racing
	// write-back), so that only item 3 can fail.
	fence := procSpec{Goroutines: 2, Mix: mix{Get: 10, GetOrLoad: 50, Delete: 15, Invalidate: 5, IOW: 20}, LoadDelayMax: 10 * time.Millisecond, SocketTimeout: time.Second}
	fenceAP := fence
	fenceAP.AutoPipeline = true

	// defects/late-writeback: the same with short socket timeouts and
	// repeated stalls longer than them: a write-back whose SET timed out
	// lands when the stall ends, after other processes' invalidations.
	late := fence
	late.SocketTimeout = 300 * time.Millisecond
	lateAP := late
	lateAP.AutoPipeline = true
	var lateStalls []faultSpec
	for i := range 3 {
		lateStalls = append(lateStalls, faultSpec{Kind: faultStall, AtOps: int64(200 + 300*i), Dur: 600 * time.Millisecond, Proc: -1})
	}

	// coalescing/hot-keys: many goroutines per process on two keys, so
	// that reads of one key overlap and share GETs (pkg/cache's read
	// coalescing), while other processes write and delete them: a read
	// that shared a GET sent before another process's write returned
	// would be stale.
	hot := procSpec{Goroutines: 8, Mix: mix{Get: 50, GetOrLoad: 20, Set: 15, Delete: 10, Invalidate: 5}, LoadDelayMax: 2 * time.Millisecond, SocketTimeout: time.Second}
	hotPlain := hot
	hotPlain.AutoPipeline = false
	hot.AutoPipeline = true

	// loadlease/processes: slow loads shared across processes through
	// Config.LoadLease (the holder's store fenced by its token and the
	// compare-and-set), racing other processes' invalidations, writes and
	// a stall longer than the lease: a waiter served a value the holder
	// read before an invalidation that returned before the waiter began
	// would be stale. Processes without the lease load on their own.
	lease := procSpec{Goroutines: 4, Mix: mix{Get: 10, GetOrLoad: 50, Set: 5, Delete: 15, Invalidate: 5, IOW: 15},
		LoadDelayMax: 20 * time.Millisecond, SocketTimeout: time.Second, LoadLease: 100 * time.Millisecond, AutoPipeline: true}
	leaseNear := lease
	leaseNear.Near = true
	noLease := lease
	noLease.LoadLease = 0

	return []scenario{
		{
			Name: "baseline/one-process", Keys: eightKeys, Ops: 800,
			Procs: []procSpec{{Goroutines: 4, Mix: fullMix, LoadDelayMax: 2 * time.Millisecond, SocketTimeout: time.Second}},
		},
		{
			Name: "processes/plain", Keys: eightKeys, Ops: 1500, Procs: procs(4, plain, true),
			Expect: "item 3 (a load's write-back lands after another process's invalidation)",
		},
		{
			Name: "processes/autopipeline", Keys: eightKeys, Ops: 1500, Procs: procs(4, ap, true),
			Expect: "item 3 (a load's write-back lands after another process's invalidation)",
		},
		{
			Name: "processes/near", Keys: eightKeys, Ops: 1500, Procs: procs(4, near, true),
			Expect: "item 3 (a load's write-back lands after another process's invalidation)",
		},
		{
			Name: "faults/mixed", Keys: eightKeys, Ops: 2000,
			Procs: []procSpec{plain, ap, near, nearAP, nearOS},
			Faults: []faultSpec{
				{Kind: faultKillTracking, AtOps: 200},
				{Kind: faultKillPool, AtOps: 400},
				{Kind: faultStall, AtOps: 600, Dur: 400 * time.Millisecond, Proc: -1},
				{Kind: faultRestartLost, AtOps: 800},
				{Kind: faultRestartKept, AtOps: 1100},
				{Kind: faultKillAll, AtOps: 1300},
				// Longer than SocketTimeout: calls time out while their
				// commands are held, and land when it resumes.
				{Kind: faultStall, AtOps: 1500, Dur: 1500 * time.Millisecond, Proc: -1},
			},
			Expect: "items 3 and 4 (write-backs after invalidations, timed-out write-backs landing late, stalled near-caches)",
		},
		{
			Name: "coalescing/hot-keys", Keys: []string{"a:1", "b:1"}, Ops: 3000,
			Procs:  []procSpec{hot, hot, hotPlain, hotPlain, inOS(hot)},
			Faults: []faultSpec{{Kind: faultStall, AtOps: 1500, Dur: 300 * time.Millisecond, Proc: -1}},
			Expect: "read coalescing (a read shares a GET sent before a write that returned before it began)",
		},
		{
			Name: "loadlease/processes", Keys: []string{"a:1", "a:2", "b:1"}, Ops: 2000,
			Procs:  []procSpec{lease, lease, leaseNear, noLease, inOS(lease)},
			Faults: []faultSpec{{Kind: faultStall, AtOps: 1000, Dur: 400 * time.Millisecond, Proc: -1}},
			Expect: "LoadLease (a waiter served a load that an invalidation it followed should have voided)",
		},
		{
			Name: "defects/writeback-fence", Keys: eightKeys, Ops: 1500,
			Procs:  []procSpec{fence, fence, fenceAP, fenceAP, inOS(fence)},
			Expect: "item 3 (a load's write-back lands after another process's invalidation)",
		},
		{
			Name: "defects/late-writeback", Keys: eightKeys, Ops: 1200,
			Procs: []procSpec{late, late, lateAP, lateAP}, Faults: lateStalls,
			Expect: "item 3 (a write-back that timed out lands after an invalidation; also any cross-process write-back)",
		},
		{
			Name: "defects/key-equals-prefix", Keys: []string{"a", "a:1", "a:2", "b", "b:1", "b:2"},
			Ops: 1000, MinDur: 2 * time.Second, Procs: procs(4, kp, false),
			Expect: "item 1 (a near-cache keeps key \"a\" but tracks only \"a:\")",
		},
		{
			Name: "defects/stalled-near", Keys: eightKeys, Ops: 500,
			Procs:  []procSpec{reader, writer, writer, writer, writerOS},
			Faults: []faultSpec{{Kind: faultStall, AtOps: 300, Dur: 3 * time.Second, Proc: 0}},
			Expect: "item 4 (a near-cache serves from memory while its invalidations are stalled)",
		},
	}
}

// inOS is p in an OS process of its own.
func inOS(p procSpec) procSpec {
	p.OS = true
	return p
}

// TestConsistency runs each scenario and checks its history. Each subtest
// names the defect of issue 9 it exposes on code that has it.
func TestConsistency(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d", s)
	for _, sc := range shortScenarios() {
		t.Run(sc.Name, func(t *testing.T) { runScenario(t, sc, s) })
	}
}

// TestConsistencySoak runs processes of every configuration (two of them OS
// processes) for -soak (or CACHEPLANE_SOAK), injecting a random fault of a
// random kind every 0.3-2s, and reports what it survived. It runs in rounds
// of soakRound, each with fresh servers and processes and its own seed
// (seed+round), so that its history stays small enough to check and a
// failing round reproduces alone: -soak=<soakRound> -seed=<its seed>.
func TestConsistencySoak(t *testing.T) {
	d := soakDuration(t)
	if d == 0 {
		t.Skip("set -soak=5m or CACHEPLANE_SOAK=5m to run the soak")
	}
	s := seed(t)
	t.Logf("seed %d", s)
	worker := procSpec{Goroutines: 2, Mix: fullMix, LoadDelayMax: 5 * time.Millisecond, SocketTimeout: time.Second, Think: 2 * time.Millisecond}
	var ps []procSpec
	for _, cfg := range []struct{ near, ap, os, lease bool }{
		{false, false, false, false}, {false, true, false, true}, {true, false, false, false}, {true, true, false, true},
		{false, false, true, false}, {true, true, true, true},
	} {
		p := worker
		p.Near, p.AutoPipeline, p.OS = cfg.near, cfg.ap, cfg.os
		if cfg.lease {
			p.LoadLease = 100 * time.Millisecond
		}
		ps = append(ps, p)
	}
	var total result
	began := time.Now()
	for round := 0; d-time.Since(began) >= time.Second; round++ {
		left := d - time.Since(began)
		sc := scenario{Name: "soak", Keys: eightKeys, Procs: ps, Soak: min(soakRound, left).Round(time.Second)}
		rs := s + uint64(round)
		var r result
		t.Run(fmt.Sprintf("round-%d-seed-%d", round, rs), func(t *testing.T) { r = runScenario(t, sc, rs) })
		total.add(r)
	}
	t.Log("\nsoak summary, all rounds:\n" + total.table())
}

// soakRound is the length of one round of the soak.
const soakRound = 30 * time.Second

// result is what a run did and found, for the summary tables.
type result struct {
	Runs       int
	Elapsed    time.Duration
	Ops        map[string][2]int // operation -> calls, errors
	Faults     map[string][2]int // kind -> injected, failed to inject
	Reads      int
	Promises   int
	Untrusted  int
	Violations map[string]int // summarize's categories
	Stale      int
	Corrupt    int
	MaxStale   time.Duration
	Excused    int
	MaxExcused time.Duration
}

func (r *result) add(o result) {
	r.Runs += o.Runs
	r.Elapsed += o.Elapsed
	for _, m := range []struct{ dst, src *map[string][2]int }{{&r.Ops, &o.Ops}, {&r.Faults, &o.Faults}} {
		if *m.dst == nil {
			*m.dst = map[string][2]int{}
		}
		for k, v := range *m.src {
			cur := (*m.dst)[k]
			(*m.dst)[k] = [2]int{cur[0] + v[0], cur[1] + v[1]}
		}
	}
	if r.Violations == nil {
		r.Violations = map[string]int{}
	}
	for k, n := range o.Violations {
		r.Violations[k] += n
	}
	r.Reads += o.Reads
	r.Promises += o.Promises
	r.Untrusted += o.Untrusted
	r.Stale += o.Stale
	r.Corrupt += o.Corrupt
	r.MaxStale = max(r.MaxStale, o.MaxStale)
	r.Excused += o.Excused
	r.MaxExcused = max(r.MaxExcused, o.MaxExcused)
}

// table prints r: operations by kind and outcome, faults, what the checker
// looked at and what it found.
func (r *result) table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcalls\terrors\t")
	total := 0
	for _, name := range sortedKeys(r.Ops) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", name, r.Ops[name][0], r.Ops[name][1])
		if name != opLoad {
			total += r.Ops[name][0]
		}
	}
	faults := 0
	for _, name := range sortedKeys(r.Faults) {
		fmt.Fprintf(tw, "fault %s\t%d\t%d\t\n", name, r.Faults[name][0], r.Faults[name][1])
		faults += r.Faults[name][0]
	}
	tw.Flush()
	fmt.Fprintf(&b, "%d runs, %v: %d operations, %d faults; %d reads checked against %d promises (%d InvalidateOnWrite untrusted: overlapped a fault or an error)\n",
		r.Runs, r.Elapsed.Round(time.Millisecond), total, faults, r.Reads, r.Promises, r.Untrusted)
	fmt.Fprintf(&b, "within the bounds: %d reads older than another process's promise (longest %v)\n", r.Excused, r.MaxExcused.Round(time.Microsecond))
	fmt.Fprintf(&b, "violations: %d stale (longest %v), %d corrupt", r.Stale, r.MaxStale.Round(time.Millisecond), r.Corrupt)
	for _, k := range sortedKeys(r.Violations) {
		fmt.Fprintf(&b, "\n  %6d  %s", r.Violations[k], k)
	}
	return b.String()
}

// runScenario runs sc with its own redis-servers (the cache's, which the
// faults hit, and the source of truth's, which they never touch) and checks
// the history.
func runScenario(t *testing.T, sc scenario, seed uint64) result {
	ctx := context.Background()
	srv, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	db, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)

	rec := &recorder{}
	var proxies []*redistest.Proxy
	var running []process
	defer func() {
		for _, p := range running {
			_ = p.stop()
		}
	}()
	bounds := map[int]time.Duration{}
	for i, ps := range sc.Procs {
		proxy, err := redistest.StartProxy(srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(proxy.Close)
		proxies = append(proxies, proxy)
		cfg := ps.worker(i, seed, sc.Name, db.Addr(), sc.Keys)
		cfg.CacheURL = proxy.URL()
		if ps.Near {
			bounds[i] = *nearBound
		}
		running = append(running, ps.start(ctx, t, cfg, rec))
	}

	inj := newInjector(srv, proxies, rec, rand.New(rand.NewPCG(seed, streamID(sc.Name, -1, 0))))
	defer inj.close()
	began := time.Now()
	for _, p := range running {
		p.start()
	}
	fctx, stopFaults := context.WithCancel(ctx)
	defer stopFaults()
	faultsDone := make(chan error, 1)
	go func() {
		if sc.Soak > 0 {
			faultsDone <- inj.runRandom(fctx, allFaults, 1500*time.Millisecond)
			return
		}
		faultsDone <- inj.runSchedule(fctx, sc.Faults)
	}()

	var faultErr error
	faultsOver := false
	limit := time.After(2 * time.Minute)
	if sc.Soak > 0 {
		limit = time.After(sc.Soak)
	}
wait:
	for {
		select {
		case faultErr = <-faultsDone:
			faultsOver = true
			faultsDone = nil
		case <-limit:
			if sc.Soak == 0 {
				t.Errorf("run not over after 2m: %d operations, faults done: %v", rec.ops.Load(), faultsOver)
			}
			break wait
		case <-time.After(5 * time.Millisecond):
		}
		if sc.Soak == 0 && faultsOver && rec.ops.Load() >= sc.Ops && time.Since(began) >= sc.MinDur {
			break wait
		}
	}
	stopFaults()
	if faultsDone != nil {
		faultErr = <-faultsDone
	}
	elapsed := time.Since(began)
	var stopErrs []string
	for _, p := range running {
		if err := p.stop(); err != nil {
			stopErrs = append(stopErrs, err.Error())
		}
	}
	running = nil
	if faultErr != nil {
		t.Errorf("injecting faults: %v", faultErr)
	}
	if len(stopErrs) > 0 {
		t.Errorf("processes: %s", strings.Join(stopErrs, "\n"))
	}

	history := rec.history()
	sort.SliceStable(history, func(i, j int) bool { return history[i].Start < history[j].Start })
	vs, st := check(history, checkConfig{Bound: bounds, GenBound: *remoteBound, Grace: time.Second, DeleteDoesNotFence: !*deleteFences})
	var specs []string
	for _, p := range sc.Procs {
		specs = append(specs, p.String())
	}
	res := tally(history, vs, st, elapsed)
	t.Logf("\n%s: %d processes [%s]\n%s", sc.Name, len(sc.Procs), strings.Join(specs, ", "), res.table())
	if len(vs) > 0 {
		var b strings.Builder
		cmd := reproduce(t.Name(), seed)
		if sc.Soak > 0 {
			cmd = fmt.Sprintf("go test -race -v -run '^TestConsistencySoak$' ./test/consistency/ -args -seed=%d -soak=%v", seed, sc.Soak)
		}
		fmt.Fprintf(&b, "%d consistency violations (seed %d; reproduce: %s)", len(vs), seed, cmd)
		if sc.Expect != "" {
			fmt.Fprintf(&b, "\nthis scenario exposes %s", sc.Expect)
		}
		// The first violation of each category, with the history of its
		// key that shows it.
		seen := map[string]bool{}
		for i, c := range categorize(history, vs) {
			if seen[c] {
				continue
			}
			seen[c] = true
			fmt.Fprintf(&b, "\n\n%s (%d), the first:\n  %s\nthe history of %q behind it:\n%s",
				c, res.Violations[c], vs[i], vs[i].Read.Key, explain(history, vs[i], 30))
		}
		t.Error(b.String())
	}
	return res
}

// tally counts a run's history and findings.
func tally(history []Event, vs []violation, st checkStats, elapsed time.Duration) result {
	r := result{
		Runs: 1, Elapsed: elapsed,
		Ops: map[string][2]int{}, Faults: map[string][2]int{}, Violations: map[string]int{},
		Reads: st.Reads, Promises: st.Promises, Untrusted: st.Untrusted, MaxStale: st.MaxStaleness,
		Excused: st.Excused, MaxExcused: st.MaxExcused,
	}
	for _, e := range history {
		m, name := r.Ops, e.Op
		if e.Op == opFault {
			m, name = r.Faults, e.Fault
		}
		c := m[name]
		c[0]++
		if e.Err != "" {
			c[1]++
		}
		m[name] = c
	}
	for _, c := range categorize(history, vs) {
		r.Violations[c]++
	}
	for _, v := range vs {
		if v.Kind == "stale" {
			r.Stale++
		} else {
			r.Corrupt++
		}
	}
	return r
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
