package cache

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Load leases (Config.LoadLease): one loader per key across processes, after
// the flight group has made it one per process. The key layout and the
// scripts are keyspace's (keyspace/lease.go); docs/load-lease.md has the
// guarantees.

var (
	leaseAcquireScript   = redis.NewScript(keyspace.LeaseAcquireLua)
	leaseWriteBackScript = redis.NewScript(keyspace.LeaseWriteBackLua)
	leaseReleaseScript   = redis.NewScript(keyspace.LeaseReleaseLua)
)

// leaseHold is a load lease this process holds: its Redis key and token.
// done is set once a write-back script has answered for it (it releases
// the lease itself).
type leaseHold struct {
	key, token string
	done       bool
}

// leaseResult is how a miss goes on after awaitLease.
type leaseResult int

const (
	// leaseNone: no lease (the key cannot have one, scripts are refused,
	// or the wait ran out): load, and write back as without LoadLease.
	leaseNone leaseResult = iota
	// leaseHeld: this call holds the lease (obs.lease): load, and store
	// fenced by it.
	leaseHeld
	// leaseServed: take accepted a value another process stored.
	leaseServed
	// leaseFailed: Redis failed: load, and write nothing back (one
	// timeout per call, as for a failed read).
	leaseFailed
)

// Poll intervals of a waiter: from leasePollFirst, doubling, up to
// LoadLease/leasePollSteps within [leasePollFirst, leasePollMax], each
// jittered by ±25% so that the waiting processes do not poll in step.
const (
	leasePollFirst = 2 * time.Millisecond
	leasePollMax   = 50 * time.Millisecond
	leasePollSteps = 10
)

// leaseRounds is how many leases a waiter waits out, in LoadLease units:
// the holder it found and, if that one's lease ends without a value (a
// crash, a failed load), one successor, who is then one of the waiters.
const leaseRounds = 2

// awaitLease runs the lease protocol of a miss on key, whose read observed
// obs: it takes the lease (this call loads) or waits for the holder's value,
// handing each value found under the key to take, which reports whether it
// is one to serve (it decodes it for the caller). A value it refuses (a
// tombstone, an entry of an older generation) becomes obs, what a
// write-back compares against.
//
// Waiters poll (keyspace.LeaseAcquireLua, one round trip that also takes
// over a lease that ended) rather than subscribe to a release channel: a
// poll costs Redis only while somebody waits, on any topology and with no
// channel rights, whereas a published release would reach every process
// of the key prefix (and, on a cluster, every node) for every load, waited
// for or not. The price is latency: a waiter sees the value up to one poll
// interval (at most leasePollMax) after it is stored, on a path that has
// just waited for a load anyway.
func (c *Cache) awaitLease(ctx context.Context, st *prefixState, key string, obs *observation, take func([]byte) bool) leaseResult {
	lkey, ok := c.space.LeaseKey(key)
	if !ok {
		return leaseNone
	}
	cl := c.client.Load()
	if cl == nil {
		return leaseFailed
	}
	lease := c.cfg.LoadLease
	ms := max(lease.Milliseconds(), 1)
	keys := []string{c.space.DataKey(key), lkey}
	deadline := time.Now().Add(leaseRounds * lease)
	pollMax := min(max(lease/leasePollSteps, leasePollFirst), leasePollMax)
	poll := leasePollFirst
	for {
		token := strconv.FormatUint(rand.Uint64(), 36)
		octx, cancel := c.opCtx(ctx)
		reply, err := leaseAcquireScript.Run(octx, cl, keys, obs.sum, token, ms).Slice()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return leaseFailed // nobody waits for this load any more
			}
			if scriptRefused(err) {
				c.warn("cache: cannot run the load lease script; loading without a lease", "err", err)
				return leaseNone
			}
			c.countError(ctx, st)
			c.warn("cache: taking the load lease failed; loading without it", "key", key, "err", err)
			if isRedisFailure(err) {
				return leaseFailed
			}
			return leaseNone
		}
		code, _ := reply[0].(int64)
		switch code {
		case 1:
			obs.lease = &leaseHold{key: lkey, token: token}
			return leaseHeld
		case 2:
			s, _ := reply[1].(string)
			b := []byte(s)
			if take(b) {
				return leaseServed
			}
			obs.saw(b)
			if time.Now().After(deadline) {
				return leaseNone
			}
			continue // the key changed: try again at once
		}
		pttl, _ := reply[1].(int64)
		now := time.Now()
		if !now.Before(deadline) {
			return leaseNone
		}
		wait := time.Duration(float64(poll) * (0.75 + rand.Float64()/2))
		if pttl > 0 {
			// Wake as the lease ends: a crashed holder's lease is taken
			// over at once.
			wait = min(wait, time.Duration(pttl)*time.Millisecond+time.Millisecond)
		}
		wait = min(wait, deadline.Sub(now))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return leaseFailed
		case <-t.C:
		}
		poll = min(poll*2, pollMax)
	}
}

// writeBackObserved is the write-back's compare-and-set against obs
// (redisWriteBack), fenced by obs's load lease when this call holds one
// (keyspace.LeaseWriteBackLua): then it lands unless another process has
// taken the lease over, and releases it.
func (c *Cache) writeBackObserved(ctx context.Context, cl *universal, key string, obs *observation, value []byte, ttl time.Duration) (bool, error) {
	h := obs.lease
	if h == nil {
		return c.redisWriteBack(ctx, cl, key, obs.sum, value, ttl)
	}
	ms := max(ttl.Milliseconds(), 1)
	n, err := leaseWriteBackScript.Run(ctx, cl, []string{key, h.key}, obs.sum, value, ms, h.token).Int64()
	if err == nil {
		h.done = true
	}
	return n == 1, err
}

// releaseLease gives up the lease h unless a write-back already did, so
// that a waiter takes over at once rather than after the lease's expiry.
// It runs even when ctx is cancelled (the lease must not outlive its load
// for nothing), bounded by SocketTimeout; failing, the lease expires.
func (c *Cache) releaseLease(ctx context.Context, h *leaseHold) {
	if h == nil || h.done {
		return
	}
	cl := c.client.Load()
	if cl == nil {
		return
	}
	octx, cancel := c.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := leaseReleaseScript.Run(octx, cl, []string{h.key}, h.token).Err(); err != nil {
		c.warn("cache: releasing the load lease failed; it expires", "key", h.key, "err", err)
	}
}
