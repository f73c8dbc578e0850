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
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/controllers"
)

// options are the manager's command line.
type options struct {
	metricsAddr, probeAddr string
	metricsSecure          bool
	metricsCertDir         string
	leaderElect            bool
	leaderElectionNS       string
	concurrency            int
	qps                    float64
	burst                  int
	watchNamespaces        string
}

func main() {
	var o options
	bindFlags(flag.CommandLine, &o)
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse() // controller-runtime registers --kubeconfig; KUBECONFIG works too
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	redis.SetLogger(redisLogger{ctrl.Log.WithName("go-redis")})
	log := ctrl.Log.WithName("setup")

	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "no Kubernetes API server configured (use --kubeconfig, KUBECONFIG or in-cluster config)")
		os.Exit(1)
	}
	// SIGTERM/SIGINT stop the manager gracefully: in-flight reconciles finish
	// and save their checkpoints, the lease is released.
	if err := run(ctrl.SetupSignalHandler(), cfg, o); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

// bindFlags defines the manager's own flags on fs, storing them in o.
func bindFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the Prometheus metrics endpoint binds to; \"0\" disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, admitting only bearer tokens whose identity may GET /metrics (TokenReview + SubjectAccessReview; bind the metrics-reader ClusterRole). false serves plain, unauthenticated HTTP.")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "Directory holding tls.crt and tls.key for the metrics endpoint; empty: a self-signed certificate generated at start.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader, so only one of several manager replicas reconciles at a time.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader-election Lease; defaults to the manager's own namespace.")
	fs.IntVar(&o.concurrency, "max-concurrent-reconciles", 4, "How many CachePolicies reconcile at once.")
	fs.Float64Var(&o.qps, "kube-api-qps", 50, "Client-side rate limit of requests to the API server, per second.")
	fs.IntVar(&o.burst, "kube-api-burst", 100, "Burst of requests to the API server above kube-api-qps.")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "",
		"Comma-separated namespaces whose CachePolicies (and the ConfigMaps and Secrets they watch) the manager reconciles; empty: all namespaces.")
}

// redisLogger sends go-redis's internal messages (pool dial retries and the
// like) to the manager's structured log at debug level: the conditions already
// report connection problems once, where users look.
type redisLogger struct{ log logr.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.V(1).Info(fmt.Sprintf(format, v...))
}

// metricsOptions is how the manager serves /metrics. Secure, as kubebuilder
// scaffolds it: HTTPS, and every request must carry a bearer token that the
// API server authenticates (TokenReview) and authorizes for GET /metrics
// (SubjectAccessReview), so only what is bound to the metrics-reader
// ClusterRole can scrape. Insecure: plain HTTP for a scraper that cannot
// present a token (local runs, tests).
func metricsOptions(o options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure}
	if o.metricsSecure {
		m.FilterProvider = filters.WithAuthenticationAndAuthorization
		m.CertDir = o.metricsCertDir
	}
	return m
}

// run builds the manager for cfg and runs it until ctx ends.
func run(ctx context.Context, cfg *rest.Config, o options) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cachev1alpha1.AddToScheme(scheme))

	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst

	cacheOpts, err := cacheOptions(o.watchNamespaces)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsOptions(o),
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "cacheplane-manager.cache.cacheplane.io",
		LeaderElectionNamespace:       o.leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := (&controllers.CachePolicyReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("cachepolicy-controller"),
		MaxConcurrentReconciles: o.concurrency,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up CachePolicy controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "leaderElect", o.leaderElect, "metrics", o.metricsAddr, "metricsSecure", o.metricsSecure)
	return mgr.Start(ctx)
}
