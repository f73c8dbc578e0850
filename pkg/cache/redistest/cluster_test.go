package redistest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func TestClusterSpreadsKeysOverMasters(t *testing.T) {
	c, err := redistest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.Client()
	defer cl.Close()
	ctx := context.Background()
	for i := range 300 {
		if err := cl.Set(ctx, fmt.Sprintf("k:%d", i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	for _, node := range c.Nodes {
		nc := node.Client()
		n, err := nc.DBSize(ctx).Result()
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("master %s holds no keys: slots not spread", node.Addr())
		}
		total += n
	}
	if total != 300 {
		t.Errorf("masters hold %d keys in all, want 300", total)
	}
}

func TestServerRestartKeepsPort(t *testing.T) {
	s, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	port := s.Port
	s.Stop()
	c := s.Client()
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("stopped server answered PING")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Errorf("port changed from %d to %d", port, s.Port)
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Errorf("restarted server: %v", err)
	}
}
