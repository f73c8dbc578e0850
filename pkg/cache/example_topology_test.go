package cache_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log"
	"os"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// A Redis Cluster: the cache discovers the masters from any seed, keeps each
// key on its slot's master, and invalidates on every master.
func ExampleConfig_cluster() {
	c, err := cache.New(cache.Config{
		Mode:      cache.ModeCluster,
		Addrs:     []string{"redis-0.redis:6379", "redis-1.redis:6379", "redis-2.redis:6379"},
		KeyPrefix: "myapp",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// A master behind Redis Sentinel, over TLS with a private CA, as an ACL user:
// the cache asks the sentinels for the master and follows failovers, failing
// open while one is under way.
func ExampleConfig_sentinel() {
	ca, err := os.ReadFile("/etc/redis-tls/ca.crt")
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	c, err := cache.New(cache.Config{
		Mode:       cache.ModeSentinel,
		Addrs:      []string{"sentinel-0:26379", "sentinel-1:26379", "sentinel-2:26379"},
		MasterName: "mymaster",
		// TLS to the sentinels and the master; each is verified by its host.
		TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Username:  "myapp",
		Password:  os.Getenv("REDIS_PASSWORD"),
		KeyPrefix: "myapp",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
