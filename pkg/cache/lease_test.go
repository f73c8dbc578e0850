package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// The multi-process tests re-run this test binary as children
// (TestLoadLeaseChild), which read their part from these variables.
const (
	leaseChildEnv = "CACHEPLANE_LEASE_CHILD" // the child's role: "load" or "hang"
	leaseModeEnv  = "CACHEPLANE_LEASE_MODE"  // cache.ModeStandalone or cache.ModeCluster
	leaseAddrEnv  = "CACHEPLANE_LEASE_ADDR"  // the URL, or the cluster's addresses joined by ','
	leaseKPEnv    = "CACHEPLANE_LEASE_KP"
	leaseTTLEnv   = "CACHEPLANE_LEASE_LEASE" // Config.LoadLease
)

// leaseValueOf is what every loader of the lease tests returns for a key.
func leaseValueOf(key string) string { return "value of " + key }

// leaseRedis is where a lease test's processes meet: the topology, and a
// plain client that counts loads ("<kp>:loads" is not a cache key of the
// test: the caches use key "k:1") and runs the start barrier.
type leaseRedis struct {
	mode, addr string
	raw        redis.UniversalClient
}

func (r leaseRedis) config(kp string, lease time.Duration) cache.Config {
	cfg := cache.Config{Mode: r.mode, KeyPrefix: kp, LoadLease: lease, DefaultTTL: time.Minute}
	if r.mode == cache.ModeCluster {
		cfg.Addrs = strings.Split(r.addr, ",")
	} else {
		cfg.URL = r.addr
	}
	return cfg
}

func standaloneLeaseRedis(t *testing.T) leaseRedis {
	return leaseRedis{mode: cache.ModeStandalone, addr: srv.URL(0), raw: rawClient(t)}
}

func clusterLeaseRedis(t *testing.T, cl *redistest.Cluster) leaseRedis {
	rc := cl.Client()
	t.Cleanup(func() { rc.Close() })
	return leaseRedis{mode: cache.ModeCluster, addr: strings.Join(cl.Addrs(), ","), raw: rc}
}

// TestLoadLeaseChild is one process of the multi-process tests; it is
// skipped unless a parent test started it. Role "load": 16 goroutines
// GetOrLoad key "k:1" with a 300 ms loader and check they get its value;
// "hang": one GetOrLoad whose loader never returns (the parent kills the
// process). Every load INCRs "<kp>:loads" first.
func TestLoadLeaseChild(t *testing.T) {
	role := os.Getenv(leaseChildEnv)
	if role == "" {
		t.Skip("runs as a child of the LoadLease tests")
	}
	lease, err := time.ParseDuration(os.Getenv(leaseTTLEnv))
	if err != nil {
		t.Fatal(err)
	}
	r := leaseRedis{mode: os.Getenv(leaseModeEnv), addr: os.Getenv(leaseAddrEnv)}
	if r.mode == cache.ModeCluster {
		r.raw = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(r.addr, ",")})
	} else {
		opt, err := redis.ParseURL(r.addr)
		if err != nil {
			t.Fatal(err)
		}
		r.raw = redis.NewClient(opt)
	}
	defer r.raw.Close()
	kp := os.Getenv(leaseKPEnv)
	c, err := cache.New(r.config(kp, lease))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	load := func(context.Context) (string, error) {
		if err := r.raw.Incr(ctx, kp+":loads").Err(); err != nil {
			return "", err
		}
		if role == "hang" {
			r.raw.Set(ctx, kp+":hanging", "1", 0)
			select {} // until killed
		}
		time.Sleep(300 * time.Millisecond) // the slow source
		return leaseValueOf("k:1"), nil
	}
	// The start barrier: every process is connected before any loads.
	if err := r.raw.Incr(ctx, kp+":ready").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the start signal", func() bool { return r.raw.Exists(ctx, kp+":go").Val() == 1 })
	n := 16
	if role == "hang" {
		n = 1
	}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := cache.GetOrLoad(ctx, c, "k:1", 0, load)
			if err != nil || v != leaseValueOf("k:1") {
				t.Errorf("GetOrLoad = %q, %v", v, err)
			}
		}()
	}
	wg.Wait()
}

// leaseChild is a started child process and its output; done closes when
// it has exited, with err its exit status.
type leaseChild struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// lockedBuffer is a bytes.Buffer the child's output can be read from while
// the child writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startLeaseChild(t *testing.T, r leaseRedis, kp, role string, lease time.Duration) *leaseChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadLeaseChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), leaseChildEnv+"="+role, leaseModeEnv+"="+r.mode,
		leaseAddrEnv+"="+r.addr, leaseKPEnv+"="+kp, leaseTTLEnv+"="+lease.String())
	ch := &leaseChild{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = ch.out, ch.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-ch.done
	})
	return ch
}

func (ch *leaseChild) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

func (ch *leaseChild) wait(t *testing.T) {
	t.Helper()
	<-ch.done
	if ch.err != nil {
		t.Errorf("child %d: %v\n%s", ch.cmd.Process.Pid, ch.err, ch.out)
	}
}

// startLeaseChildren starts n children of role and lets them load once all
// are connected.
func startLeaseChildren(t *testing.T, r leaseRedis, kp, role string, n int, lease time.Duration) []*leaseChild {
	t.Helper()
	ctx := context.Background()
	for _, k := range []string{kp + ":ready", kp + ":go"} { // two slots on a cluster
		if err := r.raw.Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	children := make([]*leaseChild, n)
	for i := range children {
		children[i] = startLeaseChild(t, r, kp, role, lease)
	}
	waitFor(t, 2*time.Minute, "the children to connect", func() bool {
		for _, ch := range children {
			if ch.exited() {
				t.Fatalf("child %d exited before the start: %v\n%s", ch.cmd.Process.Pid, ch.err, ch.out)
			}
		}
		v, _ := r.raw.Get(ctx, kp+":ready").Int()
		return v == n
	})
	r.raw.Set(ctx, kp+":go", "1", 0)
	return children
}

func leaseLoads(t *testing.T, r leaseRedis, kp string) int {
	t.Helper()
	n, err := r.raw.Get(context.Background(), kp+":loads").Int()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return n
}

// leaseProcesses: 4 processes × 16 goroutines GetOrLoad one missing key
// with a 300 ms loader; the key is loaded exactly once in all.
func leaseProcesses(t *testing.T, r leaseRedis) {
	kp := testPrefix(t)
	for _, ch := range startLeaseChildren(t, r, kp, "load", 4, 30*time.Second) {
		ch.wait(t)
	}
	if n := leaseLoads(t, r, kp); n != 1 {
		t.Fatalf("4 processes × 16 goroutines loaded the key %d times, want once", n)
	}
}

// leaseHolderKilled: the holder is SIGKILLed mid-load; the processes
// waiting for it take the lease over once it expires, and one of them
// loads.
func leaseHolderKilled(t *testing.T, r leaseRedis) {
	kp := testPrefix(t)
	const lease = 2 * time.Second
	ctx := context.Background()
	holder := startLeaseChildren(t, r, kp, "hang", 1, lease)[0]
	waitFor(t, time.Minute, "the holder to load", func() bool {
		return r.raw.Exists(ctx, kp+":hanging").Val() == 1
	})
	lk, _ := keyspace.New(kp).LeaseKey("k:1")
	if r.raw.Exists(ctx, lk).Val() != 1 {
		t.Fatalf("the holder's lease %q is not there", lk)
	}
	waiters := startLeaseChildren(t, r, kp, "load", 2, lease)
	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-holder.done
	for _, ch := range waiters {
		ch.wait(t)
	}
	if n := leaseLoads(t, r, kp); n != 2 {
		t.Fatalf("%d loads; want 2: the killed holder's and one after its lease expired", n)
	}
}

// TestLoadLeaseProcesses runs the multi-process tests on one redis-server.
func TestLoadLeaseProcesses(t *testing.T) {
	r := standaloneLeaseRedis(t)
	t.Run("OneLoad", func(t *testing.T) { leaseProcesses(t, r) })
	t.Run("HolderKilled", func(t *testing.T) { leaseHolderKilled(t, r) })
}

// TestLoadLeaseCluster runs the lease tests on a 3-master Redis Cluster.
func TestLoadLeaseCluster(t *testing.T) {
	cl, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r := clusterLeaseRedis(t, cl)
	t.Run("OneLoad", func(t *testing.T) { leaseProcesses(t, r) })
	t.Run("HolderKilled", func(t *testing.T) { leaseHolderKilled(t, r) })
	t.Run("SlowHolder", func(t *testing.T) { leaseSlowHolder(t, r) })
	t.Run("ACL", func(t *testing.T) {
		kp := testPrefix(t)
		u := redistest.CacheUser("lease", "lease-password", kp)
		if err := cl.SetUser(u); err != nil {
			t.Fatal(err)
		}
		cfg := r.config(kp, time.Minute)
		cfg.Username, cfg.Password = u.Name, u.Password
		caches := []*cache.Cache{connectTopology(t, cfg), connectTopology(t, cfg)}
		if n := loadFromAll(t, caches, "k:{1}", 200*time.Millisecond, nil); n != 1 {
			t.Errorf("%d loads, want 1", n)
		}
		noACLDenials(t, u.Name, cl.Nodes...)
	})
}

// loadFromAll has 8 goroutines per cache GetOrLoad key at once, with a
// loader that takes d and returns loadErr or the key's value, checks what
// each gets, and returns how many loads ran.
func loadFromAll(t *testing.T, caches []*cache.Cache, key string, d time.Duration, loadErr error) int {
	t.Helper()
	var loads atomic.Int32
	var wg sync.WaitGroup
	for _, c := range caches {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := cache.GetOrLoad(context.Background(), c, key, 0, func(context.Context) (string, error) {
					loads.Add(1)
					time.Sleep(d)
					if loadErr != nil {
						return "", loadErr
					}
					return leaseValueOf(key), nil
				})
				switch {
				case errors.Is(loadErr, cache.ErrNoValue) && !errors.Is(err, cache.ErrNoValue):
					// The callers served the holder's "no value" get the
					// cached one's error, as in any other process.
					t.Errorf("GetOrLoad(%q) = %q, %v; want %v", key, v, err, cache.ErrNoValue)
				case loadErr != nil && !errors.Is(loadErr, cache.ErrNoValue) && !errors.Is(err, loadErr):
					t.Errorf("GetOrLoad(%q) = %q, %v; want %v", key, v, err, loadErr)
				case loadErr == nil && (err != nil || v != leaseValueOf(key)):
					t.Errorf("GetOrLoad(%q) = %q, %v", key, v, err)
				}
			}()
		}
	}
	wg.Wait()
	return int(loads.Load())
}

// leaseSlowHolder: a holder whose load outlasts its lease stores nothing,
// neither while the next holder loads (whose value then lands) nor after
// that one stored; alone, it stores.
func leaseSlowHolder(t *testing.T, r leaseRedis) {
	for _, key := range []string{"k:1", "k:{1}:x"} {
		t.Run(key, func(t *testing.T) {
			kp := testPrefix(t)
			ctx := context.Background()
			// The slow holder's lease runs out while it loads; the next
			// holder's outlasts the test.
			slow := connectTopology(t, r.config(kp, 200*time.Millisecond))
			next := connectTopology(t, r.config(kp, time.Minute))
			lk, _ := keyspace.New(kp).LeaseKey(key)
			dk := keyspace.New(kp).DataKey(key)

			for _, nextFirst := range []bool{false, true} {
				r.raw.Del(ctx, dk)
				release, started := make(chan struct{}), make(chan struct{})
				slowDone := make(chan string)
				go func() {
					v, err := cache.GetOrLoad(ctx, slow, key, 0, func(context.Context) (string, error) {
						close(started) // holding the lease
						<-release
						return "old", nil
					})
					if err != nil {
						t.Error(err)
					}
					slowDone <- v
				}()
				<-started
				waitFor(t, 10*time.Second, "the lease to expire", func() bool { return r.raw.Exists(ctx, lk).Val() == 0 })

				nextRelease, nextStarted := make(chan struct{}), make(chan struct{})
				nextDone := make(chan string)
				go func() {
					v, err := cache.GetOrLoad(ctx, next, key, 0, func(context.Context) (string, error) {
						close(nextStarted)
						<-nextRelease
						return "new", nil
					})
					if err != nil {
						t.Error(err)
					}
					nextDone <- v
				}()
				<-nextStarted
				if r.raw.Exists(ctx, lk).Val() != 1 {
					t.Fatal("the next holder loads without the lease")
				}
				if nextFirst {
					close(nextRelease)
					if v := <-nextDone; v != "new" {
						t.Fatalf("next holder got %q", v)
					}
					close(release)
				} else {
					close(release) // lands while the next holder loads
					if v := <-slowDone; v != "old" {
						t.Fatalf("slow holder's callers got %q, want its own load", v)
					}
					close(nextRelease)
				}
				if nextFirst {
					<-slowDone
				} else {
					<-nextDone
				}
				var got string
				if _, err := next.Get(ctx, key, &got); err != nil || got != "new" {
					t.Errorf("next holder first: %v: stored %q (%v), want the next holder's \"new\"", nextFirst, got, err)
				}
			}

			// Alone, a holder slower than its lease still stores: nobody
			// took the lease over, and the compare-and-set still guards
			// the key (a load longer than LoadLease is cached, not lost).
			r.raw.Del(ctx, dk)
			release, started := make(chan struct{}), make(chan struct{})
			slowDone := make(chan string)
			go func() {
				v, err := cache.GetOrLoad(ctx, slow, key, 0, func(context.Context) (string, error) {
					close(started)
					<-release
					return "late", nil
				})
				if err != nil {
					t.Error(err)
				}
				slowDone <- v
			}()
			<-started
			waitFor(t, 10*time.Second, "the lease to expire", func() bool { return r.raw.Exists(ctx, lk).Val() == 0 })
			close(release)
			if v := <-slowDone; v != "late" {
				t.Fatalf("slow holder's callers got %q", v)
			}
			var got string
			if found, err := next.Get(ctx, key, &got); err != nil || !found || got != "late" {
				t.Errorf("a holder alone past its lease stored %q (found %v, %v), want \"late\"", got, found, err)
			}
		})
	}
}

// TestLoadLeaseSlowHolder is leaseSlowHolder on one redis-server.
func TestLoadLeaseSlowHolder(t *testing.T) { leaseSlowHolder(t, standaloneLeaseRedis(t)) }

// TestLoadLeaseCaches: several caches (each its own flight group, as
// processes are) load a missing key once, share a loader's "no value" as
// without the lease, and count one miss per call and no hit.
func TestLoadLeaseCaches(t *testing.T) {
	r := standaloneLeaseRedis(t)
	kp := testPrefix(t)
	var caches []*cache.Cache
	for range 4 {
		caches = append(caches, newCache(t, r.config(kp, 10*time.Second)))
	}
	if n := loadFromAll(t, caches, "k:1", 200*time.Millisecond, nil); n != 1 {
		t.Errorf("value: %d loads, want 1", n)
	}
	if n := loadFromAll(t, caches, "k:none", 200*time.Millisecond, fmt.Errorf("row 7: %w", cache.ErrNoValue)); n != 1 {
		t.Errorf("no value: %d loads, want 1", n)
	}
	for i, c := range caches {
		// One count per call: a caller served the holder's value counted
		// its miss, and nothing more.
		if s := c.Stats(); s.Misses+s.Hits != 16 {
			t.Errorf("cache %d: %d misses + %d hits for 16 calls", i, s.Misses, s.Hits)
		}
	}
	// The no value is cached: no load.
	if n := loadFromAll(t, caches, "k:none", 0, cache.ErrNoValue); n != 0 {
		t.Errorf("cached no value: %d loads, want 0", n)
	}
	lk, _ := keyspace.New(kp).LeaseKey("k:1")
	if n := r.raw.Exists(context.Background(), lk).Val(); n != 0 {
		t.Errorf("lease %q left behind", lk)
	}
}

// TestLoadLeaseFailedLoad: a holder whose load fails releases its lease at
// once, so a process waiting for it loads without waiting the lease out.
func TestLoadLeaseFailedLoad(t *testing.T) {
	r := standaloneLeaseRedis(t)
	kp := testPrefix(t)
	ctx := context.Background()
	a := newCache(t, r.config(kp, 10*time.Minute))
	b := newCache(t, r.config(kp, 10*time.Minute))
	lk, _ := keyspace.New(kp).LeaseKey("k:1")
	fail := make(chan struct{})
	boom := errors.New("source down")
	aDone := make(chan error)
	go func() {
		_, err := cache.GetOrLoad(ctx, a, "k:1", 0, func(context.Context) (string, error) {
			<-fail
			return "", boom
		})
		aDone <- err
	}()
	waitFor(t, 10*time.Second, "a's lease", func() bool { return r.raw.Exists(ctx, lk).Val() == 1 })
	bDone := make(chan string)
	go func() {
		v, err := cache.GetOrLoad(ctx, b, "k:1", 0, func(context.Context) (string, error) {
			return "from b", nil
		})
		if err != nil {
			t.Error(err)
		}
		bDone <- v
	}()
	close(fail)
	if err := <-aDone; !errors.Is(err, boom) {
		t.Fatalf("a: %v", err)
	}
	// With a lease of 10 minutes, b only returns (within the test's
	// timeout) if a's failure released the lease.
	if v := <-bDone; v != "from b" {
		t.Fatalf("b got %q", v)
	}
}

// TestLoadLeaseRedisDown: with Redis stopped, every caller gets the
// loader's value; and a waiter whose Redis stops answering loads itself
// rather than wait for the lease.
func TestLoadLeaseRedisDown(t *testing.T) {
	t.Run("Stopped", func(t *testing.T) {
		s, err := redistest.Start()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c := newCache(t, cache.Config{URL: s.URL(0), LoadLease: time.Minute, SocketTimeout: 500 * time.Millisecond})
		s.Stop()
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := "k:" + strconv.Itoa(i%4)
				v, err := cache.GetOrLoad(context.Background(), c, key, 0, func(context.Context) (string, error) {
					return leaseValueOf(key), nil
				})
				if err != nil || v != leaseValueOf(key) {
					t.Errorf("GetOrLoad(%q) = %q, %v", key, v, err)
				}
			}()
		}
		wg.Wait()
	})
	t.Run("StallWhileWaiting", func(t *testing.T) {
		kp := testPrefix(t)
		ctx := context.Background()
		p := startStallProxy(t, srv.Addr())
		holder := newCache(t, cache.Config{KeyPrefix: kp, LoadLease: time.Hour})
		waiter := newCache(t, cache.Config{URL: p.URL(), KeyPrefix: kp, LoadLease: time.Hour, SocketTimeout: 300 * time.Millisecond})
		lk, _ := keyspace.New(kp).LeaseKey("k:1")
		release := make(chan struct{})
		defer close(release)
		go cache.GetOrLoad(ctx, holder, "k:1", 0, func(context.Context) (string, error) {
			<-release
			return "holder", nil
		})
		raw := rawClient(t)
		waitFor(t, 10*time.Second, "the holder's lease", func() bool { return raw.Exists(ctx, lk).Val() == 1 })
		done := make(chan string)
		go func() {
			v, err := cache.GetOrLoad(ctx, waiter, "k:1", 0, func(context.Context) (string, error) {
				return "waiter", nil
			})
			if err != nil {
				t.Error(err)
			}
			done <- v
		}()
		// Past its read (which counted the miss), the waiter polls the
		// lease; the stall meets a poll, and with an hour's lease the
		// waiter returns only by loading itself.
		waitFor(t, 10*time.Second, "the waiter's miss", func() bool { return waiter.Stats().Misses == 1 })
		p.Stall()
		if v := <-done; v != "waiter" {
			t.Fatalf("waiter got %q", v)
		}
	})
}

// TestLoadLeaseConfig: a negative LoadLease is an error naming the field.
func TestLoadLeaseConfig(t *testing.T) {
	_, err := cache.New(cache.Config{LoadLease: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "LoadLease") {
		t.Fatalf("New(LoadLease: -1s) = %v, want an error naming LoadLease", err)
	}
	if _, err := cache.New(cache.Config{LoadLease: time.Second}); err != nil {
		t.Fatal(err)
	}
}

// "Hits never touch the lease": with LoadLease on, a GetOrLoad hit sends its
// GET and no command that names a lease key; only the miss took (and
// released) a lease. (Other scripts, the generations' refresh, may run
// meanwhile: commands are told apart by the keys they name.)
func TestLoadLeaseHitTouchesNoLease(t *testing.T) {
	ctx := context.Background()
	client := srv.Client()
	t.Cleanup(func() { client.Close() })
	h := &cmdCounter{mark: ":lease:"}
	client.AddHook(h)
	snapshot := func() (lease, gets int) { return h.count(""), h.count("get") }
	c, err := cache.New(cache.Config{Client: client, KeyPrefix: testPrefix(t), LoadLease: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	load := func(context.Context) (string, error) { return "v", nil }
	if _, err := c.Delete(ctx, "hot:1"); err != nil { // a miss even under -count
		t.Fatal(err)
	}
	if v, err := cache.GetOrLoad(ctx, c, "hot:1", time.Minute, load); err != nil || v != "v" {
		t.Fatalf("miss: %q, %v", v, err)
	}
	before, gets := snapshot()
	if before == 0 {
		t.Fatal("the miss sent no command naming a lease key: did it take a lease?")
	}
	for range 20 {
		if v, err := cache.GetOrLoad(ctx, c, "hot:1", time.Minute, func(context.Context) (string, error) {
			t.Error("a hit loaded")
			return "", nil
		}); err != nil || v != "v" {
			t.Fatalf("hit: %q, %v", v, err)
		}
	}
	after, gets2 := snapshot()
	if n := after - before; n != 0 {
		t.Errorf("20 hits sent %d commands naming a lease key, want none", n)
	}
	if n := gets2 - gets; n != 20 {
		t.Errorf("20 hits sent %d GETs, want 20", n)
	}
}
