package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/internal/testenv"
	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

var pluginBuild struct {
	once sync.Once
	dir  string
	err  error
}

// pluginDir builds cmd/kubectl-cacheplane once into a directory of its own,
// to be put on PATH, where kubectl's plugin discovery finds it.
func pluginDir(t *testing.T) string {
	t.Helper()
	pluginBuild.once.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			pluginBuild.err = err
			return
		}
		dir, err := os.MkdirTemp("", "cacheplane-plugin-")
		if err != nil {
			pluginBuild.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-cacheplane"), "./cmd/kubectl-cacheplane")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			pluginBuild.err = fmt.Errorf("go build ./cmd/kubectl-cacheplane: %w\n%s", err, out)
			return
		}
		pluginBuild.dir = dir
	})
	if pluginBuild.err != nil {
		t.Fatal(pluginBuild.err)
	}
	return pluginBuild.dir
}

// pluginResult is what one `kubectl cacheplane` run printed and returned.
type pluginResult struct {
	stdout, stderr string
	code           int
}

// pluginCommand returns `kubectl cacheplane args...` with the plugin on PATH
// and KUBECONFIG pointing at the test API server; env overrides variables.
func pluginCommand(ctx context.Context, t *testing.T, env2 []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	dir := pluginDir(t)
	cmd, err := env.KubectlCommand(ctx, append([]string{"cacheplane"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	// Later entries win: exec keeps the last value of a repeated variable.
	cmd.Env = append(cmd.Env, "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Env = append(cmd.Env, env2...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// plugin runs `kubectl cacheplane args...` to its end.
func plugin(t *testing.T, args ...string) pluginResult {
	t.Helper()
	return pluginEnv(t, nil, args...)
}

func pluginEnv(t *testing.T, env2 []string, args ...string) pluginResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, stdout, stderr := pluginCommand(ctx, t, env2, args...)
	return finish(t, cmd.Run(), stdout, stderr)
}

func finish(t *testing.T, err error, stdout, stderr *bytes.Buffer) pluginResult {
	t.Helper()
	r := pluginResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("kubectl cacheplane: %v", err)
	}
	return r
}

func (r pluginResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// TestKubectlPluginStatusAndStats runs the plugin through kubectl's plugin
// discovery: status shows conditions and the per-prefix table, stats ranks
// two policies by hit ratio, and kubectl's -n, --kubeconfig and --context
// flags reach it.
func TestKubectlPluginStatusAndStats(t *testing.T) {
	dumpLogsOnFailure(t)
	if r := plugin(t, "--help"); r.code != 0 || !strings.Contains(r.stdout, "kubectl cacheplane") {
		t.Fatalf("kubectl cacheplane --help through plugin discovery: %s", r)
	}
	ctx := context.Background()
	nsHigh, nsLow := namespace(t), namespace(t)
	for _, c := range []struct {
		ns   string
		hits int
	}{{nsHigh, 9}, {nsLow, 1}} {
		applySample(t, c.ns, c.ns, 0, func(spec map[string]any) { spec["statsInterval"] = "1s" })
		pod := newCache(t, c.ns, 0, func(cfg *cache.Config) { cfg.StatsFlushInterval = 100 * time.Millisecond })
		if err := pod.Set(ctx, "users:1", "Ada", 0); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			key := "users:1"
			if i >= c.hits {
				key = fmt.Sprintf("users:absent-%d", i)
			}
			if _, err := pod.Get(ctx, key, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	for ns, want := range map[string]string{nsHigh: "90.0%", nsLow: "10.0%"} {
		eventually(t, 30*time.Second, 200*time.Millisecond, "hit ratio in status of "+ns, func() (bool, string) {
			got := policy(t, ns).Status.HitRatio
			return got == want, got
		})
	}

	st := plugin(t, "status", "demo", "-n", nsHigh)
	if st.code != 0 {
		t.Fatalf("status: %s", st)
	}
	for _, want := range []string{"Ready", "True", "RedisConnected", "Key prefix:", nsHigh, "90.0%", "PREFIX", "GENERATION", "TTL", "HIT RATIO", "Last invalidation:"} {
		if !strings.Contains(st.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, st.stdout)
		}
	}
	// users: generation, TTL 10m, 9 hits, 1 miss.
	if !hasRow(st.stdout, "users", "10m0s", "9", "1", "0", "90.0%") || !hasRow(st.stdout, "products", "1m0s") {
		t.Errorf("status: no prefix rows for users (10m0s, 9 hits, 1 miss, 90.0%%) and products (1m0s):\n%s", st.stdout)
	}

	all := plugin(t, "stats", "-A")
	if all.code != 0 {
		t.Fatalf("stats -A: %s", all)
	}
	hi, lo := lineIndex(all.stdout, nsHigh), lineIndex(all.stdout, nsLow)
	if hi < 0 || lo < 0 || hi > lo {
		t.Errorf("stats -A: want %s (90.0%%) listed before %s (10.0%%):\n%s", nsHigh, nsLow, all.stdout)
	}
	if !hasRow(all.stdout, nsHigh, "demo", "True", "90.0%", "9", "1") {
		t.Errorf("stats -A: no row for %s with 90.0%%, 9 hits, 1 miss:\n%s", nsHigh, all.stdout)
	}

	// --kubeconfig, with KUBECONFIG pointing nowhere, and -n.
	one := pluginEnv(t, []string{"KUBECONFIG=/nonexistent"}, "stats", "--kubeconfig", env.Kubeconfig, "-n", nsLow)
	if one.code != 0 || !strings.Contains(one.stdout, "10.0%") || strings.Contains(one.stdout, "90.0%") {
		t.Errorf("stats --kubeconfig -n %s: want only the 10.0%% policy: %s", nsLow, one)
	}
	// --context: the kubeconfig's own context works, another is refused.
	current := strings.TrimSpace(kubectl(t, "config", "current-context"))
	if r := plugin(t, "status", "demo", "-n", nsLow, "--context", current); r.code != 0 {
		t.Errorf("--context %s: %s", current, r)
	}
	if r := plugin(t, "status", "demo", "-n", nsLow, "--context", "no-such-context"); r.code != 1 || !strings.Contains(r.stderr, "no-such-context") {
		t.Errorf("--context no-such-context: want exit 1 naming the context: %s", r)
	}
	if r := plugin(t, "status", "absent", "-n", nsLow); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("status of a missing policy: want exit 1, not found: %s", r)
	}
}

// TestKubectlPluginInvalidateWait: invalidate --prefix --wait edits the token
// and prefixes, returns 0 once the run completed and prints its result; a run
// slower than --timeout exits 2.
func TestKubectlPluginInvalidateWait(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := context.Background()
	ns := namespace(t)
	applySample(t, ns, ns, 1, nil)
	c := newCache(t, ns, 1, nil)
	for i := range 20 {
		if err := c.Set(ctx, fmt.Sprintf("users:%d", i), i, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if err := c.Set(ctx, fmt.Sprintf("products:%d", i), i, 0); err != nil {
			t.Fatal(err)
		}
	}
	genBefore := generationOf(t, ns, "users")

	r := plugin(t, "invalidate", "demo", "-n", ns, "--prefix", "users", "--wait", "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("invalidate --wait: %s", r)
	}
	p := policy(t, ns)
	token := p.Spec.Invalidation.Token
	if !strings.HasPrefix(token, "kubectl-cacheplane-") || !strings.Contains(r.stdout, token) {
		t.Errorf("spec.invalidation.token = %q; output:\n%s", token, r.stdout)
	}
	if got := p.Spec.Invalidation.Prefixes; len(got) != 1 || got[0] != "users" {
		t.Errorf("spec.invalidation.prefixes = %v, want [users]", got)
	}
	run := p.Status.LastInvalidation
	if run == nil || run.Token != token || run.Phase != cachev1alpha1.InvalidationComplete || run.KeysDeleted != 20 {
		t.Fatalf("status.lastInvalidation = %+v, want the token's run Complete with 20 keys deleted", run)
	}
	if !strings.Contains(r.stdout, "invalidation complete: prefixes [users], deleted 20 keys") {
		t.Errorf("invalidate --wait output lacks the run's result:\n%s", r.stdout)
	}
	if g := generationOf(t, ns, "users"); g <= genBefore {
		t.Errorf("users generation %d after the run, was %d", g, genBefore)
	}
	if n, err := rawRedis(t, 1).Exists(ctx, ns+":products:0", ns+":products:4").Result(); err != nil || n != 2 {
		t.Errorf("products keys after a users-only run: %d of 2 exist (%v)", n, err)
	}

	// A run held to 1 key per second outlasts a 2s --timeout: exit code 2.
	kubectl(t, "patch", "cachepolicy", "demo", "-n", ns, "--type", "merge", "-p", `{"spec":{"invalidation":{"maxKeysPerSecond":1}}}`)
	for i := range 30 {
		if err := c.Set(ctx, fmt.Sprintf("users:slow-%d", i), i, 0); err != nil {
			t.Fatal(err)
		}
	}
	r = plugin(t, "invalidate", "demo", "-n", ns, "--wait", "--timeout", "2s")
	if r.code != 2 || !strings.Contains(r.stderr, "timed out") {
		t.Errorf("invalidate --wait --timeout 2s of a 30s run: want exit 2, timed out: %s", r)
	}
}

// TestKubectlPluginInvalidateFailedRun: a run whose Redis goes away while it
// runs is reported Failed, and invalidate --wait exits 1 with its message.
func TestKubectlPluginInvalidateFailedRun(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := context.Background()
	r2, err := redistest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Close)
	ns := namespace(t)
	applySample(t, ns, ns, 0, func(spec map[string]any) {
		spec["redis"].(map[string]any)["url"] = r2.URL(0)
		spec["invalidation"] = map[string]any{"token": "v1", "maxKeysPerSecond": 1}
	})
	if err := redistest.Fill(ctx, r2.Client(), ns+":users:%d", 30); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd, stdout, stderr := pluginCommand(wctx, t, nil, "invalidate", "demo", "-n", ns, "--wait", "--timeout", "90s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The run writes no status while one rate-limited SCAN batch deletes
	// (1 key/s); its InvalidationStarted Event says it has begun. The token
	// the policy was created with was adopted without a run, so any such
	// Event is the plugin's run.
	eventually(t, 60*time.Second, 100*time.Millisecond, "the plugin's run to start", func() (bool, string) {
		n := startedEvents(t, ns, "started")
		return n > 0, fmt.Sprintf("%d InvalidationStarted events", n)
	})
	r2.Stop()
	r := finish(t, cmd.Wait(), stdout, stderr)
	if r.code != 1 || !strings.Contains(r.stderr, "failed") {
		t.Errorf("invalidate --wait of a run whose Redis stopped: want exit 1, failed: %s", r)
	}
}

// generationOf reads status.prefixes[name].generation.
func generationOf(t *testing.T, ns, prefix string) int64 {
	t.Helper()
	for _, ps := range policy(t, ns).Status.Prefixes {
		if ps.Name == prefix {
			return ps.Generation
		}
	}
	t.Fatalf("no prefix %s in status", prefix)
	return 0
}

// hasRow reports whether a line of out holds the fields in this order.
func hasRow(out string, fields ...string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		i := 0
		for _, x := range f {
			if i < len(fields) && x == fields[i] {
				i++
			}
		}
		if i == len(fields) {
			return true
		}
	}
	return false
}

// lineIndex is the number of the first line of out containing s, or -1.
func lineIndex(out, s string) int {
	for i, line := range strings.Split(out, "\n") {
		if strings.Contains(line, s) {
			return i
		}
	}
	return -1
}
