package cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"runtime/debug"
	"sync"
)

// Read coalescing: concurrent remote reads of one key in this process share
// GETs (Get, GetOrLoad, Cached and the middleware all read through
// getEntry), without ever returning a reply that Redis produced before the
// caller arrived.
//
// A caller that finds no GET of its key in flight sends its own, on its own
// goroutine, as it would without coalescing: the fast path adds a map insert
// and delete under a shard lock. A caller that arrives while one is in
// flight does not join it: Redis may have answered that GET before the caller
// arrived, and before a write or invalidation that returned meanwhile, in
// this process or in another, so sharing its reply would break
// read-your-writes and the "every process reads a Delete at once" of
// docs/consistency.md. It waits instead for the next GET of the key, which
// is sent as soon as the one in flight completes and which every caller
// arriving meanwhile shares. Every reply a caller gets was read after it
// arrived, so no write or invalidation needs a sequence to fence it, and
// each caller judges the reply (generation, decode, the write-back's
// observation) itself, as if it had read it alone. Under N concurrent
// callers of one key, one GET of it is on the wire at a time.
//
// Each caller waits for the shared GET only as long as its own context
// (bounded by SocketTimeout) allows; the GET is sent by a goroutine of its
// own, bounded by SocketTimeout, and cancelled when no caller waits for it
// any more. The shared reply is read-only: the payload handed to the codec
// and to the middleware aliases it (Codec.Unmarshal must not modify data).

// readShards is how many locks the keys in flight are spread over.
const readShards = 32

// readGroup holds the GETs in flight, by Redis key.
type readGroup struct {
	seed   maphash.Seed
	shards [readShards]readShard
}

type readShard struct {
	mu sync.Mutex
	// m holds every key with a GET in flight, and the round gathering the
	// callers that arrived since it was sent (nil: none yet).
	m map[string]*readRound
	_ [48]byte // with mu and m, a 64-byte cache line each
}

// readRound is one shared GET: the callers waiting for it, then its reply.
type readRound struct {
	done    chan struct{} // closed once b and err are set
	b       []byte
	err     error
	waiters int // guarded by the shard's mu
	// ctx carries the first caller's values (a redisotel hook's parent
	// span, say), not its cancellation; cancel ends it once nobody waits.
	ctx    context.Context
	cancel context.CancelFunc
}

func (g *readGroup) init() {
	g.seed = maphash.MakeSeed()
	for i := range g.shards {
		g.shards[i].m = map[string]*readRound{}
	}
}

func (g *readGroup) shard(key string) *readShard {
	return &g.shards[maphash.String(g.seed, key)%readShards]
}

// sharedGet is redisGet of key (a Redis key), coalesced with the other
// callers reading it (see above). ctx bounds the caller's wait.
func (c *Cache) sharedGet(ctx context.Context, cl *universal, key string) ([]byte, error) {
	if c.cfg.DisableReadCoalescing {
		return c.redisGet(ctx, cl, key)
	}
	sh := c.reads.shard(key)
	sh.mu.Lock()
	r, busy := sh.m[key]
	if !busy {
		sh.m[key] = nil
		sh.mu.Unlock()
		return c.leadGet(ctx, cl, sh, key)
	}
	if r == nil {
		r = &readRound{done: make(chan struct{})}
		r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
		sh.m[key] = r
	}
	r.waiters++
	sh.mu.Unlock()
	select {
	case <-r.done:
		if p, ok := r.err.(*roundPanic); ok {
			panic(p) // as it would have reached a caller that sent its own GET
		}
		return r.b, r.err
	case <-ctx.Done():
	}
	sh.mu.Lock()
	r.waiters--
	if r.waiters == 0 {
		r.cancel()
		if sh.m[key] == r {
			// Not sent yet: the key's next caller starts a new round.
			sh.m[key] = nil
		}
	}
	sh.mu.Unlock()
	return nil, ctx.Err()
}

// leadGet sends the GET of a caller that found none in flight, then has the
// callers that gathered meanwhile served.
func (c *Cache) leadGet(ctx context.Context, cl *universal, sh *readShard, key string) ([]byte, error) {
	defer c.nextRound(sh, key) // deferred: even a panicking hook must not wedge the key
	return c.redisGet(ctx, cl, key)
}

// nextRound ends the GET of key in flight: the round gathered behind it, if
// any, is sent by a goroutine of its own; otherwise the key is idle.
func (c *Cache) nextRound(sh *readShard, key string) {
	sh.mu.Lock()
	if sh.m[key] == nil {
		delete(sh.m, key)
		sh.mu.Unlock()
		return
	}
	sh.mu.Unlock()
	go c.sendRounds(sh, key)
}

// sendRounds sends the round gathered behind key's last GET, publishes its
// reply, and goes on with the rounds that gather meanwhile until one finds
// no caller.
func (c *Cache) sendRounds(sh *readShard, key string) {
	for {
		// Callers that come back soon (those just served, say) join the
		// round still gathering: letting them run first makes fewer,
		// fuller rounds. However long it gathers, a round's callers all
		// arrived before it is sent.
		runtime.Gosched()
		sh.mu.Lock()
		r := sh.m[key]
		if r == nil {
			delete(sh.m, key)
			sh.mu.Unlock()
			return
		}
		sh.m[key] = nil // r is in flight: later callers gather behind it
		sh.mu.Unlock()
		c.sendRound(r, key)
	}
}

// sendRound sends r's GET and publishes its reply. A panic while sending (a
// hook of Config.Client, say) is handed to r's callers, each of which
// panics with it on its own goroutine, as it would have without
// coalescing: on this goroutine it would crash the process.
func (c *Cache) sendRound(r *readRound, key string) {
	defer func() {
		if p := recover(); p != nil {
			r.b, r.err = nil, &roundPanic{value: p, stack: debug.Stack()}
		}
		r.cancel()
		close(r.done)
	}()
	cl := c.client.Load()
	if cl == nil {
		r.err = c.unavailable()
		return
	}
	octx, cancel := c.opCtx(r.ctx)
	defer cancel()
	r.b, r.err = c.redisGet(octx, cl, key)
}

// roundPanic is a panic recovered while a shared GET was sent (sendRound).
type roundPanic struct {
	value any
	stack []byte
}

func (p *roundPanic) Error() string {
	return fmt.Sprintf("cache: shared GET panicked: %v\n%s", p.value, p.stack)
}
