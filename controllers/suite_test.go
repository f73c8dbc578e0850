package controllers_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/controllers"
	"github.com/cacheplane/cacheplane/internal/testenv"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

var (
	env       *testenv.Env
	cfg       *rest.Config
	k8s       client.Client
	srv       *redistest.Server
	rdb       *redis.Client
	logs      = &testenv.LogBuffer{}
	managerMu sync.Mutex
	stopMgr   context.CancelFunc
	mgrDone   chan struct{}
)

func TestMain(m *testing.M) {
	srv = redistest.MustStart()
	var err error
	env, cfg, err = testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		srv.Close()
		os.Exit(1)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		panic(err)
	}
	rdb = srv.Client()
	ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true)))
	if err := startManager(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stopManager()
	rdb.Close()
	_ = env.Stop()
	srv.Close()
	os.Exit(code)
}

// startManager runs the package's controller in-process, as cmd/manager
// wires it.
func startManager() error {
	managerMu.Lock()
	defer managerMu.Unlock()
	m, err := runManager(managerOptions{})
	if err != nil {
		return err
	}
	stopMgr, mgrDone = m.cancel, m.done
	return nil
}

// stopManager stops the package's controller as a SIGTERM would and waits.
func stopManager() {
	managerMu.Lock()
	defer managerMu.Unlock()
	if stopMgr != nil {
		stopMgr()
		<-mgrDone
		stopMgr = nil
	}
}

type managerOptions struct {
	// leaderElection runs the manager as one of several replicas.
	leaderElection bool
	// identity names the replica in the Lease.
	identity string
}

type runningManager struct {
	cancel context.CancelFunc
	done   chan struct{}
	// elected is closed when this replica becomes the leader.
	elected <-chan struct{}
}

func (m *runningManager) stop() {
	m.cancel()
	<-m.done
}

func runManager(o managerOptions) (*runningManager, error) {
	opts := ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)}, // several in one process
	}
	if o.leaderElection {
		// Short lease times, so a killed leader is replaced within seconds.
		opts.LeaderElection = true
		opts.LeaderElectionID = "cacheplane-test"
		opts.LeaderElectionNamespace = "default"
		opts.LeaseDuration = ptr.To(2 * time.Second)
		opts.RenewDeadline = ptr.To(1500 * time.Millisecond)
		opts.RetryPeriod = ptr.To(200 * time.Millisecond)
		opts.LeaderElectionReleaseOnCancel = false // a kill does not release the lease
	}
	mcfg := rest.CopyConfig(cfg)
	if o.identity != "" {
		mcfg.UserAgent = o.identity
	}
	mgr, err := ctrl.NewManager(mcfg, opts)
	if err != nil {
		return nil, err
	}
	r := &controllers.CachePolicyReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("cachepolicy-controller"),
		RunSlice: 200 * time.Millisecond,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return &runningManager{cancel: cancel, done: done, elected: mgr.Elected()}, nil
}

// namespace creates a namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// newPolicy returns a valid policy on the package's Redis.
func newPolicy(ns, name, keyPrefix string) *cachev1alpha1.CachePolicy {
	return &cachev1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cachev1alpha1.CachePolicySpec{
			Redis:     cachev1alpha1.RedisSpec{URL: srv.URL(0)},
			KeyPrefix: keyPrefix,
			Prefixes: []cachev1alpha1.PrefixSpec{
				{Name: "users", TTL: &metav1.Duration{Duration: 10 * time.Minute}},
				{Name: "products"},
			},
			StatsInterval: metav1.Duration{Duration: time.Second},
		},
	}
}

// eventually polls cond until it holds or timeout passes; cond's message says
// what it last saw.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("condition not met within %v: %s", timeout, last)
	}
}

// get fetches the policy's current state.
func get(t *testing.T, p *cachev1alpha1.CachePolicy) *cachev1alpha1.CachePolicy {
	t.Helper()
	cur := &cachev1alpha1.CachePolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), cur); err != nil {
		t.Fatal(err)
	}
	return cur
}

func conditionIs(p *cachev1alpha1.CachePolicy, typ string, status metav1.ConditionStatus, reason string) bool {
	c := meta.FindStatusCondition(p.Status.Conditions, typ)
	return c != nil && c.Status == status && (reason == "" || c.Reason == reason) && c.ObservedGeneration == p.Generation
}

func waitReady(t *testing.T, p *cachev1alpha1.CachePolicy) *cachev1alpha1.CachePolicy {
	t.Helper()
	var cur *cachev1alpha1.CachePolicy
	eventually(t, 30*time.Second, func() (bool, string) {
		cur = get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionReady, metav1.ConditionTrue, "") && cur.Status.ObservedGeneration == cur.Generation,
			fmt.Sprintf("conditions %+v", cur.Status.Conditions)
	})
	return cur
}

// waitRun waits until the last invalidation is token's and complete.
func waitRun(t *testing.T, p *cachev1alpha1.CachePolicy, trigger, token string) *cachev1alpha1.InvalidationStatus {
	t.Helper()
	var cur *cachev1alpha1.CachePolicy
	eventually(t, 60*time.Second, func() (bool, string) {
		cur = get(t, p)
		run := cur.Status.LastInvalidation
		return run != nil && run.Trigger == trigger && run.Token == token && run.Phase == cachev1alpha1.InvalidationComplete,
			fmt.Sprintf("lastInvalidation %+v", run)
	})
	return cur.Status.LastInvalidation
}

// update applies change to the latest version of p, retrying on conflicts.
func update(t *testing.T, p *cachev1alpha1.CachePolicy, change func(*cachev1alpha1.CachePolicy)) {
	t.Helper()
	for range 10 {
		cur := get(t, p)
		change(cur)
		err := k8s.Update(context.Background(), cur)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "modified") {
			t.Fatal(err)
		}
	}
	t.Fatal("update kept conflicting")
}

func fill(t *testing.T, format string, n int) {
	t.Helper()
	if err := redistest.Fill(context.Background(), rdb, format, n); err != nil {
		t.Fatal(err)
	}
}

func countKeys(t *testing.T, c *redis.Client, pattern string) int {
	t.Helper()
	keys, err := c.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// events returns the Events recorded about the policy named name in ns.
func events(t *testing.T, ns, name string) []corev1.Event {
	t.Helper()
	var list corev1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
