// Package redisconn builds go-redis clients the same way for pkg/cache and the
// controller: from a redis:// or rediss:// URL plus separately supplied
// credentials, timeouts and pool size.
//
// The package is public only because the operator shares it with pkg/cache and,
// living in another module, cannot import the library module's internal
// packages. Applications should use cache.Config instead.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Topologies a client can speak to.
const (
	ModeStandalone = "Standalone"
	ModeCluster    = "Cluster"
	ModeSentinel   = "Sentinel"
)

// Options describe a connection.
type Options struct {
	// Mode is ModeStandalone (or ""), ModeCluster or ModeSentinel.
	Mode string
	// URL is redis://host:port/db or rediss://host:port/db (TLS). In Cluster
	// and Sentinel mode it may be empty; when given, its scheme selects TLS
	// and its database applies (Sentinel), and its host joins Addrs.
	URL string
	// Addrs are the cluster's seed nodes or the sentinels, as host:port.
	Addrs []string
	// MasterName is the master the sentinels watch (Sentinel mode).
	MasterName string
	// Username and Password authenticate (ACL user, or password only).
	// A password inside URL is refused: it would end up in logs and specs.
	Username, Password string
	// PoolSize is the maximum number of connections; 0 = go-redis's default.
	PoolSize int
	// Timeout bounds each dial, read and write; 0 = go-redis's defaults.
	Timeout time.Duration
	// KeepAlive is the TCP keep-alive period; negative disables keep-alives.
	KeepAlive time.Duration
	// TLS overrides the TLS configuration of a rediss:// URL.
	TLS *tls.Config
	// Protocol is the RESP version (2 or 3); 0 = 3.
	Protocol int
	// DialerRetries is how many times one connection is dialed before the
	// call fails; 0 = go-redis's default (5, with backoff). A client that
	// fails open sets 1, so a refused dial costs one attempt, not half a
	// second of retries inside every call.
	DialerRetries int
}

// ClientOptions validates o and returns go-redis options.
func ClientOptions(o Options) (*redis.Options, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, which may hold a password
		}
		return nil, fmt.Errorf("redis URL is malformed: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis URL %q: scheme must be redis:// or rediss://", Redact(o.URL))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("redis URL %q: no host", Redact(o.URL))
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		return nil, errors.New("redis URL must not contain a password: pass it separately")
	}
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redis URL %q: %w", Redact(o.URL), err)
	}
	if o.Username != "" {
		opt.Username = o.Username
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	if o.PoolSize > 0 {
		opt.PoolSize = o.PoolSize
	}
	if o.Protocol != 0 {
		opt.Protocol = o.Protocol
	}
	if o.DialerRetries > 0 {
		opt.DialerRetries = o.DialerRetries
	}
	if o.Timeout > 0 {
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = o.Timeout, o.Timeout, o.Timeout
		opt.PoolTimeout = o.Timeout
	}
	if o.TLS != nil {
		opt.TLSConfig = o.TLS
	}
	// Calls honour their context's deadline, so a caller's timeout is never
	// exceeded waiting on a stalled server.
	opt.ContextTimeoutEnabled = true
	tlsConfig := opt.TLSConfig
	dialer := &net.Dialer{Timeout: opt.DialTimeout, KeepAlive: o.KeepAlive}
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if tlsConfig == nil {
			return dialer.DialContext(ctx, network, addr)
		}
		td := &tls.Dialer{NetDialer: dialer, Config: tlsConfig}
		return td.DialContext(ctx, network, addr)
	}
	return opt, nil
}

// NewUniversal returns a client for o's topology: a *redis.Client, a
// *redis.ClusterClient or a Sentinel-backed failover *redis.Client. It does not
// dial.
func NewUniversal(o Options) (redis.UniversalClient, error) {
	opt, addrs, err := universalOptions(o)
	if err != nil {
		return nil, err
	}
	switch o.Mode {
	case ModeCluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 addrs,
			Username:              opt.Username,
			Password:              opt.Password,
			Protocol:              opt.Protocol,
			PoolSize:              opt.PoolSize,
			DialTimeout:           opt.DialTimeout,
			ReadTimeout:           opt.ReadTimeout,
			WriteTimeout:          opt.WriteTimeout,
			PoolTimeout:           opt.PoolTimeout,
			DialerRetries:         opt.DialerRetries,
			ContextTimeoutEnabled: true,
			TLSConfig:             opt.TLSConfig,
			Dialer:                opt.Dialer,
		}), nil
	case ModeSentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:    o.MasterName,
			SentinelAddrs: addrs,
			// The credentials are the data nodes'; sentinels are reached
			// without (their AUTH would fail on the usual password-less
			// sentinel). The dialer, and so TLS, applies to both.
			Username:              opt.Username,
			Password:              opt.Password,
			DB:                    opt.DB,
			Protocol:              opt.Protocol,
			PoolSize:              opt.PoolSize,
			DialTimeout:           opt.DialTimeout,
			ReadTimeout:           opt.ReadTimeout,
			WriteTimeout:          opt.WriteTimeout,
			PoolTimeout:           opt.PoolTimeout,
			DialerRetries:         opt.DialerRetries,
			ContextTimeoutEnabled: true,
			TLSConfig:             opt.TLSConfig,
			Dialer:                opt.Dialer,
		}), nil
	}
	return redis.NewClient(opt), nil
}

// Validate reports what NewUniversal would refuse in o, without building a
// client, so that configuration errors surface before any dial.
func Validate(o Options) error {
	_, _, err := universalOptions(o)
	return err
}

// universalOptions validates o for its mode and returns the standalone options
// it shares with the other topologies, and, in Cluster and Sentinel mode, the
// seed or sentinel addresses.
func universalOptions(o Options) (*redis.Options, []string, error) {
	switch o.Mode {
	case "", ModeStandalone:
		opt, err := ClientOptions(o)
		return opt, nil, err
	case ModeCluster, ModeSentinel:
	default:
		return nil, nil, fmt.Errorf("unknown Redis mode %q: use %s, %s or %s", o.Mode, ModeStandalone, ModeCluster, ModeSentinel)
	}
	for _, a := range o.Addrs {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			return nil, nil, fmt.Errorf("%s mode: address %q is not host:port", o.Mode, a)
		}
	}
	if o.Mode == ModeSentinel && o.MasterName == "" {
		return nil, nil, errors.New("mode Sentinel needs the master's name")
	}
	// Reuse the standalone validation and defaults, then carry them over.
	base := o
	if base.URL == "" {
		if len(o.Addrs) == 0 {
			return nil, nil, fmt.Errorf("%s mode needs addresses", o.Mode)
		}
		base.URL = "redis://" + o.Addrs[0]
	}
	opt, err := ClientOptions(base)
	if err != nil {
		return nil, nil, err
	}
	if o.Mode == ModeCluster && opt.DB != 0 {
		// Redis Cluster has database 0 only; silently using it instead of
		// the one asked for would mix tenants.
		return nil, nil, fmt.Errorf("redis URL %q: Cluster mode supports database 0 only", Redact(o.URL))
	}
	if o.TLS == nil && opt.TLSConfig != nil {
		// go-redis verified a rediss:// URL's certificate against the URL's
		// host; a cluster or a Sentinel setup has other hosts, so each dial
		// verifies the host it dials instead. (The config is the one
		// ParseURL made for us, so clearing it affects no one else, and the
		// dialer ClientOptions built holds the same config.)
		opt.TLSConfig.ServerName = ""
	}
	addrs := append([]string(nil), o.Addrs...)
	if o.URL != "" && !slices.Contains(addrs, opt.Addr) {
		addrs = append(addrs, opt.Addr)
	}
	return opt, addrs, nil
}

// New returns a client for o. It does not dial.
func New(o Options) (*redis.Client, error) {
	opt, err := ClientOptions(o)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opt), nil
}

// DB returns the database number a redis:// or rediss:// URL selects (0 when
// it names none or cannot be parsed; ClientOptions reports parse errors).
func DB(rawURL string) int {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return 0
	}
	return opt.DB
}

// Redact returns u with any password replaced, for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	return u.Redacted()
}
