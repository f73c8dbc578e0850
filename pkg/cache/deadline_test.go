package cache

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// A bounded context ends within the duration, never after it, and less than
// a granule before; it keeps the caller's values and cancellation.
func TestDeadlinesBound(t *testing.T) {
	t.Parallel()
	const d = 640 * time.Millisecond
	dl := newDeadlines(d)
	if dl.granule != 10*time.Millisecond {
		t.Fatalf("granule %v", dl.granule)
	}
	valued := context.WithValue(context.Background(), ctxKey{}, "v")
	cancellable, cancelParent := context.WithCancel(valued)
	defer cancelParent()
	for name, parent := range map[string]context.Context{
		"background":  context.Background(),
		"values":      valued,
		"cancellable": cancellable,
		"todo":        context.TODO(),
	} {
		before := time.Now()
		ctx, cancel := dl.bound(parent)
		after := time.Now()
		dead, ok := ctx.Deadline()
		switch {
		case !ok:
			t.Errorf("%s: no deadline", name)
		case dead.After(after.Add(d)):
			t.Errorf("%s: deadline %v after the call's %v", name, dead.Sub(before), d)
		case dead.Before(before.Add(d - dl.granule)):
			t.Errorf("%s: deadline %v, more than a granule short of %v", name, dead.Sub(before), d)
		}
		if want := parent.Value(ctxKey{}); ctx.Value(ctxKey{}) != want {
			t.Errorf("%s: value %v, want %v", name, ctx.Value(ctxKey{}), want)
		}
		if ctx.Err() != nil || ctx.Done() == nil {
			t.Errorf("%s: Err %v, Done %v before the deadline", name, ctx.Err(), ctx.Done())
		}
		cancel()
	}

	// Calls within a granule share one context; a later one gets another.
	a, _ := dl.bound(context.Background())
	b, _ := dl.bound(context.Background())
	if a != b {
		t.Error("two calls in one granule got two contexts")
	}
	time.Sleep(2 * dl.granule) // a granule must pass; nothing to wait for
	if c, _ := dl.bound(context.Background()); c == a {
		t.Error("a call two granules later reused the shared context")
	}

	// The cancellable caller's own cancellation still ends the call.
	ctx, cancel := dl.bound(cancellable)
	defer cancel()
	cancelParent()
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
		t.Fatal("cancelling the caller did not end the bounded context")
	}
}

// The shared contexts end at their deadline, as does anything derived from
// them inside go-redis.
func TestDeadlinesExpire(t *testing.T) {
	t.Parallel()
	const d = 64 * time.Millisecond
	dl := newDeadlines(d)
	start := time.Now()
	ctx, cancel := dl.bound(context.WithValue(context.Background(), ctxKey{}, 1))
	defer cancel()
	derived, cancelDerived := context.WithCancel(ctx)
	defer cancelDerived()
	for _, c := range []context.Context{ctx, derived} {
		select {
		case <-c.Done():
		case <-time.After(time.Second):
			t.Fatal("bounded context not done after a second")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v", c.Err())
		}
	}
	if elapsed := time.Since(start); elapsed > d+50*time.Millisecond {
		t.Errorf("done after %v, want about %v", elapsed, d)
	}
	// A caller deadline shorter than d is kept as it is.
	short, cancelShort := context.WithTimeout(context.Background(), d/2)
	defer cancelShort()
	if got, _ := dl.bound(short); got != short {
		t.Error("a shorter caller deadline was replaced")
	}
}
