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
// client waits, so the engine aims each round trip at a latency budget. It
// grows COUNT while round trips come back well within the budget (sparse
// matches, an idle server: fewer round trips, so a faster purge) and halves
// it as soon as one overruns (a busy server, dense matches: the other
// clients' latency comes first).
//
// The package is public only because the operator shares it with pkg/cache and,
// living in another module, cannot import the library module's internal
// packages. Applications should use Cache.Invalidate instead.
package purge

import (
	"context"
	"fmt"
	"strconv"
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

// DefaultLatencyBudget is the round-trip time the adaptive COUNT aims to stay
// under. Redis serves nobody else while it runs one round trip's UNLINK and
// SCAN, so this bounds what the purge adds to other clients' latency.
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
	// LatencyBudget is the round-trip time the adaptive COUNT aims at; 0
	// means DefaultLatencyBudget. Ignored when Count is set.
	LatencyBudget time.Duration
	// MaxKeysPerSecond limits UNLINKs; 0 means unlimited.
	MaxKeysPerSecond int64
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
	var limiter *rate.Limiter
	if opt.MaxKeysPerSecond > 0 {
		// Spend the allowance in about ten slices a second, so the deletes are
		// spread out rather than bursting once a second.
		burst := int(max(1, opt.MaxKeysPerSecond/10))
		limiter = rate.NewLimiter(rate.Limit(opt.MaxKeysPerSecond), burst)
		// rate.Limiter starts full; begin empty so the first second is limited too.
		limiter.AllowN(time.Now(), burst)
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

		// One round trip: UNLINK the previous page, SCAN the next.
		pipe := c.Pipeline()
		unlinks := queueUnlinks(ctx, pipe, pending, opt)
		var scan *redis.ScanCmd
		if !done {
			scan = pipe.Scan(ctx, cursor, pattern, count)
		}
		start := time.Now()
		if _, err := pipe.Exec(ctx); err != nil {
			return deleted, fmt.Errorf("purge %q: %w", pattern, err)
		}
		if adaptive {
			count = nextCount(count, time.Since(start), budget)
		}
		for _, u := range unlinks {
			if u.Err() != nil {
				return deleted, fmt.Errorf("purge %q: UNLINK: %w", pattern, u.Err())
			}
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

// nextCount steers COUNT by the last round trip: multiplicative decrease on
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

func queueUnlinks(ctx context.Context, pipe redis.Pipeliner, keys []string, opt Options) []redis.Cmder {
	if len(keys) == 0 {
		return nil
	}
	unlink := func(keys []string) redis.Cmder {
		if opt.Keep != nil {
			// EVAL, not EVALSHA: a NOSCRIPT inside a pipeline is not retried.
			return pipe.Eval(ctx, keyspace.UnlinkStaleLua, keys, *opt.Keep)
		}
		return pipe.Unlink(ctx, keys...)
	}
	if !opt.Cluster {
		return []redis.Cmder{unlink(keys)}
	}
	var cmds []redis.Cmder
	for _, group := range BySlot(keys) {
		cmds = append(cmds, unlink(group))
	}
	return cmds
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

func unlinkLimited(ctx context.Context, c redis.Cmdable, keys []string, opt Options, l *rate.Limiter) (int64, error) {
	var deleted int64
	for len(keys) > 0 {
		n := min(len(keys), l.Burst())
		if err := l.WaitN(ctx, n); err != nil {
			return deleted, err
		}
		pipe := c.Pipeline()
		cmds := queueUnlinks(ctx, pipe, keys[:n], opt)
		if _, err := pipe.Exec(ctx); err != nil {
			return deleted, fmt.Errorf("UNLINK: %w", err)
		}
		for _, u := range cmds {
			if u.Err() != nil {
				return deleted, fmt.Errorf("UNLINK: %w", u.Err())
			}
		}
		deleted += countDeleted(cmds, keys[:n], opt)
		keys = keys[n:]
	}
	return deleted, nil
}

// All purges pattern on every node that holds data: each master of a cluster
// client, in parallel, or the one server of any other client. It returns the
// keys deleted in all.
func All(ctx context.Context, c redis.UniversalClient, pattern string, opt Options) (int64, error) {
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		return Node(ctx, c, pattern, 0, opt, nil)
	}
	opt.Cluster = true
	var (
		mu    sync.Mutex
		total int64
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n, err := Node(ctx, node, pattern, 0, opt, nil)
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	})
	return total, err
}

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
