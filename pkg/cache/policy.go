package cache

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/internal/keyspace"
)

// The policy of the KeyPrefix lives in the hash keyspace.Space.PolicyKey,
// written by the operator. The cache reads it at Connect, re-reads it when an
// event on EventsChannel says so (or the subscription reconnects, as events
// may have been missed), and every PolicyRefresh as a fallback.
//
// Generations only rise here, whatever the hash says: an entry that was stale
// once must never be served again, even if the hash is deleted or rewritten.

// refreshPolicy reads the policy hash and applies it.
func (c *Cache) refreshPolicy(ctx context.Context, cl redis.UniversalClient) error {
	// Serialised, so a slow read cannot overwrite the TTLs of a newer one.
	c.policyMu.Lock()
	defer c.policyMu.Unlock()
	octx, cancel := c.opCtx(ctx)
	fields, err := cl.HGetAll(octx, c.space.PolicyKey()).Result()
	cancel()
	if err != nil {
		return err
	}
	for prefix, raw := range fields {
		p, err := keyspace.ParsePrefixPolicy(raw)
		if err != nil {
			c.warn("cache: ignoring malformed policy entry", "prefix", prefix, "err", err)
			continue
		}
		st := c.addState(prefix, true)
		raiseGeneration(st, p.Generation)
		st.ttl.Store(int64(max(p.TTL(), 0)))
		st.near.Store(nearChoice(p.NearCache))
	}
	for name, st := range *c.states.Load() {
		if _, ok := fields[name]; !ok {
			st.ttl.Store(0) // the prefix left the policy: back to DefaultTTL
			st.near.Store(nearUnset)
		}
	}
	return nil
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

// subscribe follows the events channel until ctx ends, reconnecting as needed.
func (c *Cache) subscribe(ctx context.Context, cl redis.UniversalClient) {
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
		ps = cl.Subscribe(ctx, c.space.EventsChannel())
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

	// Silence is checked with a PING; a connection that does not answer one
	// within a further interval is dead (a peer gone without a FIN, say) and
	// is replaced.
	interval := min(c.cfg.PolicyRefresh, 30*time.Second)
	pinged := false
	backoff := time.Duration(0)
	for {
		msg, err := cur.ReceiveTimeout(ctx, interval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					cur, pinged = open(), false
				} else if cur.Ping(ctx) == nil {
					pinged = true
				}
				continue
			}
			// go-redis reconnects on the next receive; wait a little first
			// so a down server is not hammered.
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff, pinged = 0, false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// Confirmed after every (re)connect: catch up on what was
				// published while we were not listening.
				c.refreshPolicyLogged(ctx, cl)
			}
		case *redis.Message:
			c.handleEvent(ctx, cl, m.Payload)
		}
	}
}
