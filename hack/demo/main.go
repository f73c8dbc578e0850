// Command demo is `make demo`: the whole of cacheplane on a machine without a
// cluster. It starts a local control plane (envtest's etcd and kube-apiserver,
// with the CRDs installed), a redis-server, the manager binary, the example
// workload and its load generator; applies the sample CachePolicy with the real
// kubectl; shows `kubectl get cachepolicies` while the hit ratio climbs;
// invalidates with a `kubectl patch` of the token; and then keeps everything
// running for the user to try until Ctrl-C, when it stops every process it
// started. It does the same cleanup when a step fails.
//
// Every wait has a timeout and says what it waits for. Run it from the
// repository root (make demo does); KUBEBUILDER_ASSETS names the envtest
// binaries, else hack/envtest.sh finds or builds them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/internal/testenv"
	"github.com/cacheplane/cacheplane/internal/testprom"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// options are the command line.
type options struct {
	exitAfterInvalidation bool
	rate                  float64
	hotKeys               int
	hitRatioTarget        float64
	warmup                time.Duration
	refresh               time.Duration
	token                 string
	keepLogs              bool
	prometheus            bool
	dashboardPNG          string
}

func main() {
	var o options
	flag.BoolVar(&o.exitAfterInvalidation, "exit-after-invalidation", false, "Stop everything and exit once the first invalidation has completed (for smoke tests).")
	flag.Float64Var(&o.rate, "rate", 100, "Requests per second the load generator sends.")
	flag.IntVar(&o.hotKeys, "hot-keys", 20, "Hot ids per kind the load generator reads (loadgen -hot-keys); more make the hit ratio climb slower, after the start and after the invalidation.")
	flag.Float64Var(&o.hitRatioTarget, "hit-ratio", 80, "Invalidate once status.hitRatio reaches this many percent...")
	flag.DurationVar(&o.warmup, "warmup", 90*time.Second, "...or once this long has passed.")
	flag.DurationVar(&o.refresh, "refresh", 30*time.Second, "How often to show `kubectl get cachepolicies` after the invalidation; 0 never.")
	flag.StringVar(&o.token, "token", "v2", "The spec.invalidation.token the demo sets to trigger its invalidation.")
	flag.BoolVar(&o.keepLogs, "keep-logs", false, "Keep the demo's directory (logs, binaries) instead of removing it at exit.")
	flag.BoolVar(&o.prometheus, "prometheus", false, "Also start a Prometheus (the prometheus binary on PATH) scraping the manager and the workload, with config/prometheus/rules.yaml loaded, and print its URL.")
	flag.StringVar(&o.dashboardPNG, "dashboard-png", "", "After the invalidation, wait until Prometheus sees the hit ratio climb back, then draw the dashboard's hit-ratio and invalidation-run panels over the demo's lifetime into this PNG (bench's -dashboard-png mode; make dashboard-png). Implies --prometheus.")
	flag.Parse()
	if o.dashboardPNG != "" {
		o.prometheus = true
		// The demo changes to the repository root and bench runs in bench/.
		abs, err := filepath.Abs(o.dashboardPNG)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		o.dashboardPNG = abs
	}

	d := &demo{opts: o, out: os.Stdout, start: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	interrupted := d.handleSignals(cancel)

	err := d.run(ctx)
	switch {
	case err == nil:
		d.say("Stopped everything the demo started. Bye.")
	case interrupted() && errors.Is(err, context.Canceled):
		d.say("Stopped everything the demo started. Bye.")
	default:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// demo is one run of the demo: what it started and how to stop it.
type demo struct {
	opts  options
	out   io.Writer
	start time.Time
	mu    sync.Mutex // serialises output

	dir      string // temporary directory: binaries, logs, the applied sample
	cleanups []cleanup
	children []*child
	current  string // what cleanup is doing, for a second Ctrl-C

	env        *testenv.Env
	kubectl    string
	k8s        client.Client
	redis      *redistest.Server
	metricsURL string // the manager's Prometheus endpoint
	promURL    string // the demo's Prometheus, with --prometheus
	prom       *testprom.Server
	promStart  time.Time
}

type cleanup struct {
	what string
	fn   func() error
}

// onCleanup registers fn to run at exit, before the functions registered earlier.
func (d *demo) onCleanup(what string, fn func() error) {
	d.cleanups = append(d.cleanups, cleanup{what, fn})
}

// cleanUp stops and removes everything in reverse order of creation.
func (d *demo) cleanUp() {
	if len(d.cleanups) == 0 {
		return
	}
	d.say("Cleaning up")
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		c := d.cleanups[i]
		d.mu.Lock()
		d.current = c.what
		d.mu.Unlock()
		t := time.Now()
		if err := c.fn(); err != nil {
			d.note("%s: %v", c.what, err)
		} else {
			d.note("%s: done (%s)", c.what, time.Since(t).Round(time.Millisecond))
		}
	}
	d.cleanups = nil
}

// handleSignals cancels ctx at the first SIGINT or SIGTERM. Later signals do
// not kill the demo half-way through its cleanup (that would leave etcd and
// kube-apiserver running); they say what it is waiting for.
func (d *demo) handleSignals(cancel context.CancelFunc) (interrupted func() bool) {
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	var mu sync.Mutex
	got := false
	go func() {
		for s := range sigc {
			mu.Lock()
			first := !got
			got = true
			mu.Unlock()
			if first {
				fmt.Fprintf(d.out, "\n")
				d.say("Got %v: stopping", s)
				cancel()
				continue
			}
			d.mu.Lock()
			cur := d.current
			d.mu.Unlock()
			d.note("still cleaning up (%s); every step has a timeout, please wait", cur)
		}
	}()
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

// say prints a step.
func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "[%6.1fs] ==> %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// note prints a detail of the current step.
func (d *demo) note(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "           %s\n", fmt.Sprintf(format, args...))
}

// block prints preformatted text, indented.
func (d *demo) block(text string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for line := range strings.SplitSeq(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(d.out, "             %s\n", line)
	}
}

// run does the demo; its deferred cleanup stops everything, whatever happens.
func (d *demo) run(ctx context.Context) (err error) {
	defer d.cleanUp()
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "cacheplane-demo-"); err != nil {
		return err
	}
	d.onCleanup("removing "+d.dir, func() error {
		if d.opts.keepLogs {
			d.note("kept %s (--keep-logs)", d.dir)
			return nil
		}
		return os.RemoveAll(d.dir)
	})
	d.say("cacheplane demo: a local control plane, Redis, the manager and an example workload. Ctrl-C stops everything.")
	d.note("working directory %s", d.dir)

	if err := d.startControlPlaneAndBuild(ctx); err != nil {
		return err
	}
	if err := d.startRedis(); err != nil {
		return err
	}
	if err := d.startManager(ctx); err != nil {
		return err
	}
	if err := d.applySample(ctx); err != nil {
		return err
	}
	workloadURL, err := d.startWorkload(ctx)
	if err != nil {
		return err
	}
	if d.opts.prometheus {
		if err := d.startPrometheus(ctx, workloadURL); err != nil {
			return err
		}
	}
	if err := d.warmUp(ctx); err != nil {
		return err
	}
	if err := d.invalidate(ctx); err != nil {
		return err
	}
	if d.opts.dashboardPNG != "" {
		if err := d.drawDashboard(ctx); err != nil {
			return err
		}
	}
	d.printNextSteps(workloadURL)
	if d.opts.exitAfterInvalidation {
		d.say("--exit-after-invalidation: stopping")
		d.stopLoad()
		return nil
	}
	return d.keepRunning(ctx)
}

// during runs fn, printing a note every 15s until it returns, so that a long
// step (a first build, a slow control plane) never looks hung. fn must end on
// its own (each has a timeout); during waits for it even after ctx ends, so
// that whatever fn started can be cleaned up.
func (d *demo) during(ctx context.Context, what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			suffix := ""
			if ctx.Err() != nil {
				suffix = " (finishing before cleaning up)"
			}
			d.note("still %s (%s)%s", what, time.Since(start).Round(time.Second), suffix)
		}
	}
}

// waitFor polls check every interval until it reports done, printing what it
// waits for first and its last status every 10s. It fails when timeout
// passes, ctx ends or a child process dies.
func (d *demo) waitFor(ctx context.Context, what string, timeout, interval time.Duration, check func(context.Context) (bool, string, error)) error {
	d.note("waiting for %s (at most %s)", what, timeout)
	start, lastNote := time.Now(), time.Now()
	var status string
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		if err := d.childFailure(); err != nil {
			return false, err
		}
		ok, st, err := check(ctx)
		if st != "" {
			status = st
		}
		if err != nil || ok {
			return ok, err
		}
		if time.Since(lastNote) >= 10*time.Second {
			lastNote = time.Now()
			d.note("still waiting for %s (%s): %s", what, time.Since(start).Round(time.Second), status)
		}
		return false, nil
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case wait.Interrupted(err):
		return fmt.Errorf("timed out after %s waiting for %s; last seen: %s", timeout, what, status)
	}
	return err
}

// startControlPlaneAndBuild starts envtest and builds the binaries at once:
// both take a while, and the build is mostly CPU while envtest mostly waits.
func (d *demo) startControlPlaneAndBuild(ctx context.Context) error {
	assets, err := testenv.AssetsDir() // may build them first (minutes, once per machine)
	if err != nil {
		return err
	}
	d.say("Starting a local control plane (etcd + kube-apiserver from %s, CRDs from config/crd/bases)", assets)
	d.say("Building the manager, the workload and the load generator (go build; a first build takes a few minutes)")
	var (
		wg                 sync.WaitGroup
		envErr, buildErr   error
		envTime, buildTime time.Duration
	)
	wg.Go(func() {
		t := time.Now()
		env, _, err := testenv.Start()
		envTime, envErr = time.Since(t), err
		if err == nil {
			d.env = env
			d.onCleanup("stopping the control plane (kube-apiserver, etcd)", env.Stop)
		}
	})
	wg.Go(func() {
		t := time.Now()
		bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(bctx, "go", "build", "-o", filepath.Join(d.dir, "bin")+"/",
			"./cmd/manager", "./examples/workload", "./examples/loadgen")
		out, err := cmd.CombinedOutput()
		buildTime, buildErr = time.Since(t), err
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	_ = d.during(ctx, "building and starting the control plane", func() error { wg.Wait(); return nil })
	// onCleanup ran on another goroutine; wg.Wait ordered it before this read.
	if err := errors.Join(envErr, buildErr, ctx.Err()); err != nil {
		return err
	}
	d.note("control plane up in %s; binaries built in %s", envTime.Round(100*time.Millisecond), buildTime.Round(100*time.Millisecond))
	if d.kubectl, err = testenv.KubectlPath(); err != nil {
		return err
	}
	d.k8s, err = client.New(d.env.Config, client.Options{Scheme: testenv.Scheme()})
	return err
}

func (d *demo) startRedis() error {
	d.say("Starting redis-server on a free port")
	srv, err := redistest.Start()
	if err != nil {
		return err
	}
	d.redis = srv
	d.onCleanup("stopping redis-server", func() error { srv.Close(); return nil })
	d.note("Redis at %s", srv.URL(0))
	return nil
}

func (d *demo) startManager(ctx context.Context) error {
	metricsPort, err := redistest.FreePort()
	if err != nil {
		return err
	}
	probePort, err := redistest.FreePort()
	if err != nil {
		return err
	}
	d.say("Starting the manager (bin/manager; log: %s)", filepath.Join(d.dir, "manager.log"))
	if _, err := d.startChild("manager", "manager.log", filepath.Join(d.dir, "bin", "manager"),
		"--kubeconfig", d.env.Kubeconfig,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		// Plain HTTP on loopback, so curl and the demo's Prometheus need no
		// token; in a cluster the endpoint is HTTPS with token checks.
		"--metrics-secure=false",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probePort),
	); err != nil {
		return err
	}
	d.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	return d.waitFor(ctx, "the manager's /readyz", time.Minute, 200*time.Millisecond, httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort)))
}

// httpOK is a check that url answers 200.
func httpOK(url string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	}
}

const samplePath = "config/samples/cache_v1alpha1_cachepolicy.yaml"

// applySample applies the sample policy, pointed at the demo's Redis.
func (d *demo) applySample(ctx context.Context) error {
	raw, err := os.ReadFile(samplePath)
	if err != nil {
		return err
	}
	policy, err := rewriteSample(raw, d.redis.URL(0))
	if err != nil {
		return fmt.Errorf("%s: %w", samplePath, err)
	}
	applied := filepath.Join(d.dir, "cachepolicy.yaml")
	if err := os.WriteFile(applied, policy, 0o644); err != nil {
		return err
	}
	d.say("Applying the sample policy %s with spec.redis.url set to %s", samplePath, d.redis.URL(0))
	if _, err := d.kube(ctx, true, "apply", "-f", applied); err != nil {
		return err
	}
	return d.waitFor(ctx, "CachePolicy demo to be Ready (published to Redis)", time.Minute, 200*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			p, err := d.policy(ctx)
			if err != nil {
				return false, err.Error(), nil
			}
			c := meta.FindStatusCondition(p.Status.Conditions, cachev1alpha1.ConditionReady)
			if c == nil {
				return false, "no Ready condition yet", nil
			}
			return c.Status == metav1.ConditionTrue && c.ObservedGeneration == p.Generation, fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message), nil
		})
}

// rewriteSample points the sample's spec.redis.url at url.
func rewriteSample(raw []byte, url string) ([]byte, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	spec, _ := obj["spec"].(map[string]any)
	redis, _ := spec["redis"].(map[string]any)
	if redis == nil {
		return nil, errors.New("no spec.redis in the sample")
	}
	redis["url"] = url
	return yaml.Marshal(obj)
}

func (d *demo) policy(ctx context.Context) (*cachev1alpha1.CachePolicy, error) {
	p := &cachev1alpha1.CachePolicy{}
	return p, d.k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "demo"}, p)
}

// kube runs the real kubectl against the demo's API server; show prints the
// command (as the user would type it) and its output.
func (d *demo) kube(ctx context.Context, show bool, args ...string) (string, error) {
	kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd, err := d.env.KubectlCommand(kctx, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if show {
		d.block("$ kubectl " + shellJoin(args) + "\n" + string(out))
	}
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", shellJoin(args), err, out)
	}
	return string(out), nil
}

// shellJoin quotes the arguments that a shell would split.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'{}$*?;&|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// startWorkload starts the example service and the load generator.
func (d *demo) startWorkload(ctx context.Context) (string, error) {
	port, err := redistest.FreePort()
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	d.say("Starting the example workload at %s (key prefix demo; log: %s)", url, filepath.Join(d.dir, "workload.log"))
	if _, err := d.startChild("workload", "workload.log", filepath.Join(d.dir, "bin", "workload"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", port),
		"-redis-url", d.redis.URL(0),
		"-key-prefix", "demo",
		// Flushed often, so the hit ratio in status follows the load closely.
		"-stats-flush", "1s",
	); err != nil {
		return "", err
	}
	if err := d.waitFor(ctx, "the workload's /healthz", 30*time.Second, 100*time.Millisecond, httpOK(url+"/healthz")); err != nil {
		return "", err
	}
	d.say("Starting the load generator: %.0f req/s, 90%% of them on %d hot users and products (log: %s)", d.opts.rate, d.opts.hotKeys, filepath.Join(d.dir, "loadgen.log"))
	_, err = d.startChild("load generator", "loadgen.log", filepath.Join(d.dir, "bin", "loadgen"),
		"-target", url, "-rate", strconv.FormatFloat(d.opts.rate, 'f', -1, 64), "-hot-keys", strconv.Itoa(d.opts.hotKeys))
	return url, err
}

// warmUp shows `kubectl get cachepolicies` every 5s until the hit ratio in
// status reaches the target (or the warm-up time is up).
func (d *demo) warmUp(ctx context.Context) error {
	d.say("Watching the hit ratio climb: the workload flushes its counters to Redis every second, the manager copies them into status every spec.statsInterval (5s)")
	d.note("showing kubectl get every 5s until Hit Ratio reaches %.0f%% (at most %s)", d.opts.hitRatioTarget, d.opts.warmup)
	deadline := time.Now().Add(d.opts.warmup)
	shown := 0
	for {
		if err := d.childFailure(); err != nil {
			return err
		}
		if _, err := d.kube(ctx, true, "get", "cachepolicies"); err != nil {
			return err
		}
		shown++
		p, err := d.policy(ctx)
		if err != nil {
			return err
		}
		ratio, ok := parseRatio(p.Status.HitRatio)
		switch {
		case ok && ratio >= d.opts.hitRatioTarget && shown >= 2:
			d.note("hit ratio %s: %d hits, %d misses reported by the workload", p.Status.HitRatio, p.Status.Hits, p.Status.Misses)
			return nil
		case time.Now().After(deadline):
			d.note("hit ratio %q after %s, below %.0f%%; going on anyway", p.Status.HitRatio, d.opts.warmup, d.opts.hitRatioTarget)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// parseRatio reads a status hit ratio such as "94.8%".
func parseRatio(s string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	return f, err == nil && strings.HasSuffix(s, "%")
}

// invalidate patches the token and follows the run to completion.
func (d *demo) invalidate(ctx context.Context) error {
	d.say("Invalidating: a new spec.invalidation.token runs one invalidation of every prefix")
	patch := fmt.Sprintf(`{"spec":{"invalidation":{"token":%q}}}`, d.opts.token)
	if _, err := d.kube(ctx, true, "patch", "cachepolicy", "demo", "--type", "merge", "-p", patch); err != nil {
		return err
	}
	d.note("the manager bumps each prefix's generation in Redis first (every workload treats older entries as misses at once), then SCANs and UNLINKs the keys")
	var run *cachev1alpha1.InvalidationStatus
	err := d.waitFor(ctx, fmt.Sprintf("the invalidation for token %s to complete", d.opts.token), 2*time.Minute, 200*time.Millisecond,
		func(ctx context.Context) (bool, string, error) {
			p, err := d.policy(ctx)
			if err != nil {
				return false, err.Error(), nil
			}
			run = p.Status.LastInvalidation
			if run == nil || run.Token != d.opts.token {
				return false, "run not started yet", nil
			}
			if run.Phase == cachev1alpha1.InvalidationFailed {
				d.note("attempt failed, the manager retries: %s", run.Message)
			}
			return run.Phase == cachev1alpha1.InvalidationComplete, fmt.Sprintf("phase %s, %d keys deleted", run.Phase, run.KeysDeleted), nil
		})
	if err != nil {
		return err
	}
	d.say("Invalidation complete: %s", run.Message)
	if _, err := d.kube(ctx, true, "get", "cachepolicies"); err != nil {
		return err
	}
	if _, err := d.kube(ctx, true, "get", "cachepolicy", "demo", "-o",
		`jsonpath={range .status.prefixes[*]}{.name}{": generation "}{.generation}{", ttl "}{.ttl}{", hit ratio "}{.hitRatio}{"\n"}{end}`); err != nil {
		return err
	}
	_, err = d.kube(ctx, true, "get", "events", "--field-selector", "involvedObject.name=demo", "--sort-by", ".metadata.creationTimestamp")
	return err
}

// printNextSteps tells the user how to drive the running demo.
func (d *demo) printNextSteps(workloadURL string) {
	kc := d.env.Kubeconfig
	d.say("Everything is running. In another terminal:")
	d.block(fmt.Sprintf(`KUBECONFIG=%[1]s %[2]s get cachepol

# or, for that shell:
export KUBECONFIG=%[1]s; alias kubectl=%[2]s
kubectl get cachepolicies -w                      # live hit ratio
kubectl patch cachepolicy demo --type merge -p '{"spec":{"invalidation":{"token":"v3"}}}'
kubectl edit cachepolicy demo                     # a new token, a prefix's ttl, a schedule such as "@every 1m"
kubectl get events --field-selector involvedObject.name=demo

curl -i %[3]s/users/1                  # X-Cache: HIT or MISS
curl -X PUT -d '{"name":"Ada"}' %[3]s/users/1
curl %[3]s/stats
curl -s %[4]s | grep ^cacheplane_
redis-cli -p %[5]d --scan --pattern 'demo:*' | head

logs: %[6]s/{manager,workload,loadgen}.log`,
		kc, d.kubectl, workloadURL, d.metricsURL, d.redis.Port, d.dir))
	if d.promURL != "" {
		d.block(fmt.Sprintf(`
Prometheus: %[1]s  (alerts: %[1]s/alerts)
curl -s '%[1]s/api/v1/query' --data-urlencode 'query=cacheplane:policy_hit_ratio:rate5m'`, d.promURL))
	}
}

// keepRunning shows the policy every --refresh until Ctrl-C.
func (d *demo) keepRunning(ctx context.Context) error {
	d.say("Running until Ctrl-C")
	var tick <-chan time.Time
	if d.opts.refresh > 0 {
		t := time.NewTicker(d.opts.refresh)
		defer t.Stop()
		tick = t.C
	}
	check := time.NewTicker(time.Second)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			d.stopLoad()
			return ctx.Err()
		case <-check.C:
			if err := d.childFailure(); err != nil {
				return err
			}
		case <-tick:
			if _, err := d.kube(ctx, true, "get", "cachepolicies"); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// stopLoad stops the load generator first and prints its summary.
func (d *demo) stopLoad() {
	for _, c := range d.children {
		if c.name == "load generator" {
			_ = c.stop(10 * time.Second)
			if line := lastLineWith(c.logPath, "done after"); line != "" {
				d.note("%s", line)
			}
		}
	}
}

// startPrometheus starts a Prometheus scraping the manager and the workload
// every 5s, with the alerts and recording rule of config/prometheus/rules.yaml.
func (d *demo) startPrometheus(ctx context.Context, workloadURL string) error {
	dir := filepath.Join(d.dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rules := filepath.Join(dir, "rules.yml")
	if err := testprom.WriteRuleFile("config/prometheus/rules.yaml", rules); err != nil {
		return err
	}
	d.say("Starting Prometheus (scrapes the manager and the workload every 5s; rules from config/prometheus/rules.yaml; log: %s)", filepath.Join(dir, "prometheus.log"))
	prom, err := testprom.Start(ctx, dir, 5*time.Second, []testprom.Target{
		{Job: "cacheplane-manager", Addrs: []string{strings.TrimSuffix(strings.TrimPrefix(d.metricsURL, "http://"), "/metrics")}},
		{Job: "workload", Addrs: []string{strings.TrimPrefix(workloadURL, "http://")}, Labels: map[string]string{"namespace": "default"}},
	}, []string{rules})
	if err != nil {
		return err
	}
	d.onCleanup("stopping Prometheus", func() error { prom.Stop(); return nil })
	d.promURL, d.prom, d.promStart = prom.URL, prom, time.Now()
	d.note("Prometheus at %s", prom.URL)
	return nil
}

// recentHitRatio is the hit ratio of the last 20s (the window the dashboard
// picture's rates use), over every policy.
const recentHitRatio = `sum(rate(cacheplane_policy_hits_total[20s])) / (sum(rate(cacheplane_policy_hits_total[20s])) + sum(rate(cacheplane_policy_misses_total[20s])))`

// drawDashboard is --dashboard-png: once the hit ratio has climbed back after
// the invalidation, bench's -dashboard-png mode runs the dashboard's queries
// against the demo's Prometheus, from its start to now, and draws them.
func (d *demo) drawDashboard(ctx context.Context) error {
	invalidated := time.Now()
	d.say("Watching the hit ratio climb back in Prometheus, for the dashboard picture")
	what := fmt.Sprintf("the hit ratio of the last 20s to reach %.0f%% again", d.opts.hitRatioTarget)
	err := d.waitFor(ctx, what, d.opts.warmup, time.Second, func(ctx context.Context) (bool, string, error) {
		v, err := d.prom.Query(ctx, recentHitRatio)
		if err != nil {
			return false, "", err
		}
		ratio, ok := sampleValue(v)
		if !ok {
			return false, "no lookups in the window", nil
		}
		// Until then the window still holds lookups from before the run.
		settled := time.Since(invalidated) > 30*time.Second
		return settled && ratio*100 >= d.opts.hitRatioTarget, fmt.Sprintf("%.1f%%", ratio*100), nil
	})
	if err != nil {
		if ctx.Err() != nil || d.childFailure() != nil || !strings.HasPrefix(err.Error(), "timed out") {
			return err
		}
		d.note("%v; drawing anyway", err)
	}
	d.say("Drawing the dashboard's hit-ratio and invalidation-run panels into %s (cd bench && go run . -dashboard-png)", d.opts.dashboardPNG)
	return d.during(ctx, "drawing the dashboard picture", func() error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a first build of bench/
		defer cancel()
		cmd := exec.CommandContext(rctx, "go", "run", ".", "-dashboard-png",
			"-prometheus", d.promURL,
			"-start", d.promStart.UTC().Format(time.RFC3339),
			"-end", time.Now().UTC().Format(time.RFC3339),
			"-out", d.opts.dashboardPNG)
		cmd.Dir = "bench"
		out, err := cmd.CombinedOutput()
		d.block(string(out))
		if err != nil {
			return fmt.Errorf("bench -dashboard-png: %w", err)
		}
		return nil
	})
}

// sampleValue is the value of a one-sample query answer; false for none or
// NaN (no lookups in the window).
func sampleValue(v []testprom.Sample) (float64, bool) {
	if len(v) != 1 {
		return 0, false
	}
	s, _ := v[0].Value[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil && !math.IsNaN(f)
}
