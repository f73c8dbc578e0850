// Package purge deletes the keys matching a glob with SCAN and UNLINK: the engine
// behind pkg/cache's Invalidate and the controller's invalidation runs.
//
// Each round trip to a node carries the UNLINK of the previous page together with
// the SCAN of the next one, so deleting costs no extra round trips. Progress is
// reported with a cursor from which a later call can resume: every key a SCAN
// from that cursor would not return again is already deleted.
//
// The SCAN COUNT adapts to what Redis can take (unless Options.Count fixes it):
// Redis runs a pipelined round trip's commands back to back while every other
// client waits, so the engine aims each round trip at a latency budget of the
// server's own time. It grows COUNT while a round trip costs the server well
// within the budget (sparse matches: fewer round trips, so a faster purge) and
// halves it as soon as one overruns (dense matches, long keys, a server short
// of CPU: the other clients' latency comes first).
//
// The server's time comes from INFO commandstats, pipelined after each SCAN:
// the microseconds Redis spent in SCAN and UNLINK (EVAL with Options.Keep)
// since the previous page. The client's round trip would also count the
// network and the client's own wait for a core; where the client shares few
// cores with the servers it purges (every master of a cluster at once), that
// wait would read as a busy server and shrink the pages for nothing. The
// round trip steers instead when the server refuses INFO (an ACL without it;
// the purge goes on) and for any page whose call counts show that other
// clients ran SCAN or UNLINK meanwhile, whose time would be charged to the
// purge. INFO costs the server some tens of microseconds (it lists every
// command run since the statistics were reset), a few percent of a page at
// the budget (BenchmarkInfoCost).
//
// On Redis Cluster every master is purged at once (Each), from its own cursor.
// A slot migrating meanwhile moves keys between two masters' keyspaces: the
// UNLINKs a node answers with MOVED, ASK or TRYAGAIN are redone through the
// cluster client, which follows the redirection. A key moved from a part of
// the source's table its SCAN had yet to reach into a part of the target's it
// had already passed is seen by neither, as SCAN's guarantee is per node; a
// whole-prefix invalidation does not depend on it (the generation bump hides
// such a key), a narrower pattern can leave it until its TTL.
//
// The package is public only because the operator shares it with pkg/cache and,
// living in another module, cannot import the library module's internal
// packages. Applications should use Cache.Invalidate instead.
package purge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// DefaultCount is the SCAN COUNT hint a purge starts from: large enough that a
// million-key purge takes few round trips, small enough that one SCAN stays
// well under a millisecond.
const DefaultCount = 1000

// DefaultLatencyBudget is the server time per round trip the adaptive COUNT
// aims to stay under. Redis serves nobody else while it runs one round trip's
// UNLINK and SCAN, so this bounds what the purge adds to other clients'
// latency.
const DefaultLatencyBudget = time.Millisecond

// Bounds of the adaptive COUNT: below minCount round-trip overhead dominates;
// above maxCount a single SCAN of a sparse key space would visit enough
// buckets to overrun any sensible budget on its own.
const (
	minCount = 100
	maxCount = 64 * DefaultCount
)

// Options tune a purge.
type Options struct {
	// Count fixes the SCAN COUNT hint; 0 means adaptive, starting from
	// DefaultCount and steered by LatencyBudget.
	Count int64
	// LatencyBudget is the server time per round trip the adaptive COUNT
	// aims at (the round-trip time where the server's cannot be read); 0
	// means DefaultLatencyBudget. Ignored when Count is set.
	LatencyBudget time.Duration
	// MaxKeysPerSecond limits UNLINKs; 0 means unlimited. It bounds a whole
	// purge: All and Each build one limiter (NewLimiter) that every master of
	// a cluster draws from, so three masters together delete no faster than
	// one would. Ignored when Limiter is set.
	MaxKeysPerSecond int64
	// Limiter, when set, paces the UNLINKs instead of MaxKeysPerSecond. One
	// limiter shared by several purges (or by every master of one, which is
	// what All and Each do) bounds them together.
	Limiter Limiter
	// Cluster groups each UNLINK by hash slot, as Redis Cluster requires.
	Cluster bool
	// Keep, when set, leaves pkg/cache's tombstones (keyspace.TombstoneLua)
	// and its entries of generation *Keep or later (0: none) where they are:
	// each page is deleted by keyspace.UnlinkStaleLua instead of UNLINK, and
	// only what it deleted is counted. A tombstone fences the write-backs of
	// loads begun before a Delete, and an entry written after the bump is
	// current; removing either would let a write-back whose miss saw the key
	// missing land over them (its compare-and-set would find the key missing
	// again). Tombstones expire on their own within seconds.
	Keep *int64

	// redirect is the cluster client Each purges through: it redoes the
	// UNLINKs a master answers with MOVED or ASK (see checkUnlinks).
	redirect redis.Cmdable
}

// Limiter paces deletes: WaitN blocks until n more keys may be deleted, and
// no call asks for more than Burst. *rate.Limiter satisfies it; NewLimiter
// builds the one MaxKeysPerSecond stands for.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
	Burst() int
}

// NewLimiter returns the limiter of perSecond keys a second that
// MaxKeysPerSecond stands for, or nil (unlimited) when perSecond <= 0. It
// starts empty, so the first second is limited too, and spends its allowance
// in about ten slices a second, so deletes are spread out rather than bursting
// once a second.
func NewLimiter(perSecond int64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	burst := int(max(1, perSecond/10))
	l := rate.NewLimiter(rate.Limit(perSecond), burst)
	// rate.Limiter starts full; begin empty.
	l.AllowN(time.Now(), burst)
	return l
}

// limiter is the Limiter opt asks for, or nil for none.
func (opt Options) limiter() Limiter {
	if opt.Limiter != nil {
		return opt.Limiter
	}
	if l := NewLimiter(opt.MaxKeysPerSecond); l != nil {
		return l
	}
	return nil // not a typed nil *rate.Limiter in the interface
}

// Progress reports a node's safe resume cursor and the keys it has deleted so
// far in this call. Returning an error stops the purge with that error.
type Progress func(cursor uint64, deleted int64) error

// Node purges pattern on one node (a standalone server or one cluster master),
// starting from cursor (0 = from the beginning), until the SCAN completes.
func Node(ctx context.Context, c redis.Cmdable, pattern string, cursor uint64, opt Options, progress Progress) (int64, error) {
	count, adaptive := opt.Count, opt.Count <= 0
	if adaptive {
		count = DefaultCount
	}
	budget := opt.LatencyBudget
	if budget <= 0 {
		budget = DefaultLatencyBudget
	}
	limiter := opt.limiter()
	var clock *serverClock
	if adaptive {
		clock = newServerClock(opt, limiter != nil)
	}

	var (
		deleted int64
		pending []string // keys of the last page, not yet unlinked
		done    bool     // the SCAN has returned cursor 0
	)
	for {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		if done && len(pending) == 0 {
			return deleted, nil
		}
		if limiter != nil && len(pending) > 0 {
			n, err := unlinkLimited(ctx, c, pending, opt, limiter)
			deleted += n
			if err != nil {
				return deleted, err
			}
			pending = nil
			if done {
				return deleted, nil
			}
			if err := report(progress, cursor, deleted); err != nil {
				return deleted, err
			}
		}

		// One round trip: UNLINK the previous page, SCAN the next, and (while
		// COUNT adapts) read what the server spent on them.
		pipe := c.Pipeline()
		var before, after *redis.StringCmd
		if clock != nil && !done && !clock.off && !clock.have {
			before = pipe.Info(ctx, "commandstats") // the first sample's baseline
		}
		unlinks, groups := queueUnlinks(ctx, pipe, pending, opt)
		var scan *redis.ScanCmd
		if !done {
			scan = pipe.Scan(ctx, cursor, pattern, count)
			if clock != nil && clock.wantInfo() {
				after = pipe.Info(ctx, "commandstats")
			}
		}
		start := time.Now()
		if _, err := pipe.Exec(ctx); err != nil {
			// A refused INFO (an ACL without it) only turns the server's
			// clock off, and a redirected UNLINK is redone below; any other
			// failure fails the purge.
			redirected := opt.redirect != nil && isRedirect(err)
			if !redirected && (before == nil && after == nil || !infoOnly(err, before, after)) {
				return deleted, fmt.Errorf("purge %q: %w", pattern, err)
			}
			if before != nil && before.Err() != nil || after != nil && after.Err() != nil {
				clock.off, before, after = true, nil, nil
			}
		}
		rtt := time.Since(start)
		if scan != nil && scan.Err() != nil {
			return deleted, fmt.Errorf("purge %q: SCAN: %w", pattern, scan.Err())
		}
		if scan != nil && adaptive {
			count = clock.steer(count, rtt, budget, before, after, len(unlinks))
		}
		if err := checkUnlinks(ctx, unlinks, groups, opt); err != nil {
			return deleted, fmt.Errorf("purge %q: UNLINK: %w", pattern, err)
		}
		deleted += countDeleted(unlinks, pending, opt)
		if scan == nil {
			return deleted, nil
		}
		keys, next := scan.Val()
		// Resume from the cursor this page was scanned from while its keys are
		// pending; past it once nothing is pending.
		resume := next
		if len(keys) > 0 {
			resume = cursor
		}
		pending, cursor, done = keys, next, next == 0
		if !done || len(keys) > 0 {
			if err := report(progress, resume, deleted); err != nil {
				return deleted, err
			}
		}
	}
}

// nextCount steers COUNT by the last round trip's cost (the server's time,
// or the client's round trip): multiplicative decrease on
// an overrun, so a loaded server is relieved at once; a gentler increase
// while well within budget, with a dead band between, so COUNT settles
// instead of oscillating around the budget.
func nextCount(count int64, rtt, budget time.Duration) int64 {
	switch {
	case rtt > budget:
		return max(count/2, minCount)
	case rtt < budget/2:
		return min(count+count/2, maxCount)
	}
	return count
}

func report(p Progress, cursor uint64, deleted int64) error {
	if p == nil {
		return nil
	}
	return p(cursor, deleted)
}

func queueUnlinks(ctx context.Context, pipe redis.Pipeliner, keys []string, opt Options) ([]redis.Cmder, [][]string) {
	if len(keys) == 0 {
		return nil, nil
	}
	groups := [][]string{keys}
	if opt.Cluster {
		groups = groups[:0]
		for _, group := range BySlot(keys) {
			groups = append(groups, group)
		}
	}
	cmds := make([]redis.Cmder, len(groups))
	for i, group := range groups {
		cmds[i] = unlinkCmd(ctx, pipe, group, opt)
	}
	return cmds, groups
}

// unlinkCmd deletes keys (of one slot on a cluster) on c: UNLINK, or the
// script that keeps what opt.Keep protects.
func unlinkCmd(ctx context.Context, c redis.Cmdable, keys []string, opt Options) redis.Cmder {
	if opt.Keep != nil {
		// EVAL, not EVALSHA: a NOSCRIPT inside a pipeline is not retried.
		return c.Eval(ctx, keyspace.UnlinkStaleLua, keys, *opt.Keep)
	}
	return c.Unlink(ctx, keys...)
}

// checkUnlinks returns the first failure among cmds, after redoing, key by
// key through opt.redirect (the cluster client, which follows redirections),
// each group a master answered with MOVED, ASK or TRYAGAIN: a slot migrating
// while the purge runs holds some of the keys a master's SCAN listed on
// another node by the time they are unlinked, and a multi-key command on a
// slot split between two nodes is refused. A redone group's command in cmds
// is replaced by one holding what the group's keys answered together.
func checkUnlinks(ctx context.Context, cmds []redis.Cmder, groups [][]string, opt Options) error {
	for i, u := range cmds {
		err := u.Err()
		if err == nil {
			continue
		}
		if opt.redirect == nil || !isRedirect(err) {
			return err
		}
		pipe := opt.redirect.Pipeline()
		redone := make([]redis.Cmder, len(groups[i]))
		for j, key := range groups[i] {
			redone[j] = unlinkCmd(ctx, pipe, []string{key}, opt)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		sum := redis.NewCmd(ctx)
		sum.SetVal(countDeleted(redone, groups[i], opt))
		cmds[i] = sum
	}
	return nil
}

// isRedirect reports whether err is a cluster node's MOVED, ASK or TRYAGAIN
// answer: the key, or some of the keys, are served elsewhere for now.
func isRedirect(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || strings.HasPrefix(err.Error(), "TRYAGAIN")
}

// countDeleted is what a page's deletes deleted: every key of it for UNLINK
// (as before: a key gone meanwhile is counted too), what the script reports
// with Keep.
func countDeleted(cmds []redis.Cmder, keys []string, opt Options) int64 {
	if opt.Keep == nil {
		return int64(len(keys))
	}
	var n int64
	for _, c := range cmds {
		if cmd, ok := c.(*redis.Cmd); ok {
			v, _ := cmd.Int64()
			n += v
		}
	}
	return n
}

func unlinkLimited(ctx context.Context, c redis.Cmdable, keys []string, opt Options, l Limiter) (int64, error) {
	var deleted int64
	for len(keys) > 0 {
		n := min(len(keys), max(1, l.Burst()))
		if err := l.WaitN(ctx, n); err != nil {
			return deleted, err
		}
		pipe := c.Pipeline()
		cmds, groups := queueUnlinks(ctx, pipe, keys[:n], opt)
		if _, err := pipe.Exec(ctx); err != nil && (opt.redirect == nil || !isRedirect(err)) {
			return deleted, fmt.Errorf("UNLINK: %w", err)
		}
		if err := checkUnlinks(ctx, cmds, groups, opt); err != nil {
			return deleted, fmt.Errorf("UNLINK: %w", err)
		}
		deleted += countDeleted(cmds, keys[:n], opt)
		keys = keys[n:]
	}
	return deleted, nil
}

// All purges pattern on every node that holds data: each master of a cluster
// client, concurrently, or the one server of any other client, all from the
// start and under one rate limit. It returns the keys deleted in all.
func All(ctx context.Context, c redis.UniversalClient, pattern string, opt Options) (int64, error) {
	return Each(ctx, c, pattern, nil, opt, nil)
}

// Position is one node's place in a purge of every node (Each).
type Position struct {
	// Node is the node's address as the cluster client knows the master
	// (host:port); "" for the one server of a client that is not a cluster
	// client.
	Node string
	// Cursor is the SCAN cursor to resume the node's purge from.
	Cursor uint64
	// Done means the node's purge completed: its SCAN returned cursor 0 and
	// the last page is deleted.
	Done bool
}

// Start returns where a node's purge begins: a saved cursor, or done to skip
// the node. An error counts as that node's failure.
type Start func(ctx context.Context, node string, c redis.Cmdable) (cursor uint64, done bool, err error)

// NodeProgress reports a node's new position and the keys it deleted since
// its previous report. Returning an error stops that node's purge (and only
// that node's: return it for every node to stop them all).
type NodeProgress func(pos Position, deleted int64) error

// Each purges pattern on every node that holds data, the way All does, each
// node from the position start gives (nil: every node from 0), and reports
// every node's progress, so a caller can checkpoint per node and resume.
//
// A cluster's masters purge concurrently, one goroutine each, sharing one
// rate limit: opt.Limiter, or one built from opt.MaxKeysPerSecond for the
// whole call. progress calls never overlap (Each serializes them), and one
// node's positions arrive in the order its purge made them, ending with Done
// once it completes: the latest position seen for each node is always a safe
// place to resume it from.
//
// A node that fails does not stop the others: Each returns once every node
// has stopped, with the keys deleted in all and an error if any node failed.
// A node's own failure (Redis, the context) is returned in preference to an
// error that progress returned, which is the caller's own request to stop.
func Each(ctx context.Context, c redis.UniversalClient, pattern string, start Start, opt Options, progress NodeProgress) (int64, error) {
	opt.Limiter = opt.limiter() // built once: every master draws from it
	var (
		mu      sync.Mutex // serializes progress; guards the rest
		total   int64
		failed  error // the first node failure
		stopped error // the first error progress returned
	)
	run := func(ctx context.Context, node string, nc redis.Cmdable, opt Options) {
		var from uint64
		var err error
		if start != nil {
			var done bool
			from, done, err = start(ctx, node, nc)
			if err == nil && done {
				return
			}
		}
		var reported int64
		report := func(pos Position, deleted int64) error {
			mu.Lock()
			defer mu.Unlock()
			delta := deleted - reported
			reported = deleted
			total += delta
			if progress == nil {
				return nil
			}
			if err := progress(pos, delta); err != nil {
				return stopError{err}
			}
			return nil
		}
		var n int64
		if err == nil {
			n, err = Node(ctx, nc, pattern, from, opt, func(cursor uint64, deleted int64) error {
				return report(Position{Node: node, Cursor: cursor}, deleted)
			})
		}
		if err == nil {
			err = report(Position{Node: node, Done: true}, n)
		} else {
			// Keys deleted after the last report still count in the total.
			mu.Lock()
			total += n - reported
			reported = n
			mu.Unlock()
		}
		mu.Lock()
		defer mu.Unlock()
		if se, ok := err.(stopError); ok {
			if stopped == nil {
				stopped = se.err
			}
		} else if err != nil && failed == nil {
			failed = err
		}
	}

	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		run(ctx, "", c, opt)
	} else {
		opt.Cluster, opt.redirect = true, cc
		// ForEachMaster runs fn on every master in a goroutine of its own and
		// waits for all; fn never fails, so no master stops another, and its
		// only error is a failure to learn the masters.
		if err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			run(ctx, node.Options().Addr, node, opt)
			return nil
		}); err != nil {
			return 0, fmt.Errorf("purge %q: cluster masters: %w", pattern, err)
		}
	}
	if failed != nil {
		return total, failed
	}
	return total, stopped
}

// stopError carries an error progress returned through Node (which returns it
// as it is), so Each can tell the caller's stop from a node's failure.
type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }

// FormatCursor and ParseCursor keep cursors as decimal strings: SCAN cursors
// are unsigned 64-bit, beyond what JSON numbers carry safely.
func FormatCursor(c uint64) string { return strconv.FormatUint(c, 10) }

// ParseCursor parses a cursor written by FormatCursor; "" is 0.
func ParseCursor(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}
