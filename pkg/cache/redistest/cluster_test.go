package redistest_test

import (
	"context"
	"fmt"
	"strings"
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
	ctx := context.Background()
	s, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Client()
	defer c.Close()
	runID := func() string {
		info, err := c.Info(ctx, "server").Result()
		if err != nil {
			return ""
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
				return v
			}
		}
		return ""
	}
	port, first := s.Port, runID()
	if first == "" {
		t.Fatal("no run_id from the started server")
	}
	s.Stop()
	if id := runID(); id == first {
		t.Fatal("stopped server still answers")
	} else if id != "" {
		// Other test binaries start servers on free ports too: one took
		// this port between Stop and now, so Start cannot have it.
		t.Skipf("port %d taken by another process after Stop", port)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Errorf("port changed from %d to %d", port, s.Port)
	}
	if id := runID(); id == "" || id == first {
		t.Errorf("restarted server answers with run_id %q, want a new one (was %q)", id, first)
	}
}
