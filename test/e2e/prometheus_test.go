package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/testenv"
	"github.com/cacheplane/cacheplane/internal/testprom"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestPrometheusDashboardAndAlerts keeps config/prometheus/rules.yaml and
// config/grafana/cacheplane-dashboard.json honest against a real Prometheus.
// promtool checks the rules; then Prometheus scrapes this package's manager
// (its metrics endpoint in plain HTTP, as --metrics-secure=false serves it:
// cmd/manager's TestSecureMetrics covers the token path) and two example
// workload processes, with the rules loaded. The test brings about what each
// alert is about: a healthy policy whose hit ratio collapses after an
// invalidation, and a policy whose Redis stops in the middle of a run (not
// Ready, run Failed, the workload's Redis calls failing). Then every
// expression of the dashboard and of the rules must return data, every rule
// must evaluate without error, and every alert must be pending or firing.
func TestPrometheusDashboardAndAlerts(t *testing.T) {
	dumpLogsOnFailure(t)
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("no promtool on PATH: run hack/ensure-prometheus.sh")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx := context.Background()

	ruleFile := filepath.Join(dir, "rules.yml")
	if err := testprom.WriteRuleFile(filepath.Join(root, "config", "prometheus", "rules.yaml"), ruleFile); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", ruleFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	queries, err := testprom.DashboardQueries(filepath.Join(root, "config", "grafana", "cacheplane-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}

	// Two policies: "good" on the shared Redis, "bad" on one the test stops.
	r2, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Close)
	nsGood, nsBad := namespace(t), namespace(t)
	applySample(t, nsGood, nsGood, 3, func(spec map[string]any) { spec["statsInterval"] = "1s" })
	applySample(t, nsBad, nsBad, 0, func(spec map[string]any) {
		spec["statsInterval"] = "1s"
		spec["redis"].(map[string]any)["url"] = r2.URL(0)
		spec["invalidation"] = map[string]any{"token": "v1", "maxKeysPerSecond": 1}
	})

	bin := buildWorkload(t, root)
	good := startWorkload(t, bin, srv.URL(3), nsGood)
	bad := startWorkload(t, bin, r2.URL(0), nsBad)

	// Prometheus' own state goes in dir: it outlives nothing but this test.
	prom, err := testprom.Start(ctx, filepath.Join(dir), time.Second, []testprom.Target{
		{Job: "cacheplane-manager", Addrs: []string{managerMetrics}},
		{Job: "workload-good", Addrs: []string{good}, Labels: map[string]string{"namespace": nsGood}},
		{Job: "workload-bad", Addrs: []string{bad}, Labels: map[string]string{"namespace": nsBad}},
	}, []string{ruleFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prometheus log:\n%s", prom.Log())
		}
		prom.Stop()
	})
	query := func(expr string) ([]testprom.Sample, error) { return prom.Query(ctx, expr) }
	// On failure, what Prometheus has: the targets' health and the inputs
	// of the hit ratio.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, expr := range []string{"up", "cacheplane_policy_hits_total", "cacheplane_policy_misses_total", "cacheplane:policy_hit_ratio:rate5m"} {
			v, err := query(expr)
			t.Logf("%s: %v %v", expr, v, err)
		}
	})
	nonEmpty := func(what, expr string, timeout time.Duration) {
		t.Helper()
		eventually(t, timeout, 500*time.Millisecond, what, func() (bool, string) {
			v, err := query(expr)
			if err != nil {
				return false, err.Error()
			}
			return len(v) > 0, fmt.Sprintf("%d series from %s", len(v), expr)
		})
	}

	// Counters must be scraped at their start values, or rate() sees no increase.
	nonEmpty("the manager's series scraped", fmt.Sprintf(`cacheplane_policy_misses_total{namespace=%q,prefix="users"} == 0`, nsGood), time.Minute)
	// Warm the good cache: 20 hot users, read over and over.
	get(t, good, 600, func(i int) string { return fmt.Sprintf("/users/%d", i%20) })
	nonEmpty("a high recorded hit ratio of "+nsGood,
		fmt.Sprintf(`cacheplane:policy_hit_ratio:rate5m{namespace=%q} > 0.8`, nsGood), time.Minute)

	// Invalidate it, then read only users nobody read before: all misses.
	kubectl(t, "patch", "cachepolicy", "demo", "-n", nsGood, "--type", "merge", "-p", `{"spec":{"invalidation":{"token":"v2"}}}`)
	eventually(t, time.Minute, 200*time.Millisecond, "the invalidation of "+nsGood+" to complete", func() (bool, string) {
		run := policy(t, nsGood).Status.LastInvalidation
		return run != nil && run.Token == "v2" && run.Phase == "Complete", fmt.Sprintf("%+v", run)
	})
	get(t, good, 3000, func(i int) string { return fmt.Sprintf("/users/cold-%d", i) })

	// Stop the bad policy's Redis in the middle of a run held to 1 key/s.
	if err := redistest.Fill(ctx, r2.Client(), nsBad+":users:bulk-%d", 30); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "patch", "cachepolicy", "demo", "-n", nsBad, "--type", "merge", "-p", `{"spec":{"invalidation":{"token":"v2"}}}`)
	eventually(t, time.Minute, 100*time.Millisecond, "the run of "+nsBad+" to start", func() (bool, string) {
		n := startedEvents(t, nsBad, "started")
		return n > 0, fmt.Sprintf("%d InvalidationStarted events", n)
	})
	r2.Stop()
	eventually(t, time.Minute, 200*time.Millisecond, "the run of "+nsBad+" to fail", func() (bool, string) {
		run := policy(t, nsBad).Status.LastInvalidation
		return run != nil && run.Phase == "Failed", fmt.Sprintf("%+v", run)
	})
	// Reads of the bad workload now fail in Redis (and fall through to its store).
	stopErrors := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopErrors:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if resp, err := http.Get(fmt.Sprintf("http://%s/users/%d", bad, i%5)); err == nil {
				resp.Body.Close()
			}
		}
	})
	t.Cleanup(func() { close(stopErrors); wg.Wait() })

	// Every query of the dashboard returns data.
	for _, q := range queries {
		nonEmpty(fmt.Sprintf("dashboard panel %q", q.Panel), q.Expr, 90*time.Second)
	}
	// Every rule's expression returns data, and Prometheus evaluates every
	// rule without error, with every alert pending (its for: not yet over)
	// or firing.
	rules, err := prom.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) < 5 {
		t.Fatalf("Prometheus loaded %d rules from %s", len(rules), ruleFile)
	}
	for _, r := range rules {
		nonEmpty(fmt.Sprintf("%s rule %s", r.Type, r.Name), r.Query, 90*time.Second)
	}
	eventually(t, time.Minute, time.Second, "every rule healthy, every alert pending or firing", func() (bool, string) {
		rules, err := prom.Rules(ctx)
		if err != nil {
			return false, err.Error()
		}
		var bad []string
		for _, r := range rules {
			if r.Health != "ok" || (r.Type == "alerting" && r.State != "pending" && r.State != "firing") {
				bad = append(bad, fmt.Sprintf("%s: health %s %s, state %s", r.Name, r.Health, r.LastError, r.State))
			}
		}
		return len(bad) == 0, strings.Join(bad, "; ")
	})
}

// buildWorkload builds examples/workload into the test's directory.
func buildWorkload(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "workload")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/workload")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/workload: %v\n%s", err, out)
	}
	return bin
}

// startWorkload runs the example workload for keyPrefix on redisURL, flushing
// its counters every 200ms, and returns its address once it is healthy.
func startWorkload(t *testing.T, bin, redisURL, keyPrefix string) string {
	t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-listen", addr, "-redis-url", redisURL, "-key-prefix", keyPrefix,
		"-stats-flush", "200ms", "-store-latency", "0s")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	logs := &testenv.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("workload %s log:\n%s", keyPrefix, logs.String())
		}
	})
	eventually(t, 30*time.Second, 100*time.Millisecond, "workload "+keyPrefix+" healthy", func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return addr
}

// get sends n GETs of path(i) to the workload at addr, 8 at a time.
func get(t *testing.T, addr string, n int, path func(int) string) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				resp, err := http.Get("http://" + addr + path(i))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("GET %s: %v", path(i), err))
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(errs), n, errs[0])
	}
}
