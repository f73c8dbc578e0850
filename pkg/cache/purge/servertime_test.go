package purge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// slowClient delays every pipeline's reply by a fixed time on the client
// side: the round trip grows while the server's own work does not, as when
// the client waits for a core or a slow network.
type slowClient time.Duration

func (slowClient) DialHook(next redis.DialHook) redis.DialHook { return next }

func (slowClient) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (d slowClient) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		time.Sleep(time.Duration(d))
		return err
	}
}

// dbClient is a client of database db of the test server, emptied before
// and after, so a test's SCANs walk only its own keys.
func dbClient(t *testing.T, db int, user string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: db, Username: user, Password: user})
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: db})
	if err := admin.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.FlushDB(context.Background())
		admin.Close()
		c.Close()
	})
	return c
}

// COUNT follows the server's time, not the client's round trip: with every
// round trip slowed to 10 ms on the client side, far beyond a 5 ms budget,
// COUNT still grows, since the server spends well under the budget on each
// page. A server that refuses INFO leaves only the round trip to steer by,
// and then COUNT shrinks, as the round trip overruns the budget.
func TestNodeCountFollowsServerTime(t *testing.T) {
	admin := srv.Client()
	defer admin.Close()
	if err := admin.Do(context.Background(), "ACL", "SETUSER", "noinfo", "on", ">noinfo", "~*", "+@all", "-info").Err(); err != nil {
		t.Fatal(err)
	}
	defer admin.Do(context.Background(), "ACL", "DELUSER", "noinfo")
	const delay = slowClient(10 * time.Millisecond)
	opt := purge.Options{LatencyBudget: 5 * time.Millisecond}

	c := dbClient(t, 7, "")
	fill(t, c, "t8:other:%d", 60000)
	c.AddHook(delay)
	fixed := pages(t, c, "t8:none:*", purge.Options{Count: purge.DefaultCount})
	grown := pages(t, c, "t8:none:*", opt)
	t.Logf("pages over 60k keys, client round trip slowed by %v: fixed COUNT: %d, adaptive: %d", time.Duration(delay), fixed, grown)
	// COUNT grows by half on each sample of the server's time, every
	// sampleEvery pages: 22 pages where fixed COUNT takes 60 (a round trip
	// steering would shrink it instead, as below).
	if grown*2 > fixed {
		t.Errorf("adaptive COUNT took %d pages with a fast server behind a slow round trip, fixed %d", grown, fixed)
	}

	// Without INFO: the round trip steers, and overruns.
	n := dbClient(t, 8, "noinfo")
	fill(t, n, "t8:other:%d", 10000)
	n.AddHook(delay)
	fixed = pages(t, n, "t8:none:*", purge.Options{Count: purge.DefaultCount})
	shrunk := pages(t, n, "t8:none:*", opt)
	t.Logf("pages over 10k keys, INFO refused: fixed COUNT: %d, adaptive: %d", fixed, shrunk)
	if shrunk < 3*fixed {
		t.Errorf("adaptive COUNT without INFO took %d pages behind a slow round trip, fixed %d", shrunk, fixed)
	}
	// And the purge itself works without INFO.
	fill(t, n, "t8:match:%d", 3000)
	if got, err := purge.Node(context.Background(), n, "t8:match:*", 0, opt, nil); err != nil || got != 3000 {
		t.Fatalf("purge without INFO = %d, %v; want 3000", got, err)
	}
}

// COUNT shrinks when the server's own work for a page overruns the budget.
// The work is made slow on the server, deterministically: 512-character
// names matched against a glob of many stars cost Redis's matcher some
// microseconds per key, so a SCAN of COUNT 1000 takes several milliseconds
// of the server's time (even the smallest COUNT, 100, about a millisecond)
// while the replies (no key matches) stay tiny and the client idle.
func TestNodeCountShrinksOnSlowServer(t *testing.T) {
	c := dbClient(t, 9, "")
	fill(t, c, "t9:%d:"+strings.Repeat("a", 512), 20000)
	const pattern = "t9:*a*a*a*a*a*a*a*a*a*a*z"
	fixed := pages(t, c, pattern, purge.Options{Count: purge.DefaultCount})
	shrunk := pages(t, c, pattern, purge.Options{})
	t.Logf("pages over 20k long names, costly glob: fixed COUNT: %d, adaptive: %d", fixed, shrunk)
	if shrunk < 3*fixed {
		t.Errorf("adaptive COUNT took %d pages on a slow server, fixed %d", shrunk, fixed)
	}
}

// BenchmarkInfoCost is what reading the server's time adds to a page: one
// round trip of SCAN COUNT 1000 alone, and with INFO commandstats parsed
// (after some thirty distinct commands, as a working cache server has seen).
// server-µs/op is Redis's own time for the INFO, from its commandstats.
func BenchmarkInfoCost(b *testing.B) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: 10})
	defer c.Close()
	c.FlushDB(ctx)
	defer c.FlushDB(ctx)
	if err := redistest.Fill(ctx, c, "b:%d", 20000); err != nil {
		b.Fatal(err)
	}
	pipe := c.Pipeline()
	for _, cmd := range [][]any{{"GET", "b:1"}, {"MGET", "b:1", "b:2"}, {"INCR", "n"}, {"HSET", "h", "f", "v"}, {"HGET", "h", "f"},
		{"HDEL", "h", "x"}, {"EXPIRE", "b:1", 100}, {"PEXPIRE", "b:2", 1000}, {"TTL", "b:1"}, {"PTTL", "b:1"}, {"EXISTS", "b:1"},
		{"DEL", "x"}, {"TYPE", "b:1"}, {"STRLEN", "b:1"}, {"GETRANGE", "b:1", 0, 1}, {"SETEX", "y", 10, "v"}, {"PUBLISH", "ch", "x"},
		{"TIME"}, {"DBSIZE"}, {"PING"}, {"EVAL", "return 1", 0}, {"SADD", "s", "a"}, {"SREM", "s", "b"}, {"ZADD", "z", 1, "a"},
		{"ZRANGE", "z", 0, -1}, {"LPUSH", "l", "a"}, {"LRANGE", "l", 0, -1}, {"GETDEL", "x"}, {"SET", "q", "v", "NX", "PX", 1000}, {"MSET", "m", "v"}} {
		pipe.Do(ctx, cmd...)
	}
	pipe.Exec(ctx)
	b.Run("scan", func(b *testing.B) {
		for range b.N {
			pipe := c.Pipeline()
			pipe.Scan(ctx, 0, "none:*", 1000)
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("scan+info", func(b *testing.B) {
		calls0, usec0 := purge.CmdStatForTest(c.Info(ctx, "commandstats").Val(), "cmdstat_info")
		for range b.N {
			pipe := c.Pipeline()
			pipe.Scan(ctx, 0, "none:*", 1000)
			info := pipe.Info(ctx, "commandstats")
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			purge.ParseCmdStatsForTest(info.Val())
		}
		b.StopTimer()
		info := c.Info(ctx, "commandstats").Val()
		calls, usec := purge.CmdStatForTest(info, "cmdstat_info")
		b.ReportMetric(float64(usec-usec0)/float64(max(calls-calls0, 1)), "server-µs/op")
		b.ReportMetric(float64(len(info)), "info-bytes")
	})
	b.Run("parse", func(b *testing.B) {
		info := c.Info(ctx, "commandstats").Val()
		for range b.N {
			purge.ParseCmdStatsForTest(info)
		}
	})
}
