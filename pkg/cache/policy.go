package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// The policy of the KeyPrefix lives in the hash keyspace.Space.PolicyKey,
// written by the operator; the generations of its prefixes in
// keyspace.Space.GenKey, bumped by the operator's runs and by this package's
// own invalidations (see keyspace/gen.go and docs/generations.md). The cache
// reads both at Connect, re-reads them when an event on EventsChannel says so
// (or the subscription reconnects, as events may have been missed), and every
// PolicyRefresh as a fallback; an invalidated event carries the new
// generation itself.
//
// Generations only rise here, whatever the hash says: an entry that was stale
// once must never be served again, even if the hash is deleted or rewritten.
// And no entry is served before the generations are known: until a read of
// the hash has succeeded, and again after the events subscription was lost
// (events may have been missed), the first read loads them (knowGenerations).

// refreshPolicy reads the policy and the generations, in one round trip, and
// applies them. The generations script creates the hash's base if it is
// missing, so a lost hash turns every older entry stale.
func (c *Cache) refreshPolicy(ctx context.Context, cl redis.UniversalClient) error {
	// Serialised, so a slow read cannot overwrite the TTLs of a newer one.
	c.policyMu.Lock()
	defer c.policyMu.Unlock()
	epoch := c.genEpoch.Load() // before the read: see knowGenerations
	sent := mono.Now()         // every bump before this is in the reply
	octx, cancel := c.opCtx(ctx)
	var (
		pol *redis.MapStringStringCmd
		gen *redis.Cmd
	)
	_, err := cl.Pipelined(octx, func(p redis.Pipeliner) error {
		pol = p.HGetAll(octx, c.space.PolicyKey())
		gen = c.space.EnsureGenerations(octx, p)
		return nil
	})
	cancel()
	if err != nil {
		return err
	}
	gens, err := keyspace.ParseGenerations(gen)
	if err != nil {
		return err
	}
	fields := pol.Val()
	for prefix, raw := range fields {
		p, err := keyspace.ParsePrefixPolicy(raw)
		if err != nil {
			c.warn("cache: ignoring malformed policy entry", "prefix", prefix, "err", err)
			continue
		}
		st := c.addState(prefix, true)
		st.ttl.Store(int64(max(p.TTL(), 0)))
		st.near.Store(nearChoice(p.NearCache))
	}
	for name, st := range *c.states.Load() {
		if _, ok := fields[name]; !ok {
			st.ttl.Store(0) // the prefix left the policy: back to DefaultTTL
			st.near.Store(nearUnset)
		}
	}
	c.applyGenerations(gens)
	c.genLoaded.Store(max(c.genLoaded.Load(), epoch)) // policyMu serialises the writers
	c.renewGenLease(sent)
	c.reassertGenerations(ctx, cl, gens)
	return nil
}

// reassertGenerations writes back the generations this process knows to be
// higher than the hash's: the hash lost a bump (a failover before it was
// replicated; a hash recreated on a server whose clock is behind). Every
// process that read the older hash raises its own generations at once.
func (c *Cache) reassertGenerations(ctx context.Context, cl redis.UniversalClient, gens keyspace.Generations) {
	var floor map[string]int64
	for name, st := range *c.states.Load() {
		if g := st.gen.Load(); g > gens.Of(name) && name != otherPrefix {
			if floor == nil {
				floor = map[string]int64{}
			}
			floor[name] = g
		}
	}
	if floor == nil {
		return
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	if _, err := c.space.RaiseGenerations(octx, cl, floor); err != nil && ctx.Err() == nil {
		c.warn("cache: cannot restore generations the hash lost", "err", err)
	}
}

// genKnown reports whether the generations this process holds may be
// trusted now: read since the cache started and since it last lost the
// events subscription (an event may have been missed), and heard from Redis
// within the events lease (a PING of the subscription answered, or a read
// of the generations, sent less than Config.EventsLease ago). Two atomic
// loads and a clock read.
func (c *Cache) genKnown() bool {
	return c.cfg.PolicyRefresh < 0 ||
		(c.genLoaded.Load() >= c.genEpoch.Load() && mono.Now() < c.genLeaseEnd.Load())
}

// renewGenLease extends the events lease after an answer to a command sent
// at sent (mono.Now): every invalidation published before it has been
// applied.
func (c *Cache) renewGenLease(sent int64) {
	end := sent + int64(c.cfg.EventsLease)
	for {
		cur := c.genLeaseEnd.Load()
		if end <= cur || c.genLeaseEnd.CompareAndSwap(cur, end) {
			return
		}
	}
}

// knowGenerations returns once the generations are known (genKnown); if
// they are not, the first caller reads them, concurrent callers share its
// read, each waiting at most as its ctx and SocketTimeout allow. An error is
// a Redis failure: the caller fails open.
func (c *Cache) knowGenerations(ctx context.Context, cl *universal) error {
	if c.genKnown() {
		return nil
	}
	c.genMu.Lock()
	call := c.genCall
	if call == nil {
		call = &genCall{done: make(chan struct{})}
		c.genCall = call
		go func() {
			// The caller's values, not its cancellation: others share the read.
			lctx, cancel := c.opCtx(context.WithoutCancel(ctx))
			call.err = c.refreshPolicy(lctx, cl)
			cancel()
			c.genMu.Lock()
			c.genCall = nil
			c.genMu.Unlock()
			close(call.done)
		}()
	}
	c.genMu.Unlock()
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	select {
	case <-call.done:
		if call.err != nil {
			return fmt.Errorf("read generations: %w", call.err)
		}
		return nil
	case <-octx.Done():
		return octx.Err()
	}
}

// genCall is a read of the generations shared by the callers of
// knowGenerations.
type genCall struct {
	done chan struct{}
	err  error
}

func (c *Cache) refreshPolicyLogged(ctx context.Context, cl redis.UniversalClient) {
	if err := c.refreshPolicy(ctx, cl); err != nil && ctx.Err() == nil {
		c.warn("cache: cannot re-read the policy", "err", err)
	}
}

// A prefix's near-cache choice in the policy.
const (
	nearUnset int32 = iota // as Config.NearCache says
	nearOn
	nearOff
)

func nearChoice(b *bool) int32 {
	switch {
	case b == nil:
		return nearUnset
	case *b:
		return nearOn
	default:
		return nearOff
	}
}

func raiseGeneration(st *prefixState, gen int64) {
	for {
		old := st.gen.Load()
		if gen <= old || st.gen.CompareAndSwap(old, gen) {
			return
		}
	}
}

// handleEvent applies one message of the events channel.
func (c *Cache) handleEvent(ctx context.Context, cl redis.UniversalClient, payload string) {
	ev, err := keyspace.ParseEvent(payload)
	if err != nil {
		c.warn("cache: ignoring malformed policy event", "err", err)
		return
	}
	switch ev.Type {
	case keyspace.EventInvalidated:
		// Applied from the message itself, without a round trip: this is
		// what makes an invalidation visible within milliseconds.
		raiseGeneration(c.addState(ev.Prefix, true), ev.Generation)
	case keyspace.EventPolicyChanged:
		c.refreshPolicyLogged(ctx, cl)
	}
}

// eventsClient returns the client the events subscription uses: cl, or one
// dialing eventsAddr (tests).
func (c *Cache) eventsClient(cl *universal) (redis.UniversalClient, error) {
	if c.eventsAddr == "" {
		return cl, nil
	}
	opts, err := c.standaloneOptions()
	if err != nil {
		return nil, err
	}
	opts.Addr = c.eventsAddr
	return redis.NewClient(opts), nil
}

// subscribe follows the events channel (on sub; cl re-reads the policy)
// until ctx ends, reconnecting as needed.
//
// The subscription is PINGed every EventsLease/4, the PING carrying its send
// time S. Redis answers a PING on the connection after every message
// published before it, and the messages are applied in order here, so the
// answer (which echoes S) proves that every invalidation that completed
// before S has been applied: it renews the events lease (renewGenLease) to
// S+EventsLease. Without such answers the generations stop being known and
// the next read re-reads them. A PING left unanswered for SocketTimeout
// means a dead connection: it is replaced.
func (c *Cache) subscribe(ctx context.Context, cl, sub redis.UniversalClient) {
	var (
		mu sync.Mutex
		ps *redis.PubSub
	)
	open := func() *redis.PubSub {
		mu.Lock()
		defer mu.Unlock()
		if ps != nil {
			_ = ps.Close()
			if ctx.Err() != nil {
				return ps // stopping: no new connection to leak
			}
		}
		ps = sub.Subscribe(ctx, c.space.EventsChannel())
		return ps
	}
	// A blocked receive does not watch ctx; closing the PubSub ends it.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		_ = ps.Close()
	})
	defer stop()
	cur := open()

	interval := c.cfg.EventsLease / 4
	var (
		pings    []int64 // send times of the PINGs not answered yet, oldest first
		lastPing = -int64(interval)
		backoff  time.Duration
	)
	for {
		if now := mono.Now(); now-lastPing >= int64(interval) {
			if len(pings) > 0 && now-pings[0] > int64(c.timeout) {
				// Silent for SocketTimeout: a peer gone without a FIN, say.
				c.genEpoch.Add(1) // events may be lost: see knowGenerations
				cur, pings, lastPing = open(), nil, now
				continue
			}
			lastPing = now
			if cur.Ping(ctx, strconv.FormatInt(now, 10)) == nil {
				pings = append(pings, now)
			}
		}
		msg, err := cur.ReceiveTimeout(ctx, interval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// go-redis reconnects on the next receive; wait a little first
			// so a down server is not hammered. (PINGs sent on a lost
			// connection stay in pings until a newer one is answered.)
			if backoff == 0 {
				c.genEpoch.Add(1) // events may be lost: see knowGenerations
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// Confirmed after every (re)connect: catch up on what was
				// published while we were not listening.
				c.refreshPolicyLogged(ctx, cl)
			}
		case *redis.Pong:
			// The answer names its PING, so one sent on an older
			// connection, or lost, can never renew for another.
			if sent, err := strconv.ParseInt(m.Payload, 10, 64); err == nil {
				c.renewGenLease(sent)
				for len(pings) > 0 && pings[0] <= sent {
					pings = pings[1:]
				}
			}
		case *redis.Message:
			c.handleEvent(ctx, cl, m.Payload)
		}
	}
}
