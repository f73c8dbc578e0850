package consistency_test

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// The checker. A history is a set of calls, each with the interval of real
// time it took. The source of truth gives every write of a key a version
// higher than all before it, so "newer" is a number.
//
// A write or invalidation X of key k is a promise once it has returned
// without error: every read of k that begins after X completed returns at
// least floor(X), the version k had in the source when X's cache call began
// (for Set, the version it wrote). A read R of k that returned v <
// floor(X), X having completed before R began, is a violation unless the
// history shows a way for v to reach the cache legitimately after X:
//
//   - a Set of v that had not completed when X's cache call began (it may
//     land after X), or one that failed (a timed-out write may still land);
//   - X is a Set and some loader read v: a GetOrLoad write-back racing a
//     plain Set is the ordinary cache-aside race, which pkg/cache does not
//     fence. Delete, Invalidate and InvalidateOnWrite do fence: a write-back
//     whose load began before them never becomes visible after them
//     (issue 9, item 3), so loaders excuse nothing against them;
//   - R is a GetOrLoad that ran no loader of its own, X ran in another
//     process, and a GetOrLoad of R's process that loaded v was in flight
//     when R began: R may have joined that load (singleflight), which no
//     process can know another's invalidation voids without a round trip.
//     Within one process pkg/cache promises that a caller arriving after an
//     invalidation does not join an older load, so there it excuses nothing.
//
// Reads by a process other than X's get a staleness bound: Bound, the time a
// near-cache may take to hear of X; and, if X is a generation bump
// (InvalidateOnWrite, Invalidate of a whole prefix), GenBound
// (-remote-bound), the time another process may take to hear of the bump
// when it reads Redis (pkg/cache's events lease: an invalidation reaches
// other processes over pub/sub, within Config.EventsLease even when that
// channel stalls). Set, Delete and Invalidate of one key change the key in
// Redis itself, so they get no bound from Redis reads. Reads by X's own
// process get none (read-your-writes). InvalidateOnWrite
// does not return its invalidation's errors (it fails open), so one that
// overlapped a fault, or an error of its process, promises nothing.
//
// Apart from staleness, a read is corrupt if it returned a version its key
// never had, a version written only after the read ended, another key's
// value, or a value that did not decode.

// checkConfig parameterises the checker.
type checkConfig struct {
	// Bound is the staleness allowed to reads of each process for writes
	// and invalidations of other processes (missing: 0).
	Bound map[int]time.Duration
	// GenBound is the staleness allowed to every process's reads for
	// generation bumps of other processes (InvalidateOnWrite, Invalidate of
	// a whole prefix).
	GenBound time.Duration
	// Grace extends each fault: an InvalidateOnWrite that overlapped a fault
	// or its grace is not trusted.
	Grace time.Duration
	// DeleteDoesNotFence treats Delete like Set: a GetOrLoad write-back
	// racing it is excused.
	DeleteDoesNotFence bool
}

// violation is one read the checker refutes.
type violation struct {
	Kind string // "stale" or "corrupt"
	Why  string
	Read Event
	// By is the write or invalidation the read should have seen, Floor the
	// version it promised and Staleness how long before the read began it
	// had completed.
	By        *Event
	Floor     int64
	Staleness time.Duration
}

func (v violation) String() string {
	r := v.Read
	s := fmt.Sprintf("%s: process %d %s %q returned v%d (call %s)", v.Kind, r.Proc, r.Op, r.Key, r.Ver, span(r.Start, r.End))
	if v.By != nil {
		b := v.By
		s += fmt.Sprintf(", but process %d's %s", b.Proc, b.Op)
		if b.Pattern != "" {
			s += fmt.Sprintf(" %q", b.Pattern)
		} else {
			s += fmt.Sprintf(" %q", b.Key)
		}
		s += fmt.Sprintf(" (call %s) promised >= v%d and completed %v before the read began", span(b.Start, b.End), v.Floor, v.Staleness.Round(time.Microsecond))
	}
	if v.Why != "" {
		s += ": " + v.Why
	}
	return s
}

// span prints a call's interval relative to the first event checked.
var spanBase int64

func span(start, end int64) string {
	return fmt.Sprintf("[%.6fs, %.6fs]", float64(start-spanBase)/1e9, float64(end-spanBase)/1e9)
}

// checkStats count what a check looked at.
type checkStats struct {
	Reads        int // reads whose version was checked
	Promises     int // writes and invalidations that made a promise
	Untrusted    int // InvalidateOnWrite calls that overlapped a fault or an error
	MaxStaleness time.Duration
	// Excused counts the reads that returned a version older than a promise
	// of another process but within the bound; MaxExcused is the longest
	// such staleness: how close to the bounds the runs came.
	Excused    int
	MaxExcused time.Duration
}

// promise is one key's share of a write or invalidation.
type promise struct {
	end, cacheStart int64
	floor           int64
	fence           bool // Delete/Invalidate/InvalidateOnWrite: fences loads
	gen             bool // a generation bump: InvalidateOnWrite, Invalidate "p:*"
	proc            int
	ev              *Event
}

type setInfo struct {
	maxEnd int64 // latest end of a successful Set of the version
	failed bool  // some Set of the version failed: it may land any time
}

func check(history []Event, cc checkConfig) ([]violation, checkStats) {
	var st checkStats
	if len(history) > 0 {
		spanBase = history[0].Start
		for _, e := range history {
			spanBase = min(spanBase, e.Start)
		}
	}
	committed := map[string]map[int64]int64{} // key -> version -> start of its source write
	sets := map[string]map[int64]*setInfo{}
	loaded := map[string]map[int64]bool{}
	type pk struct {
		proc int
		key  string
	}
	ownLoads := map[pk][]*Event{}
	var faults []*Event
	errs := map[int][]*Event{}
	for i := range history {
		e := &history[i]
		if e.Wrote != 0 {
			if committed[e.Key] == nil {
				committed[e.Key] = map[int64]int64{}
			}
			committed[e.Key][e.Wrote] = e.SrcStart
		}
		switch {
		case e.Op == opSet && e.Wrote != 0:
			if sets[e.Key] == nil {
				sets[e.Key] = map[int64]*setInfo{}
			}
			si := sets[e.Key][e.Wrote]
			if si == nil {
				si = &setInfo{}
				sets[e.Key][e.Wrote] = si
			}
			if e.Err != "" {
				si.failed = true
			} else {
				si.maxEnd = max(si.maxEnd, e.End)
			}
		case e.Op == opLoad && e.Err == "":
			if loaded[e.Key] == nil {
				loaded[e.Key] = map[int64]bool{}
			}
			loaded[e.Key][e.Ver] = true
		case e.Op == opGetOrLoad && e.OwnLoad && e.Err == "":
			ownLoads[pk{e.Proc, e.Key}] = append(ownLoads[pk{e.Proc, e.Key}], e)
		case e.Op == opFault:
			faults = append(faults, e)
		}
		if e.Err != "" && e.isOp() {
			errs[e.Proc] = append(errs[e.Proc], e)
		}
	}

	trusted := func(e *Event) bool {
		if e.Op != opIOW {
			return true // the others return their errors
		}
		for _, f := range faults {
			if (f.Proc == -1 || f.Proc == e.Proc) && f.Start <= e.End && e.Start <= f.End+int64(cc.Grace) {
				return false
			}
		}
		for _, x := range errs[e.Proc] {
			if x.Start <= e.End && e.Start <= x.End {
				return false
			}
		}
		return true
	}
	promises := map[string][]promise{}
	for i := range history {
		e := &history[i]
		if e.Floors == nil || e.Err != "" {
			continue
		}
		switch e.Op {
		case opSet, opDelete, opInvalidate, opIOW:
		default:
			continue
		}
		if !trusted(e) {
			st.Untrusted++
			continue
		}
		st.Promises++
		for k, f := range e.Floors {
			promises[k] = append(promises[k], promise{
				end: e.End, cacheStart: e.CacheStart, floor: f,
				fence: e.Op != opSet && (e.Op != opDelete || !cc.DeleteDoesNotFence),
				gen:   e.Op == opIOW || (e.Op == opInvalidate && strings.HasSuffix(e.Pattern, ":*")),
				proc:  e.Proc, ev: e,
			})
		}
	}
	for _, ps := range promises {
		sort.Slice(ps, func(i, j int) bool { return ps[i].end < ps[j].end })
	}

	var out []violation
	for i := range history {
		r := &history[i]
		isRead := (r.Op == opGet && (r.Found || r.Corrupt != "")) || r.Op == opGetOrLoad
		if !isRead || (r.Err != "" && r.Corrupt == "") {
			continue
		}
		if r.Corrupt != "" {
			out = append(out, violation{Kind: "corrupt", Why: r.Corrupt, Read: *r})
			continue
		}
		st.Reads++
		v := r.Ver
		commitStart := int64(math.MinInt64)
		if v != 0 {
			cs, ok := committed[r.Key][v]
			switch {
			case !ok:
				out = append(out, violation{Kind: "corrupt", Why: "no write of this key committed this version", Read: *r})
				continue
			case cs > r.End:
				out = append(out, violation{Kind: "corrupt", Why: "the version was written only after the read ended", Read: *r})
				continue
			}
			commitStart = cs
		}
		setEnd := int64(math.MinInt64)
		if si := sets[r.Key][v]; si != nil {
			setEnd = si.maxEnd
			if si.failed {
				setEnd = math.MaxInt64
			}
		}
		loadedV := loaded[r.Key][v]
		joinable := false
		if r.Op == opGetOrLoad && !r.OwnLoad {
			for _, l := range ownLoads[pk{r.Proc, r.Key}] {
				if l.Ver == v && l.Start < r.Start && l.End > r.Start {
					joinable = true
					break
				}
			}
		}
		excused := time.Duration(-1) // the longest staleness the bounds excused
		ps := promises[r.Key]
		// A promise above v completed after v was committed (a key's
		// versions rise in commit order), so earlier ones need no look.
		lo := sort.Search(len(ps), func(i int) bool { return ps[i].end > commitStart })
		for _, p := range ps[lo:] {
			if p.end >= r.Start {
				break
			}
			if p.floor <= v || p.cacheStart < setEnd || (!p.fence && loadedV) {
				continue
			}
			bound := time.Duration(0)
			if p.proc != r.Proc {
				if joinable {
					continue
				}
				bound = cc.Bound[r.Proc]
				if p.gen {
					bound = max(bound, cc.GenBound)
				}
			}
			stale := time.Duration(r.Start - p.end)
			if stale <= bound {
				excused = max(excused, stale)
				continue
			}
			out = append(out, violation{Kind: "stale", Read: *r, By: p.ev, Floor: p.floor, Staleness: stale})
			st.MaxStaleness = max(st.MaxStaleness, stale)
			excused = -1
			break
		}
		if excused >= 0 {
			st.Excused++
			st.MaxExcused = max(st.MaxExcused, excused)
		}
	}
	return out, st
}

// explain lists the calls on v's key from the write of the version it read
// to the end of the read: the evidence, for a failure message.
func explain(history []Event, v violation, limit int) string {
	r := v.Read
	from := int64(math.MinInt64)
	for _, e := range history {
		if e.Key == r.Key && e.Wrote == r.Ver && r.Ver != 0 {
			from = e.Start
		}
	}
	var lines []string
	for _, e := range history {
		touches := e.Key == r.Key
		if _, ok := e.Floors[r.Key]; ok {
			touches = true
		}
		if e.Op == opFault {
			touches = true
		}
		if !touches || e.End < from || e.Start > r.End {
			continue
		}
		l := fmt.Sprintf("    %s p%d/g%d %-10s %-6q", span(e.Start, e.End), e.Proc, e.Gor, e.Op, e.Key)
		switch {
		case e.Op == opFault:
			l += " " + e.Fault
		case e.Wrote != 0:
			l += fmt.Sprintf(" wrote v%d", e.Wrote)
		case e.Op == opGet && !e.Found:
			l += " miss"
		case e.Op == opGet || e.Op == opGetOrLoad || e.Op == opLoad:
			l += fmt.Sprintf(" -> v%d", e.Ver)
		}
		if e.OwnLoad {
			l += " (own load)"
		}
		if f, ok := e.Floors[r.Key]; ok {
			l += fmt.Sprintf(" floor v%d", f)
			if e.CacheStart != 0 {
				l += fmt.Sprintf(", cache call from %.6fs", float64(e.CacheStart-spanBase)/1e9)
			}
		}
		if e.Pattern != "" {
			l += fmt.Sprintf(" pattern %q", e.Pattern)
		}
		if e.Err != "" {
			l += " ERR " + e.Err
		}
		lines = append(lines, l)
	}
	if len(lines) > limit {
		lines = append(lines[:limit/2], append([]string{fmt.Sprintf("    ... %d more ...", len(lines)-limit)}, lines[len(lines)-limit/2:]...)...)
	}
	return strings.Join(lines, "\n")
}

// categorize names each violation's category: its kind, the reading
// operation, the promise it broke, and where the stale version can have come
// from (a loader of the invalidating process, of another one, or none: then
// a cache kept it).
func categorize(history []Event, vs []violation) []string {
	loaders := map[string]map[int]bool{} // key/version -> processes whose loaders read it
	for _, e := range history {
		if e.Op == opLoad && e.Err == "" {
			kv := fmt.Sprintf("%s/%d", e.Key, e.Ver)
			if loaders[kv] == nil {
				loaders[kv] = map[int]bool{}
			}
			loaders[kv][e.Proc] = true
		}
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		k := v.Kind + " " + v.Read.Op
		if v.By != nil {
			k += " after " + v.By.Op
			src := loaders[fmt.Sprintf("%s/%d", v.Read.Key, v.Read.Ver)]
			switch {
			case len(src) == 0:
				k += ", version not loaded by anyone (kept by a cache)"
			case len(src) == 1 && src[v.By.Proc]:
				k += ", version loaded by the invalidating process only"
			default:
				k += ", version loaded by another process than the invalidating one"
			}
		} else {
			k += ": " + v.Why
		}
		out[i] = k
	}
	return out
}
