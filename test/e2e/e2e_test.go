package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/controllers"
	"github.com/cacheplane/cacheplane/internal/testenv"
	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

var measure = flag.Bool("e2e.measure", false, "Run the invalidation-visibility measurement (up to 1M keys); CACHEPLANE_MEASURE=1 does the same.")

var (
	env     *testenv.Env
	k8s     client.Client
	srv     *redistest.Server
	mgrLogs = &testenv.LogBuffer{}
	// managerMetrics is the address of the manager's metrics endpoint: plain
	// HTTP (as --metrics-secure=false serves it), for the Prometheus test;
	// cmd/manager's tests cover the secure endpoint.
	managerMetrics string
)

// TestMain starts what a user's cluster would hold: an API server with the
// CRDs, a Redis, and the manager (in process, so the race detector covers the
// controller too; the demo smoke test runs the manager binary).
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	if srv, err = redistest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	e, restCfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env = e
	defer env.Stop()
	if k8s, err = client.New(restCfg, client.Options{Scheme: testenv.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	ctrl.SetLogger(zap.New(zap.WriteTo(mgrLogs), zap.UseDevMode(true)))
	metricsPort, err := redistest.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	managerMetrics = fmt.Sprintf("127.0.0.1:%d", metricsPort)
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: managerMetrics},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := &controllers.CachePolicyReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("cachepolicy-controller"),
		// Shorter than the manager's 5s, so a run of a few seconds writes its
		// Running phase and checkpoints the way a long one does; the
		// measurement keeps the default, as in production.
		RunSlice: time.Second,
	}
	if measuring() {
		r.RunSlice = 0
	}
	if err := r.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	defer func() { cancel(); <-done }()
	return m.Run()
}

func measuring() bool { return *measure || os.Getenv("CACHEPLANE_MEASURE") == "1" }

// dumpLogsOnFailure prints the manager's log when t fails: the controller's
// view is what explains most end-to-end failures.
func dumpLogsOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			logs := mgrLogs.String()
			if len(logs) > 20000 {
				logs = "...\n" + logs[len(logs)-20000:]
			}
			t.Logf("manager log:\n%s", logs)
		}
	})
}

// kubectl runs the real kubectl against the test API server and fails the
// test when it fails.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runKubectl("", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runKubectl runs kubectl with stdin, returning its output.
func runKubectl(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, err := env.KubectlCommand(ctx, args...)
	if err != nil {
		return "", err
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.Output()
	if err != nil {
		msg := err.Error()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			msg += ": " + string(exitErr.Stderr)
		}
		return string(out), fmt.Errorf("kubectl %s: %s", strings.Join(args, " "), msg)
	}
	return string(out), nil
}

// namespace creates a namespace for one test, with kubectl.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.TrimPrefix(t.Name(), "Test"))
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("%s-%d", strings.Trim(name, "-"), time.Now().UnixNano()%100000)
	kubectl(t, "create", "namespace", name)
	return name
}

// applySample applies config/samples' policy into ns with kubectl: its Redis
// URL pointed at the test server's database db, its keyPrefix replaced (so
// tests sharing the server cannot see each other's keys or events), and any
// further changes edit makes to its spec. It waits until the policy is Ready.
func applySample(t *testing.T, ns, keyPrefix string, db int, edit func(spec map[string]any)) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "config", "samples", "cache_v1alpha1_cachepolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	spec := obj["spec"].(map[string]any)
	spec["redis"].(map[string]any)["url"] = srv.URL(db)
	spec["keyPrefix"] = keyPrefix
	if edit != nil {
		edit(spec)
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runKubectl(string(out), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "cachepolicy/demo", "--timeout=60s")
}

// jsonpath reads a field of the policy demo in ns with kubectl.
func jsonpath(t *testing.T, ns, path string) string {
	t.Helper()
	return kubectl(t, "get", "cachepolicy", "demo", "-n", ns, "-o", "jsonpath="+path)
}

// policy reads the policy demo in ns with the Go client, for the polling
// loops where a kubectl process per poll would be too slow.
func policy(t *testing.T, ns string) *cachev1alpha1.CachePolicy {
	t.Helper()
	p := &cachev1alpha1.CachePolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "demo"}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond every interval until it holds, failing the test
// after timeout with what cond last reported.
func eventually(t *testing.T, timeout, interval time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), interval, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %v; last seen: %s", what, timeout, last)
	}
}

// newCache connects a pkg/cache client, as a workload pod would.
func newCache(t *testing.T, keyPrefix string, db int, edit func(*cache.Config)) *cache.Cache {
	t.Helper()
	cfg := cache.Config{URL: srv.URL(db), KeyPrefix: keyPrefix}
	if edit != nil {
		edit(&cfg)
	}
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawRedis is a plain client of database db, to see what is really in Redis.
func rawRedis(t *testing.T, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: db})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startedEvents counts the InvalidationStarted Events of the policy demo in ns
// whose message contains substr, read with kubectl. Repeats that the event
// recorder folded into a series count as often as they happened.
func startedEvents(t *testing.T, ns, substr string) int {
	t.Helper()
	out := kubectl(t, "get", "events", "-n", ns, "-o", "json",
		"--field-selector", "reason="+controllers.ReasonInvalidationStarted+",involvedObject.name=demo")
	var list corev1.EventList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get events: %v\n%s", err, out)
	}
	n := 0
	for _, e := range list.Items {
		if !strings.Contains(e.Message, substr) {
			continue
		}
		count := max(1, int(e.Count))
		if e.Series != nil {
			count = max(count, int(e.Series.Count))
		}
		n += count
	}
	return n
}

// reconciled makes a harmless spec change with kubectl and waits until the
// controller has acted on it: every trigger it had seen before has been
// handled by then, so a test can count what a trigger did.
func reconciled(t *testing.T, ns string) {
	t.Helper()
	cur := jsonpath(t, ns, "{.spec.statsInterval}")
	next := "6s"
	if cur == next {
		next = "7s"
	}
	kubectl(t, "patch", "cachepolicy", "demo", "-n", ns, "--type", "merge", "-p", fmt.Sprintf(`{"spec":{"statsInterval":%q}}`, next))
	eventually(t, 30*time.Second, 50*time.Millisecond, "controller observes the spec change", func() (bool, string) {
		p := policy(t, ns)
		return p.Status.ObservedGeneration == p.Generation && p.Spec.StatsInterval.Duration.String() == next,
			fmt.Sprintf("generation %d, observed %d", p.Generation, p.Status.ObservedGeneration)
	})
}
