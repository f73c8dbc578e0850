package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func TestSentinelFailover(t *testing.T) {
	start := time.Now()
	d, err := redistest.StartSentinel()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("deployment up in %v", time.Since(start))
	ctx := context.Background()
	c := d.Client()
	defer c.Close()
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	first, err := d.Master()
	if err != nil {
		t.Fatal(err)
	}
	if first != d.Data[0] {
		t.Fatalf("master is %s, want the first data node %s", first.Addr(), d.Data[0].Addr())
	}
	// The write must reach the replica before the master dies, or the
	// promoted replica would not have it.
	if err := c.Wait(ctx, 1, 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}

	old, err := d.KillMaster()
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	next, err := d.WaitForNewMaster(old, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover took %v", time.Since(start))
	if next == old || next != d.Data[1] {
		t.Fatalf("new master %s, want the replica %s", next.Addr(), d.Data[1].Addr())
	}
	// The failover client follows: it reads the replicated key from the new
	// master and can write there.
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "before" {
		t.Fatalf("after failover GET k = %q, %v; want \"before\"", got, err)
	}
	if err := c.Set(ctx, "k", "after", 0).Err(); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	nc := next.Client()
	defer nc.Close()
	if got, _ := nc.Get(ctx, "k").Result(); got != "after" {
		t.Errorf("new master holds k = %q, want \"after\"", got)
	}
}
