// Package flight runs one load per key at a time within a process: the
// stampede protection in front of GetOrLoad, Cached and the middleware.
package flight

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
)

// Group runs one load per key at a time. Unlike x/sync/singleflight,
// every caller can give up on its own, and the load is cancelled when all
// have. A caller that has seen an invalidation the load in flight has not
// (a higher seq: the cache counts invalidations per prefix) starts a load of its own rather
// than receive what was read before it.
type Group struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	seq     int64
	done    chan struct{}
	val     any
	err     error
	waiters int // guarded by Group.mu
	cancel  context.CancelFunc
}

// A PanicError carries a load's panic to every waiter, which re-panics in its
// own goroutine (where an HTTP server's recovery, say, can catch it).
type PanicError struct {
	value any
	stack []byte
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("cache: load panicked: %v\n%s", p.value, p.stack)
}

// Do runs fn for key, or joins the flight in progress for key when its seq
// is not older than seq, and returns its result once it is done or ctx ends.
// A panic in fn is re-raised, as a *PanicError, in every waiting goroutine.
func (g *Group) Do(ctx context.Context, key string, seq int64, fn func(context.Context) (any, error)) (any, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f, ok := g.m[key]
	if !ok || f.seq < seq {
		// A superseded flight goes on for its waiters; run only removes
		// it from the map while it is still the current one.
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{seq: seq, done: make(chan struct{}), cancel: cancel}
		g.m[key] = f
		go g.run(lctx, f, key, fn)
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		if p, ok := f.err.(*PanicError); ok {
			panic(p)
		}
		return f.val, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants the result any more: stop the load, and let the
			// next caller start afresh rather than join a cancelled one.
			f.cancel()
			if g.m[key] == f {
				delete(g.m, key)
			}
		}
		g.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (g *Group) run(ctx context.Context, f *flight, key string, fn func(context.Context) (any, error)) {
	defer func() {
		if r := recover(); r != nil {
			f.val, f.err = nil, &PanicError{value: r, stack: debug.Stack()}
		}
		f.cancel()
		g.mu.Lock()
		if g.m[key] == f {
			delete(g.m, key)
		}
		g.mu.Unlock()
		close(f.done)
	}()
	f.val, f.err = fn(ctx)
}

// Waiting returns how many callers wait for key's load (for tests).
func (g *Group) Waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f.waiters
	}
	return 0
}
