package cache_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// srv is the redis-server shared by the package's tests; they isolate
// themselves by KeyPrefix. Tests that stop a server start their own.
var srv *redistest.Server

func TestMain(m *testing.M) {
	// go-redis logs every failed dial to stderr; the fail-open tests cause
	// hundreds on purpose.
	redis.SetLogger(quietLogger{})
	// Caches without a Logger log to slog.Default(); the fail-open tests
	// would fill the output of a failing run.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	if os.Getenv(leaseChildEnv) != "" {
		os.Exit(m.Run()) // a LoadLease test's child: it uses its parent's Redis
	}
	srv = redistest.MustStart()
	// The examples read it, so that they run as they would in an app.
	os.Setenv("REDIS_URL", srv.URL(0))
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// testPrefix derives a KeyPrefix from the test's name, so tests cannot see
// each other's keys: characters a KeyPrefix may not hold become '_', and a
// long name is cut and made unique by a hash, leaving room for a suffix.
func testPrefix(t testing.TB) string {
	kp := strings.Map(func(r rune) rune {
		if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(keyspace.KeyPrefixChars, r)) {
			return r
		}
		return '_'
	}, t.Name())
	const limit = 48
	if len(kp) > limit {
		sum := sha256.Sum256([]byte(t.Name()))
		kp = kp[:limit-9] + "-" + hex.EncodeToString(sum[:4])
	}
	return kp
}

// newCache returns a connected cache on srv, closed when the test ends.
// Unset URL and KeyPrefix are filled in.
func newCache(t testing.TB, cfg cache.Config) *cache.Cache {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = srv.URL(0)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = testPrefix(t)
	}
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawClient is a plain go-redis client of srv, to check what is really stored.
func rawClient(t testing.TB) *redis.Client {
	t.Helper()
	rc := srv.Client()
	t.Cleanup(func() { rc.Close() })
	return rc
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startStallProxy starts a proxy to target that a test can stall
// (redistest.Proxy), closed when the test ends.
func startStallProxy(t testing.TB, target string) *redistest.Proxy {
	t.Helper()
	p, err := redistest.StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// blackhole accepts connections and never answers.
func blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "redis://" + ln.Addr().String() + "/0"
}
