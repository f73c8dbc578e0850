// Command manager runs the cacheplane controller: it reconciles CachePolicy
// objects against their Redis servers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/controllers"
)

func main() {
	var (
		metricsAddr, probeAddr string
		leaderElect            bool
		leaderElectionNS       string
		concurrency            int
		qps                    float64
		burst                  int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the Prometheus metrics endpoint binds to; \"0\" disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so only one of several manager replicas reconciles at a time.")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election Lease; defaults to the manager's own namespace.")
	flag.IntVar(&concurrency, "max-concurrent-reconciles", 4, "How many CachePolicies reconcile at once.")
	flag.Float64Var(&qps, "kube-api-qps", 50, "Client-side rate limit of requests to the API server, per second.")
	flag.IntVar(&burst, "kube-api-burst", 100, "Burst of requests to the API server above kube-api-qps.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse() // controller-runtime registers --kubeconfig; KUBECONFIG works too
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	redis.SetLogger(redisLogger{ctrl.Log.WithName("go-redis")})
	log := ctrl.Log.WithName("setup")

	if err := run(metricsAddr, probeAddr, leaderElect, leaderElectionNS, concurrency, qps, burst); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

// redisLogger sends go-redis's internal messages (pool dial retries and the
// like) to the manager's structured log at debug level: the conditions already
// report connection problems once, where users look.
type redisLogger struct{ log logr.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.V(1).Info(fmt.Sprintf(format, v...))
}

func run(metricsAddr, probeAddr string, leaderElect bool, leaderElectionNS string, concurrency int, qps float64, burst int) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cachev1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no Kubernetes API server configured (use --kubeconfig, KUBECONFIG or in-cluster config): %w", err)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst

	cacheOpts, err := cacheOptions(*watchNamespaces)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "cacheplane-manager.cache.cacheplane.io",
		LeaderElectionNamespace:       leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := (&controllers.CachePolicyReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("cachepolicy-controller"),
		MaxConcurrentReconciles: concurrency,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up CachePolicy controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "leaderElect", leaderElect)
	// SIGTERM/SIGINT stop the manager gracefully: in-flight reconciles finish
	// and save their checkpoints, the lease is released.
	return mgr.Start(ctrl.SetupSignalHandler())
}
