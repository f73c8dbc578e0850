package cache_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// panicOnSecondGet is a hook on a Config.Client: it holds the reply of the
// first GET of key until release is closed, and panics in the second, as a
// faulty instrumentation hook might.
type panicOnSecondGet struct {
	key     string
	calls   atomic.Int64
	held    chan struct{}
	release chan struct{}
}

func (h *panicOnSecondGet) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *panicOnSecondGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); cmd.Name() != "get" || len(args) != 2 || args[1] != h.key {
			return next(ctx, cmd)
		}
		switch h.calls.Add(1) {
		case 1:
			err := next(ctx, cmd)
			close(h.held)
			<-h.release
			return err
		case 2:
			panic("hook panics")
		}
		return next(ctx, cmd)
	}
}

func (h *panicOnSecondGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A panic while a shared GET is sent (a hook of the user's Config.Client)
// reaches the callers that waited for it, as it would reach a caller that
// sent its own GET: it does not crash the process from a goroutine of the
// cache's, and the key is not wedged for later readers.
func TestReadCoalescingPanicReachesWaiters(t *testing.T) {
	const key = "user:1"
	rc := srv.Client()
	t.Cleanup(func() { rc.Close() })
	kp := testPrefix(t)
	h := &panicOnSecondGet{key: kp + ":" + key, held: make(chan struct{}), release: make(chan struct{})}
	rc.AddHook(h)
	c, err := cache.New(cache.Config{Client: rc, KeyPrefix: kp, DisableAutoPipeline: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Set(ctx, key, "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	first := readAsync(ctx, t, c, key, false)
	<-h.held
	waiter := make(chan any, 1)
	go func() {
		defer func() { waiter <- recover() }()
		var v string
		_, _ = c.Get(ctx, key, &v)
	}()
	waitFor(t, 10*time.Second, "a caller gathered behind the GET in flight", func() bool {
		w, _ := cache.ReadWaiters(c, key)
		return w == 1
	})
	close(h.release)
	if r := <-first; r.err != nil || r.v != "v" {
		t.Errorf("first caller: %+v, want v", r)
	}
	if p := <-waiter; p == nil || !strings.Contains(fmt.Sprint(p), "hook panics") {
		t.Errorf("waiter recovered %v, want the hook's panic", p)
	}
	var v string
	if found, err := c.Get(ctx, key, &v); err != nil || !found || v != "v" {
		t.Errorf("Get after the panic: %v %q %v, want v", found, v, err)
	}
}
