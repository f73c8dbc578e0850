package controllers

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/time/rate"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// countingLimiter counts the tokens the masters take from it.
type countingLimiter struct {
	*rate.Limiter
	taken atomic.Int64
}

func (l *countingLimiter) WaitN(ctx context.Context, n int) error {
	l.taken.Add(int64(n))
	return l.Limiter.WaitN(ctx, n)
}

// The driver purges a cluster's masters at once in time slices: every
// checkpoint holds one cursor per master, a master once done stays done, the
// run resumed from the checkpoints deletes exactly the matching keys, and
// one limiter paces every master (its tokens add up to the keys reported).
func TestStorePurgeClusterInSlices(t *testing.T) {
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cc := cl.Client()
	defer cc.Close()
	ctx := context.Background()
	if err := redistest.Fill(ctx, cc, "sp:p:%d", 30000); err != nil {
		t.Fatal(err)
	}
	if err := redistest.Fill(ctx, cc, "sp:o:%d", 2000); err != nil {
		t.Fatal(err)
	}
	store, err := NewRedisStore(redisconn.Options{Mode: redisconn.ModeCluster, URL: "redis://" + cl.Nodes[0].Addr(), Addrs: cl.Addrs()[1:]})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	l := &countingLimiter{Limiter: rate.NewLimiter(rate.Inf, 300)}
	var (
		cursors []NodeCursor
		total   int64
		spent   int
		mid     int // slices that ended with at least two masters unfinished
	)
	for {
		if spent > 200 {
			t.Fatal("purge did not finish in 200 slices")
		}
		reports := 0
		err := store.Purge(ctx, "sp:p:*", cursors, purge.Options{Count: 200, Limiter: l}, func(cs []NodeCursor, deleted int64) error {
			total += deleted
			if !slices.IsSortedFunc(cs, func(a, b NodeCursor) int { return strings.Compare(a.Node, b.Node) }) {
				t.Errorf("checkpoint not sorted by node: %+v", cs)
			}
			for _, prev := range cursors {
				i := slices.IndexFunc(cs, func(c NodeCursor) bool { return c.Node == prev.Node })
				if i < 0 || prev.Done && !cs[i].Done {
					t.Errorf("checkpoint went back: %+v after %+v", cs, cursors)
				}
			}
			cursors = cs
			// As advanceRun does once its deadline passes: every master's
			// next report ends the slice.
			if reports++; reports >= 15 {
				if reports == 15 {
					unfinished := 3 - len(cs)
					for _, c := range cs {
						if !c.Done {
							unfinished++
						}
					}
					if unfinished >= 2 {
						mid++
					}
				}
				return errSliceSpent
			}
			return nil
		})
		if err == nil {
			break
		}
		if !errors.Is(err, errSliceSpent) {
			t.Fatal(err)
		}
		spent++
	}
	t.Logf("%d slices, %d of them with several masters mid-run; %d keys reported", spent, mid, total)
	if mid == 0 {
		t.Error("no slice ended with several masters mid-run")
	}
	if len(cursors) != 3 {
		t.Errorf("final checkpoint %+v, want one cursor per master", cursors)
	}
	for _, c := range cursors {
		if !c.Done || c.RunID == "" {
			t.Errorf("final cursor %+v, want done with its run id", c)
		}
	}
	if got := l.taken.Load(); got != total {
		t.Errorf("limiter gave %d tokens, keys reported %d: not every master drew from it", got, total)
	}
	if total < 30000 {
		t.Errorf("reported %d keys, want >= 30000", total)
	}
	for pattern, want := range map[string]int{"sp:p:*": 0, "sp:o:*": 2000} {
		n := 0
		for _, node := range cl.Nodes {
			c := node.Client()
			keys, err := c.Keys(ctx, pattern).Result()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			n += len(keys)
		}
		if n != want {
			t.Errorf("%s: %d keys left, want %d", pattern, n, want)
		}
	}
}
