package keyspace_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	srv = redistest.MustStart()
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

func client(t *testing.T) *redis.Client {
	t.Helper()
	c := srv.Client()
	t.Cleanup(func() { c.Close() })
	return c
}

// fresh returns a space of its own to every run of a test (-count).
func fresh(name string) keyspace.Space { return keyspace.New(name + keyspace.NewProcessID()) }

func serverMicros(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now.UnixMicro()
}

// Generations are the server's time in microseconds, rise by at least one
// per bump, are published, and never go back: not after the hash is lost,
// not below a floor.
func TestBumpGenerations(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	s := fresh("gbump")
	sub := c.Subscribe(ctx, s.EventsChannel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	before := serverMicros(t, c)
	g1, err := s.BumpGenerations(ctx, c, []string{"users", "orders"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g1["users"] < before || g1["orders"] < before {
		t.Fatalf("bumped generations %v are below the server's time %d", g1, before)
	}
	for range 2 {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := keyspace.ParseEvent(msg.Payload)
		if err != nil || ev.Type != keyspace.EventInvalidated || ev.Generation != g1[ev.Prefix] {
			t.Errorf("event %q (%v), want invalidated with %v", msg.Payload, err, g1)
		}
	}
	// Back to back, within one microsecond, if the machine is fast enough: still strictly rising.
	g2, err := s.BumpGenerations(ctx, c, []string{"users"}, nil)
	if err != nil || g2["users"] <= g1["users"] {
		t.Fatalf("second bump %v (%v), first %v", g2, err, g1)
	}
	// A floor from far in the future wins.
	far := g2["users"] + 1e9
	g3, err := s.BumpGenerations(ctx, c, []string{"users"}, map[string]int64{"users": far})
	if err != nil || g3["users"] != far+1 {
		t.Fatalf("bump from floor %d = %v (%v)", far, g3, err)
	}

	// The hash is lost: what a reader finds afterwards is above everything
	// handed out before, so no old entry is fresh again.
	if err := c.Del(ctx, s.GenKey()).Err(); err != nil {
		t.Fatal(err)
	}
	gens, err := keyspace.ParseGenerations(s.EnsureGenerations(ctx, c))
	if err != nil {
		t.Fatal(err)
	}
	if gens.Of("orders") <= g1["orders"] || gens.Of("never-bumped") < before {
		t.Errorf("after the hash was lost: %+v; orders was %d", gens, g1["orders"])
	}
}

func TestEnsureGenerationsKeepsTheBase(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	s := fresh("gensure")
	g1, err := keyspace.ParseGenerations(s.EnsureGenerations(ctx, c))
	if err != nil || g1.Base == 0 || len(g1.Prefixes) != 0 {
		t.Fatalf("first ensure: %+v, %v", g1, err)
	}
	bumped, err := s.BumpGenerations(ctx, c, []string{"p"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The base must not follow the clock: ensure again once the server's
	// clock has moved past it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		now, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if now.UnixMicro() > bumped["p"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's clock stayed at or below %d", bumped["p"])
		}
	}
	g2, err := keyspace.ParseGenerations(s.EnsureGenerations(ctx, c))
	if err != nil || g2.Base != g1.Base || g2.Of("p") != bumped["p"] || g2.Of("q") != g1.Base {
		t.Fatalf("second ensure: %+v (%v), first %+v, bumped %v", g2, err, g1, bumped)
	}
	// It works in a pipeline (sent as EVAL, not EVALSHA).
	pipe := c.Pipeline()
	cmd := s.EnsureGenerations(ctx, pipe)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if g3, err := keyspace.ParseGenerations(cmd); err != nil || g3.Of("p") != bumped["p"] {
		t.Fatalf("pipelined ensure: %+v, %v", g3, err)
	}
}

func TestRaiseGenerationsNeverLowers(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	s := fresh("graise")
	bumped, err := s.BumpGenerations(ctx, c, []string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.RaiseGenerations(ctx, c, map[string]int64{"a": 5, "b": 0, "c": bumped["a"] + 100})
	if err != nil {
		t.Fatal(err)
	}
	if got["a"] != bumped["a"] {
		t.Errorf("a low floor changed a: %d, was %d", got["a"], bumped["a"])
	}
	if got["b"] == 0 || got["b"] > bumped["a"] {
		t.Errorf("b without a field = %d, want the base", got["b"])
	}
	if got["c"] != bumped["a"]+100 {
		t.Errorf("c = %d, want its floor %d", got["c"], bumped["a"]+100)
	}
	gens, _ := keyspace.ParseGenerations(s.EnsureGenerations(ctx, c))
	if gens.Of("c") != got["c"] || gens.Of("a") != got["a"] {
		t.Errorf("hash %+v, raise returned %v", gens, got)
	}
}

// A batch re-sent with the same sequence number (its reply was lost) is not
// counted twice; the next one is.
func TestFlushStatsAtMostOnce(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	s := fresh("gflush")
	pid := keyspace.NewProcessID()
	batch := []keyspace.StatsIncrement{{"users", keyspace.FieldHits, 3}, {"users", keyspace.FieldMisses, 1}, {"orders", keyspace.FieldHits, 2}}
	for i, want := range []bool{true, false} {
		applied, err := s.FlushStats(ctx, c, pid, 1, batch)
		if err != nil || applied != want {
			t.Fatalf("send %d: applied %v (%v), want %v", i, applied, err, want)
		}
	}
	if applied, err := s.FlushStats(ctx, c, pid, 2, batch[:1]); err != nil || !applied {
		t.Fatalf("next batch: %v, %v", applied, err)
	}
	if applied, _ := s.FlushStats(ctx, c, keyspace.NewProcessID(), 1, batch[2:]); !applied {
		t.Fatal("another process's first batch was refused")
	}
	users := c.HGetAll(ctx, s.StatsKey("users")).Val()
	orders := c.HGetAll(ctx, s.StatsKey("orders")).Val()
	if users["hits"] != "6" || users["misses"] != "1" || orders["hits"] != "4" {
		t.Errorf("users %v, orders %v; want hits 6, misses 1 and hits 4", users, orders)
	}
	if ttl := c.PTTL(ctx, s.FlushedKey(pid)).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("flushed key TTL %v, want at most an hour", ttl)
	}
}
