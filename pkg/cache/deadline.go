package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Every call is bounded by SocketTimeout through its context. A
// context.WithTimeout per call costs a timer, the context and its Done
// channel (go-redis asks for it on every command): a measurable share of a
// remote hit. A caller whose context can never be cancelled
// (context.Background, a worker's context, context.WithoutCancel) gains
// nothing from a context of its own, so such calls share one: deadlines
// hands out contexts whose deadline is at most SocketTimeout away and less
// than a granule short of it, one new context per granule (at most 10ms).
// A cancellable caller's context still gets its own timeout, which must
// also end with the caller's.

// deadlines bounds calls by one duration.
type deadlines struct {
	d       time.Duration
	granule time.Duration

	mu  sync.Mutex // serialises replacing cur
	cur atomic.Pointer[sharedDeadline]
}

// sharedDeadline is a context.WithDeadline of context.Background, used by
// every call that starts while its deadline is within a granule of the
// call's own. It is never cancelled but by its deadline.
type sharedDeadline struct {
	ctx context.Context
	at  time.Time
	// cancel is never called: the context cancels itself, and frees its
	// timer, at its deadline; until then later calls may still use it.
	cancel context.CancelFunc
}

func newDeadlines(d time.Duration) *deadlines {
	return &deadlines{d: d, granule: min(d/64, 10*time.Millisecond)}
}

// bound returns ctx limited to the deadlines' duration from now.
func (dl *deadlines) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if t, ok := ctx.Deadline(); ok && time.Until(t) <= dl.d {
		return ctx, noop
	}
	if ctx.Done() != nil || dl.granule <= 0 {
		return context.WithTimeout(ctx, dl.d)
	}
	shared := dl.shared(time.Now())
	if ctx == context.Background() {
		return shared.ctx, noop // nothing of the caller's to keep
	}
	return &deadlineCtx{Context: ctx, deadline: shared.ctx}, noop
}

// shared returns a shared deadline no later than now+d and less than a
// granule earlier.
func (dl *deadlines) shared(now time.Time) *sharedDeadline {
	want := now.Add(dl.d)
	usable := func(s *sharedDeadline) bool {
		return s != nil && !s.at.After(want) && want.Sub(s.at) < dl.granule
	}
	if s := dl.cur.Load(); usable(s) {
		return s
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if s := dl.cur.Load(); usable(s) {
		return s
	}
	s := &sharedDeadline{at: want}
	s.ctx, s.cancel = context.WithDeadline(context.Background(), want)
	dl.cur.Store(s)
	return s
}

// deadlineCtx is a caller's context that cannot be cancelled, with the
// deadline, Done and Err of a shared deadline: the caller's values stay.
type deadlineCtx struct {
	context.Context // the caller's (its Done is nil)
	deadline        context.Context
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline.Deadline() }
func (c *deadlineCtx) Done() <-chan struct{}       { return c.deadline.Done() }
func (c *deadlineCtx) Err() error                  { return c.deadline.Err() }

// AfterFunc lets contexts derived from this one (context.WithCancel inside
// go-redis, say) follow its deadline without a goroutine each: the context
// package uses this method when a parent has it.
func (c *deadlineCtx) AfterFunc(f func()) func() bool { return context.AfterFunc(c.deadline, f) }
