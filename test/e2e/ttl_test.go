package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// TestPrefixTTLEditReachesRunningWriters edits one prefix's ttl with kubectl
// and checks that a running writer's new entries (Set with ttl 0) get it
// within a second, without a restart, while the other prefix keeps its own.
func TestPrefixTTLEditReachesRunningWriters(t *testing.T) {
	dumpLogsOnFailure(t)
	ns := namespace(t)
	const kp = "e2e-ttl"
	applySample(t, ns, kp, 0, nil)
	ctx := context.Background()
	writer := newCache(t, kp, 0, nil)
	rdb := rawRedis(t, 0)

	pttl := func(key string) time.Duration {
		t.Helper()
		if err := writer.Set(ctx, key, "v", 0); err != nil {
			t.Fatal(err)
		}
		d, err := rdb.PTTL(ctx, kp+":"+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := pttl("users:before"); d <= 9*time.Minute {
		t.Fatalf("before the edit: users entry PTTL %v, want the sample's 10m", d)
	}

	// prefixes[0] is users in the sample.
	kubectl(t, "patch", "cachepolicy", "demo", "-n", ns, "--type", "json",
		"-p", `[{"op":"replace","path":"/spec/prefixes/0/ttl","value":"42s"}]`)
	edited := time.Now() // the API server has stored the edit by now

	var last time.Duration
	n := 0
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Second, true, func(context.Context) (bool, error) {
		n++
		last = pttl(fmt.Sprintf("users:after-%d", n))
		return last <= 42*time.Second, nil
	})
	if err != nil {
		t.Fatalf("a second after kubectl patch, new users entries still get PTTL %v, want <= 42s", last)
	}
	t.Logf("new writes got the edited TTL %v after the edit (PTTL %v)", time.Since(edited).Round(time.Millisecond), last)
	if last < 40*time.Second {
		t.Errorf("PTTL %v, want about 42s", last)
	}
	if d := pttl("products:after"); d <= 50*time.Second || d > time.Minute {
		t.Errorf("products entry PTTL %v after editing users' ttl, want its own 1m", d)
	}
	eventually(t, 10*time.Second, 100*time.Millisecond, "status shows the edited ttl", func() (bool, string) {
		got := jsonpath(t, ns, `{.status.prefixes[?(@.name=="users")].ttl}`)
		return got == "42s", fmt.Sprintf("status.prefixes[users].ttl = %q", got)
	})
}
