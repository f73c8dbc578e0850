package cache

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Autopipelining (the default; Config.DisableAutoPipeline turns it off)
// routes the single-key reads and writes of the hot path through go-redis's
// deferred autopipeliner. Its default configuration is one
// ordered stream: while a batch is on the wire the next callers' commands
// queue and go out together as the next batch, so N concurrent callers cost
// about one round trip and two syscalls per batch instead of per call. Each
// caller waits for its own command with WaitContext, bounded by the call's
// context (SocketTimeout at most): a call that gives up leaves the command to
// complete on its own, as a timed-out plain command may also have landed.
//
// A lone caller gains nothing from batching and would pay the hand-off to
// the flusher goroutine (on a busy 2-core machine, more than the round trip
// itself), so a call goes through the pipeliner only while another call is
// in flight; otherwise it takes the plain path. Either way a goroutine waits
// for each command before it sends the next, so its commands stay in order.

// pipeState is the autopipeliner of a Cache, built on first use, and the
// number of calls in flight that decides whether to use it.
type pipeState struct {
	p        atomic.Pointer[redis.AutoPipeliner]
	inflight atomic.Int64
}

// pipeliner returns the autopipeliner of cl, or nil when it is off (or
// go-redis refused to build one, in which case the plain path is used).
func (c *Cache) pipeliner(cl *universal) *redis.AutoPipeliner {
	if c.cfg.DisableAutoPipeline {
		return nil
	}
	if p := c.pipe.p.Load(); p != nil {
		return p
	}
	// go-redis caches the instance per client, so racing callers get the
	// same one; it is closed with the client.
	p, err := cl.AsyncAutoPipeline()
	if err != nil {
		c.warn("cache: autopipelining unavailable; using plain commands", "err", err)
		return nil
	}
	c.pipe.p.Store(p)
	return p
}

// concurrent counts a call in flight and reports whether another one is;
// the caller calls done when its command has completed. (A method rather
// than a returned func: a method value would be allocated on every call.)
func (c *Cache) concurrent() (busy bool) {
	return !c.cfg.DisableAutoPipeline && c.pipe.inflight.Add(1) > 1
}

func (c *Cache) done() {
	if !c.cfg.DisableAutoPipeline {
		c.pipe.inflight.Add(-1)
	}
}

// await submits cmd and waits for it within ctx.
func await(ctx context.Context, p *redis.AutoPipeliner, cmd redis.Cmder) error {
	return p.Submit(ctx, cmd).WaitContext(ctx)
}

// redisGet is GET key, pipelined if configured. A missing key is redis.Nil.
func (c *Cache) redisGet(ctx context.Context, cl *universal, key string) ([]byte, error) {
	busy := c.concurrent()
	defer c.done()
	p := c.pipeliner(cl)
	if p == nil || !busy {
		return cl.Get(ctx, key).Bytes()
	}
	cmd := redis.NewStringCmd(ctx, "get", key)
	if err := await(ctx, p, cmd); err != nil {
		return nil, err
	}
	return cmd.Bytes()
}

// redisSet is SET key value PX ttl, pipelined if configured. value may be
// reused by the caller once it returns.
func (c *Cache) redisSet(ctx context.Context, cl *universal, key string, value []byte, ttl time.Duration) error {
	busy := c.concurrent()
	defer c.done()
	p := c.pipeliner(cl)
	if p == nil || !busy {
		return cl.Set(ctx, key, value, ttl).Err()
	}
	// A copy: if the wait ends early the command still goes out later,
	// after the caller has recycled its buffer.
	cmd := redis.NewStatusCmd(ctx, "set", key, slices.Clone(value), "px", max(ttl.Milliseconds(), 1))
	return await(ctx, p, cmd)
}

// redisGetPTTL is GET and PTTL of key in one round trip (the near-cache's
// miss path). get's error is redis.Nil for a missing key.
func (c *Cache) redisGetPTTL(ctx context.Context, cl *universal, key string) (get *redis.StringCmd, pttl *redis.DurationCmd, err error) {
	busy := c.concurrent()
	defer c.done()
	if p := c.pipeliner(cl); p != nil && busy {
		get = redis.NewStringCmd(ctx, "get", key)
		pttl = redis.NewDurationCmd(ctx, time.Millisecond, "pttl", key)
		f := p.Submit(ctx, get)
		// Both are in flight before either is awaited: one round trip.
		if err := await(ctx, p, pttl); err != nil {
			return get, pttl, err
		}
		if err := f.WaitContext(ctx); err != nil && err != redis.Nil {
			return get, pttl, err
		}
		return get, pttl, nil
	}
	_, err = cl.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		pttl = p.PTTL(ctx, key)
		return nil
	})
	if err == redis.Nil {
		err = nil
	}
	return get, pttl, err
}
