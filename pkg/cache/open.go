package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// Open validates cfg, applies defaults and starts connecting to Redis in the
// background; it returns at once, and fails only on a configuration error,
// which names the Config field at fault. The Cache is usable straight away:
// until Redis first answers, calls fail with ErrNotConnected and loaders,
// wrappers and the middleware fail open (serve from their source), then they
// start caching without a restart. Failed attempts (backing off to every 5s)
// and the connection are logged to Config.Logger. Call Ready to wait for the
// connection; use New and Connect instead for a service that must not start
// without Redis.
//
// Open does not wait, so ctx's deadline plays no part in connecting, and the
// background work lives until Close, not until ctx ends.
func Open(ctx context.Context, cfg Config) (*Cache, error) {
	_ = ctx // Open returns before any round trip: nothing to bound.
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.dial(); err != nil {
		return nil, err
	}
	c.retryInBackground()
	return c, nil
}

// Ready waits until the cache has connected to Redis for the first time
// (through Open's background connection, or Connect and its retries). It
// returns nil once connected, ctx.Err() if ctx ends first, and ErrClosed
// after Close. On a Cache from New that nothing connects it waits for ctx.
func (c *Cache) Ready(ctx context.Context) error {
	if c.life.Err() != nil {
		return ErrClosed
	}
	select {
	case <-c.ready:
		if c.life.Err() != nil {
			return ErrClosed
		}
		return nil
	case <-c.life.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkClient validates Config.Client and the fields it excludes, and
// returns the client's topology.
func checkClient(cfg Config) (string, error) {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"URL", cfg.URL != ""},
		{"Addrs", len(cfg.Addrs) > 0},
		{"MasterName", cfg.MasterName != ""},
		{"Username", cfg.Username != ""},
		{"Password", cfg.Password != ""},
		{"TLSConfig", cfg.TLSConfig != nil},
		{"MaxConnections", cfg.MaxConnections != 0},
		{"KeepAlive", cfg.KeepAlive != 0},
	} {
		if f.set {
			set = append(set, "Config."+f.name)
		}
	}
	if len(set) > 0 {
		return "", fmt.Errorf("cache: Config.Client excludes %s: the client's own options apply", strings.Join(set, ", "))
	}
	var mode string
	switch cl := cfg.Client.(type) {
	case *redis.Client:
		if cl == nil {
			return "", errors.New("cache: Config.Client is a nil *redis.Client")
		}
		mode = ModeStandalone
		if cl.Options().Addr == "FailoverClient" { // what redis.NewFailoverClient sets
			mode = ModeSentinel
		}
	case *redis.ClusterClient:
		if cl == nil {
			return "", errors.New("cache: Config.Client is a nil *redis.ClusterClient")
		}
		mode = ModeCluster
	default:
		// A Ring shards by its own hashing: Invalidate's SCAN, the
		// generations and the events channel assume one key space.
		return "", fmt.Errorf("cache: Config.Client is a %T: use a *redis.Client (standalone or failover) or a *redis.ClusterClient", cfg.Client)
	}
	if cfg.Mode != "" && cfg.Mode != mode {
		return "", fmt.Errorf("cache: Config.Mode %q does not match Config.Client, a %s client: leave Mode unset", cfg.Mode, mode)
	}
	return mode, nil
}

// clientDB is the database a Config.Client selects (a cluster has only 0).
func clientDB(cl redis.UniversalClient) int {
	if c, ok := cl.(*redis.Client); ok {
		return c.Options().DB
	}
	return 0
}

// clientTarget describes a Config.Client, without credentials, for errors.
func clientTarget(cl redis.UniversalClient) string {
	switch c := cl.(type) {
	case *redis.Client:
		if c.Options().Addr == "FailoverClient" {
			return "Config.Client (failover client)"
		}
		return fmt.Sprintf("Config.Client (%s)", c.Options().Addr)
	case *redis.ClusterClient:
		return fmt.Sprintf("Config.Client (Redis Cluster %v)", c.Options().Addrs)
	}
	return "Config.Client"
}

// standaloneOptions are the go-redis options of the pool's connections, for
// the dedicated connections the cache dials itself (the near-cache's
// tracking connection; the events subscription of tests). The caller may
// modify them.
func (c *Cache) standaloneOptions() (*redis.Options, error) {
	if !c.external {
		return redisconn.ClientOptions(c.conn)
	}
	cl, ok := c.cfg.Client.(*redis.Client)
	if !ok {
		return nil, fmt.Errorf("cannot dial a connection like %s's: a standalone client is needed", clientTarget(c.cfg.Client))
	}
	opts := *cl.Options()
	return &opts, nil
}

// validateConn checks the fields that say where Redis is, naming the one at
// fault, then what redisconn would refuse.
func validateConn(cfg Config, conn redisconn.Options) error {
	switch cfg.Mode {
	case ModeStandalone:
		if len(cfg.Addrs) > 0 {
			return fmt.Errorf("cache: Config.Addrs is for %s and %s mode; %s mode takes Config.URL", ModeCluster, ModeSentinel, ModeStandalone)
		}
	case ModeCluster, ModeSentinel:
		for _, a := range cfg.Addrs {
			if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
				return fmt.Errorf("cache: Config.Addrs: %s mode: address %q is not host:port", cfg.Mode, a)
			}
		}
		if len(cfg.Addrs) == 0 && cfg.URL == "" {
			return fmt.Errorf("cache: Config.Addrs is empty: %s mode needs addresses", cfg.Mode)
		}
	default:
		return fmt.Errorf("cache: Config.Mode: unknown Redis mode %q: use %s, %s or %s", cfg.Mode, ModeStandalone, ModeCluster, ModeSentinel)
	}
	switch {
	case cfg.Mode == ModeSentinel && cfg.MasterName == "":
		return errors.New("cache: Config.MasterName is empty: mode Sentinel needs the master's name")
	case cfg.Mode != ModeSentinel && cfg.MasterName != "":
		return fmt.Errorf("cache: Config.MasterName is for %s mode, not %s", ModeSentinel, cfg.Mode)
	}
	if err := redisconn.Validate(conn); err != nil {
		field := "URL"
		if cfg.URL == "" {
			field = "Addrs" // the first address stood in for the URL
		}
		return fmt.Errorf("cache: Config.%s: %w", field, err)
	}
	return nil
}
