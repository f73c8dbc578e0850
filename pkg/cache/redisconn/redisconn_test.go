package redisconn_test

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

const secret = "hunter2-secret"

func TestClientOptionsRefusesBadURLs(t *testing.T) {
	for _, tc := range []struct {
		url, want string
	}{
		{"", "scheme must be redis:// or rediss://"},
		{"http://localhost:6379", "scheme must be redis:// or rediss://"},
		{"localhost:6379", "scheme must be redis:// or rediss://"},
		{"redis://", "no host"},
		{"redis:///0", "no host"},
		{"redis://:" + secret + "@localhost:6379/0", "must not contain a password"},
		{"redis://app:" + secret + "@localhost:6379/0", "must not contain a password"},
		{"rediss://app:" + secret + "@localhost:6379/0", "must not contain a password"},
		{"redis://app:" + secret + "@local host:6379/0", "malformed"},
		{"redis://localhost:6379/notadb", "redis URL"},
		{"redis://localhost:6379/0?unknown_option=1", "redis URL"},
	} {
		_, err := redisconn.ClientOptions(redisconn.Options{URL: tc.url})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ClientOptions(%q): err = %v, want one saying %q", tc.url, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("ClientOptions(%q): the error %q shows the password", tc.url, err)
		}
	}
}

func TestClientOptions(t *testing.T) {
	override := &tls.Config{ServerName: "redis.example", MinVersion: tls.VersionTLS13}
	for _, tc := range []struct {
		name  string
		in    redisconn.Options
		check func(t *testing.T, o *redis.Options)
	}{{
		name: "defaults",
		in:   redisconn.Options{URL: "redis://localhost:6379/2"},
		check: func(t *testing.T, o *redis.Options) {
			if o.Addr != "localhost:6379" || o.DB != 2 || o.TLSConfig != nil || o.Username != "" || o.Password != "" {
				t.Errorf("got addr %q db %d tls %v user %q", o.Addr, o.DB, o.TLSConfig, o.Username)
			}
			// Calls must end with their context, however long go-redis's own
			// timeouts are.
			if !o.ContextTimeoutEnabled || o.Dialer == nil {
				t.Errorf("ContextTimeoutEnabled %v, Dialer set %v", o.ContextTimeoutEnabled, o.Dialer != nil)
			}
		},
	}, {
		name: "credentials and tuning",
		in: redisconn.Options{URL: "redis://app@localhost:6379", Password: secret, PoolSize: 7,
			Timeout: 1500 * time.Millisecond, Protocol: 2, DialerRetries: 1},
		check: func(t *testing.T, o *redis.Options) {
			if o.Username != "app" || o.Password != secret {
				t.Errorf("user %q password %q; want the URL's user and the separate password", o.Username, o.Password)
			}
			if o.PoolSize != 7 || o.Protocol != 2 || o.DialerRetries != 1 {
				t.Errorf("pool %d protocol %d dialer retries %d", o.PoolSize, o.Protocol, o.DialerRetries)
			}
			for name, d := range map[string]time.Duration{"dial": o.DialTimeout, "read": o.ReadTimeout, "write": o.WriteTimeout, "pool": o.PoolTimeout} {
				if d != 1500*time.Millisecond {
					t.Errorf("%s timeout %v, want 1.5s", name, d)
				}
			}
		},
	}, {
		name: "Username beats the URL's user",
		in:   redisconn.Options{URL: "redis://app@localhost:6379", Username: "other"},
		check: func(t *testing.T, o *redis.Options) {
			if o.Username != "other" {
				t.Errorf("user %q, want other", o.Username)
			}
		},
	}, {
		name: "rediss",
		in:   redisconn.Options{URL: "rediss://cache.example:6380/0"},
		check: func(t *testing.T, o *redis.Options) {
			if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.example" {
				t.Errorf("TLS config %+v, want one verifying cache.example", o.TLSConfig)
			}
		},
	}, {
		name: "TLS overrides",
		in:   redisconn.Options{URL: "rediss://cache.example:6380/0", TLS: override},
		check: func(t *testing.T, o *redis.Options) {
			if o.TLSConfig != override {
				t.Errorf("TLS config %+v, want the override", o.TLSConfig)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := redisconn.ClientOptions(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

func TestNewUniversalModes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    redisconn.Options
		check func(t *testing.T, c redis.UniversalClient)
	}{{
		name: "empty mode is standalone",
		in:   redisconn.Options{URL: "redis://localhost:6379/0"},
		check: func(t *testing.T, c redis.UniversalClient) {
			if cl, ok := c.(*redis.Client); !ok || cl.Options().Addr != "localhost:6379" {
				t.Errorf("got %T", c)
			}
		},
	}, {
		name: "Standalone",
		in:   redisconn.Options{Mode: redisconn.ModeStandalone, URL: "redis://localhost:6379/0"},
		check: func(t *testing.T, c redis.UniversalClient) {
			if _, ok := c.(*redis.Client); !ok {
				t.Errorf("got %T", c)
			}
		},
	}, {
		name: "Cluster from addresses, with the URL's node and scheme",
		in: redisconn.Options{Mode: redisconn.ModeCluster, Addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000"},
			URL: "rediss://10.0.0.3:7000", Username: "app", Password: secret, DialerRetries: 1},
		check: func(t *testing.T, c redis.UniversalClient) {
			cc, ok := c.(*redis.ClusterClient)
			if !ok {
				t.Fatalf("got %T", c)
			}
			o := cc.Options()
			if want := []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}; !slices.Equal(o.Addrs, want) {
				t.Errorf("seeds %v, want %v", o.Addrs, want)
			}
			if o.TLSConfig == nil || o.Username != "app" || o.Password != secret || o.DialerRetries != 1 || !o.ContextTimeoutEnabled {
				t.Errorf("options not carried over: tls %v user %q retries %d", o.TLSConfig, o.Username, o.DialerRetries)
			}
			// Each node's certificate is checked against that node's host,
			// not the URL's.
			if o.TLSConfig != nil && o.TLSConfig.ServerName != "" {
				t.Errorf("TLS ServerName %q is pinned to one node", o.TLSConfig.ServerName)
			}
		},
	}, {
		name: "Cluster from the URL alone",
		in:   redisconn.Options{Mode: redisconn.ModeCluster, URL: "redis://10.0.0.3:7000"},
		check: func(t *testing.T, c redis.UniversalClient) {
			if cc, ok := c.(*redis.ClusterClient); !ok || !slices.Equal(cc.Options().Addrs, []string{"10.0.0.3:7000"}) {
				t.Errorf("got %T", c)
			}
		},
	}, {
		name: "Sentinel",
		in:   redisconn.Options{Mode: redisconn.ModeSentinel, Addrs: []string{"10.0.0.1:26379"}, MasterName: "mymaster", URL: "redis://10.0.0.2:26379/3"},
		check: func(t *testing.T, c redis.UniversalClient) {
			cl, ok := c.(*redis.Client)
			if !ok {
				t.Fatalf("got %T", c)
			}
			// The failover client dials whatever master the sentinels name.
			if o := cl.Options(); o.Addr != "FailoverClient" || o.DB != 3 {
				t.Errorf("addr %q db %d; want a failover client of database 3", o.Addr, o.DB)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if err := redisconn.Validate(tc.in); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			c, err := redisconn.NewUniversal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc.check(t, c)
		})
	}
}

func TestNewUniversalRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   redisconn.Options
		want string
	}{
		{"unknown mode", redisconn.Options{Mode: "cluster", Addrs: []string{"a:1"}}, `unknown Redis mode "cluster"`},
		{"cluster without addresses", redisconn.Options{Mode: redisconn.ModeCluster}, "needs addresses"},
		{"sentinel without addresses", redisconn.Options{Mode: redisconn.ModeSentinel, MasterName: "m"}, "needs addresses"},
		{"sentinel without master name", redisconn.Options{Mode: redisconn.ModeSentinel, Addrs: []string{"a:1"}}, "master's name"},
		{"address without port", redisconn.Options{Mode: redisconn.ModeCluster, Addrs: []string{"a:1", "b"}}, `"b" is not host:port`},
		{"address without host", redisconn.Options{Mode: redisconn.ModeCluster, Addrs: []string{":1"}}, "not host:port"},
		{"cluster database", redisconn.Options{Mode: redisconn.ModeCluster, URL: "redis://a:1/2"}, "database 0 only"},
		{"password in a cluster URL", redisconn.Options{Mode: redisconn.ModeCluster, URL: "redis://u:" + secret + "@a:1"}, "must not contain a password"},
		{"standalone without URL", redisconn.Options{Addrs: []string{"a:1"}}, "scheme must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verr := redisconn.Validate(tc.in)
			c, err := redisconn.NewUniversal(tc.in)
			if err == nil {
				c.Close()
				t.Fatal("NewUniversal accepted the options")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one saying %q", err, tc.want)
			}
			if verr == nil || verr.Error() != err.Error() {
				t.Errorf("Validate = %v, NewUniversal = %v; want the same error", verr, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error %q shows the password", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://localhost:6379/0":                    "redis://localhost:6379/0",
		"redis://app:" + secret + "@localhost:6379/0": "redis://app:xxxxx@localhost:6379/0",
		"rediss://:" + secret + "@h:1":                "rediss://:xxxxx@h:1",
		"redis://app:" + secret + "@local host:1":     "<unparseable URL>",
	} {
		if got := redisconn.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDialsRealServers checks the dialer New installs against real servers:
// TLS with the CA from the options, and an ACL user's credentials.
func TestDialsRealServers(t *testing.T) {
	ctx := context.Background()
	s, err := redistest.StartTLS(redistest.ClientAuthYes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := redisconn.New(redisconn.Options{URL: s.URL(0), TLS: s.TLSConfig(), Timeout: 5 * time.Second, KeepAlive: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING over TLS: %v", err)
	}

	u := redistest.CacheUser("app", secret, "app")
	plain, err := redistest.Start(u.Args()...)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	c2, err := redisconn.New(redisconn.Options{URL: "redis://app@" + plain.Addr(), Password: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Set(ctx, "app:k", "v", 0).Err(); err != nil {
		t.Errorf("SET as the ACL user: %v", err)
	}
	if err := c2.Set(ctx, "other:k", "v", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("SET outside the user's keys: err = %v, want NOPERM", err)
	}
}
