package purge_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	srv = redistest.MustStart()
	code := m.Run()
	srv.Close()
	if clu != nil {
		clu.Close()
	}
	os.Exit(code)
}

func fill(t *testing.T, c *redis.Client, format string, n int) {
	t.Helper()
	if err := redistest.Fill(context.Background(), c, format, n); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, c *redis.Client, pattern string) int {
	t.Helper()
	keys, err := c.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

func TestNodeDeletesExactlyTheMatchingKeys(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	fill(t, c, "t1:users:%d", 12000)
	fill(t, c, "t1:orders:%d", 3000)
	fill(t, c, "t1x:users:%d", 500)

	var reports int
	n, err := purge.Node(context.Background(), c, "t1:users:*", 0, purge.Options{Count: 500}, func(uint64, int64) error {
		reports++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 12000 {
		t.Errorf("deleted %d keys, want 12000", n)
	}
	if got := count(t, c, "t1:users:*"); got != 0 {
		t.Errorf("%d matching keys left", got)
	}
	if got := count(t, c, "t1:orders:*"); got != 3000 {
		t.Errorf("other prefix: %d keys left, want 3000", got)
	}
	if got := count(t, c, "t1x:users:*"); got != 500 {
		t.Errorf("other tenant: %d keys left, want 500", got)
	}
	if reports < 12000/500 {
		t.Errorf("progress reported %d times, want at least one per page", reports)
	}
}

// A purge stopped at any reported checkpoint and resumed from its cursor
// deletes every matching key, and the deleted counts add up.
func TestNodeResumesFromCheckpoint(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	fill(t, c, "t2:p:%d", 8000)
	errStop := fmt.Errorf("stop")

	var cursor uint64
	var total int64
	for attempt := 0; ; attempt++ {
		if attempt > 100 {
			t.Fatal("purge did not finish in 100 resumptions")
		}
		pages := 0
		n, err := purge.Node(context.Background(), c, "t2:p:*", cursor, purge.Options{Count: 300}, func(cur uint64, deleted int64) error {
			cursor = cur
			pages++
			if pages == 3 {
				total += deleted
				return errStop
			}
			return nil
		})
		if err == nil {
			total += n
			break
		}
		if err != errStop {
			t.Fatal(err)
		}
	}
	if got := count(t, c, "t2:p:*"); got != 0 {
		t.Errorf("%d keys left after resumed purge", got)
	}
	// A resumed page may be deleted twice (UNLINK of a missing key counts it
	// here as well), so the total is at least the key count.
	if total < 8000 {
		t.Errorf("deleted %d in all, want >= 8000", total)
	}
}

func TestNodeHonoursMaxKeysPerSecond(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	fill(t, c, "t3:p:%d", 600)
	start := time.Now()
	n, err := purge.Node(context.Background(), c, "t3:p:*", 0, purge.Options{MaxKeysPerSecond: 400}, nil)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if n != 600 {
		t.Errorf("deleted %d, want 600", n)
	}
	// 600 keys at 400/s, starting from an empty bucket: at least 1.5s.
	if elapsed < 1400*time.Millisecond {
		t.Errorf("600 keys at 400 keys/s took %v, want >= 1.5s", elapsed)
	}
	t.Logf("600 keys at 400 keys/s: %v", elapsed)
}

func TestNodeStopsOnCancel(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	fill(t, c, "t4:p:%d", 2000)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := purge.Node(ctx, c, "t4:p:*", 0, purge.Options{Count: 100}, func(uint64, int64) error {
		cancel()
		return nil
	})
	if err != context.Canceled {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := count(t, c, "t4:p:*"); got == 0 {
		t.Error("cancelled purge deleted everything")
	}
}

func TestAllOnStandalone(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	fill(t, c, "t5:p:%d", 1500)
	n, err := purge.All(context.Background(), c, "t5:p:*", purge.Options{})
	if err != nil || n != 1500 {
		t.Fatalf("All = %d, %v; want 1500, nil", n, err)
	}
}

func TestSlotMatchesRedis(t *testing.T) {
	// Slots Redis Cluster's specification gives, and hash tags sharing a slot.
	cases := map[string]int{"foo": 12182, "bar": 5061, "123456789": 0x31C3 % 16384, "": 0}
	for k, want := range cases {
		if got := purge.Slot(k); got != want {
			t.Errorf("Slot(%q) = %d, want %d", k, got, want)
		}
	}
	if purge.Slot("{user1000}.following") != purge.Slot("{user1000}.followers") {
		t.Error("keys with one hash tag differ in slot")
	}
	// An empty tag "{}" does not count: the whole key is hashed.
	if purge.Slot("foo{}{bar}") == purge.Slot("bar") {
		t.Error("empty hash tag treated as a tag")
	}
}

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []uint64{0, 1, 1 << 63, ^uint64(0)} {
		got, err := purge.ParseCursor(purge.FormatCursor(c))
		if err != nil || got != c {
			t.Errorf("round trip of %d = %d, %v", c, got, err)
		}
	}
	if _, err := purge.ParseCursor("-1"); err == nil {
		t.Error("ParseCursor(-1) succeeded")
	}
}

func TestNextCount(t *testing.T) {
	b := time.Millisecond
	for _, tc := range []struct {
		count int64
		rtt   time.Duration
		want  int64
	}{
		{1000, 2 * b, 500},                    // overrun: halve
		{150, 2 * b, purge.MinCountForTest},   // never below the floor
		{1000, b / 4, 1500},                   // well within: grow by half
		{60000, b / 4, purge.MaxCountForTest}, // never above the ceiling
		{1000, 3 * b / 4, 1000},               // dead band: keep
		{1000, b, 1000},                       // at the budget: keep
	} {
		if got := purge.NextCount(tc.count, tc.rtt, b); got != tc.want {
			t.Errorf("NextCount(%d, %v) = %d, want %d", tc.count, tc.rtt, got, tc.want)
		}
	}
}

// pages purges pattern and returns how many pages (round trips) it took.
func pages(t *testing.T, c *redis.Client, pattern string, opt purge.Options) int {
	t.Helper()
	n := 0
	if _, err := purge.Node(context.Background(), c, pattern, 0, opt, func(uint64, int64) error {
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// The adaptive COUNT takes bigger pages while round trips are well within
// the budget, and smaller ones when they overrun it.
func TestNodeAdaptsCount(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	fill(t, c, "t6:other:%d", 60000)
	defer purge.Node(context.Background(), c, "t6:*", 0, purge.Options{}, nil)

	fixed := pages(t, c, "t6:none:*", purge.Options{Count: purge.DefaultCount})
	// A generous budget: every round trip is well within it.
	grown := pages(t, c, "t6:none:*", purge.Options{LatencyBudget: time.Minute})
	// An impossible budget: every round trip overruns it.
	shrunk := pages(t, c, "t6:none:*", purge.Options{LatencyBudget: time.Nanosecond})
	t.Logf("pages over 60k keys: fixed COUNT %d: %d; adaptive, loose budget: %d; adaptive, tight budget: %d",
		purge.DefaultCount, fixed, grown, shrunk)
	if grown*3 > fixed {
		t.Errorf("adaptive COUNT with a loose budget took %d pages, fixed %d", grown, fixed)
	}
	if shrunk < 3*fixed {
		t.Errorf("adaptive COUNT with a tight budget took %d pages, fixed %d", shrunk, fixed)
	}

	// Whatever the COUNT, exactly the matching keys go.
	fill(t, c, "t6:match:%d", 5000)
	n, err := purge.Node(context.Background(), c, "t6:match:*", 0, purge.Options{LatencyBudget: time.Nanosecond}, nil)
	if err != nil || n != 5000 {
		t.Fatalf("purge = %d, %v; want 5000", n, err)
	}
	if got := count(t, c, "t6:other:*"); got != 60000 {
		t.Errorf("%d other keys left, want 60000", got)
	}
}
