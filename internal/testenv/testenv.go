// Package testenv starts a real kube-apiserver and etcd (controller-runtime's
// envtest) with the cacheplane CRDs installed, for tests and the demo.
//
// Typical use, once per test binary:
//
//	func TestMain(m *testing.M) {
//		env, cfg, err := testenv.Start()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		k8sClient, _ = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
//		code := m.Run()
//		_ = env.Stop()
//		os.Exit(code)
//	}
//
// The binaries come from $KUBEBUILDER_ASSETS, else from hack/envtest.sh, which
// finds them in setup-envtest's store or builds them offline (minutes, once per
// machine), so `go test` works without `make test` too.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// Env is a running control plane with the CRDs of config/crd/bases installed.
type Env struct {
	// Environment is the underlying envtest environment, for what this
	// package does not wrap (adding users, webhook options).
	Environment *envtest.Environment
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// AssetsDir holds the kube-apiserver, etcd and (usually) kubectl binaries.
	AssetsDir string
	// Kubeconfig is a kubeconfig file for Config, written by Start and
	// removed by Stop, for running kubectl or the manager binary.
	Kubeconfig string

	kubeconfigDir string
}

// Start starts etcd and kube-apiserver and installs the CRDs, waiting until they
// are established. The returned config is env.Config. Call Stop when done: the
// processes outlive a test binary that exits without it.
func Start() (*Env, *rest.Config, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, nil, err
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, nil, err
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
		// envtest's 20s default is too short for a locally built apiserver on a
		// busy 2-core machine; an explicit environment variable still wins.
		ControlPlaneStartTimeout: durationFromEnv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT", 2*time.Minute),
		ControlPlaneStopTimeout:  durationFromEnv("KUBEBUILDER_CONTROLPLANE_STOP_TIMEOUT", time.Minute),
	}
	cfg, err := te.Start()
	if err != nil {
		// A half-started control plane leaves etcd running; stop what started.
		_ = te.Stop()
		return nil, nil, fmt.Errorf("starting envtest with binaries from %s: %w", assets, err)
	}
	env := &Env{Environment: te, Config: cfg, AssetsDir: assets}
	dir, err := os.MkdirTemp("", "cacheplane-testenv-")
	if err == nil {
		env.kubeconfigDir = dir
		env.Kubeconfig = filepath.Join(dir, "kubeconfig")
		err = env.WriteKubeconfig(env.Kubeconfig)
	}
	if err != nil {
		_ = env.Stop()
		return nil, nil, fmt.Errorf("writing kubeconfig: %w", err)
	}
	return env, cfg, nil
}

// Stop stops the API server and etcd and removes the kubeconfig file.
func (e *Env) Stop() error {
	err := e.Environment.Stop()
	if e.kubeconfigDir != "" {
		err = errors.Join(err, os.RemoveAll(e.kubeconfigDir))
	}
	return err
}

// WriteKubeconfig writes a kubeconfig file (mode 0600: it holds the admin's
// client key) that reaches the API server as Config does.
func (e *Env) WriteKubeconfig(path string) error {
	if len(e.Environment.KubeConfig) == 0 {
		return errors.New("envtest has not produced a kubeconfig (not started?)")
	}
	return os.WriteFile(path, e.Environment.KubeConfig, 0o600)
}

// KubectlCommand returns a command running the real kubectl (see KubectlPath)
// against this API server.
func (e *Env) KubectlCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	kubectl, err := KubectlPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	return cmd, nil
}

// Scheme returns a new scheme holding the client-go kinds and cacheplane's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(cachev1alpha1.AddToScheme(s))
	return s
}

// RepoRoot returns the directory holding the module's go.mod, found by walking
// up from the working directory (go test runs in the package's directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

var assets struct {
	once sync.Once
	dir  string
	err  error
}

// AssetsDir returns the directory of the envtest binaries: $KUBEBUILDER_ASSETS
// when set, else what <repo root>/hack/envtest.sh prints (it may build the
// binaries first, printing progress on stderr). The script runs at most once
// per process.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	assets.once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			assets.err = err
			return
		}
		cmd := exec.Command(filepath.Join(root, "hack", "envtest.sh"))
		cmd.Dir = root
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			assets.err = fmt.Errorf("hack/envtest.sh: %w", err)
			return
		}
		assets.dir = strings.TrimSpace(string(out))
		if assets.dir == "" {
			assets.err = errors.New("hack/envtest.sh printed no directory")
		}
	})
	return assets.dir, assets.err
}

// KubectlPath returns the kubectl to run: $KUBECTL when set, else the one in
// AssetsDir (it matches the API server's version), else the first on $PATH.
func KubectlPath() (string, error) {
	if k := os.Getenv("KUBECTL"); k != "" {
		return k, nil
	}
	if dir, err := AssetsDir(); err == nil {
		k := filepath.Join(dir, "kubectl")
		if info, err := os.Stat(k); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return k, nil
		}
	}
	k, err := exec.LookPath("kubectl")
	if err != nil {
		return "", errors.New("no kubectl: set $KUBECTL, or put kubectl in the envtest assets directory or on $PATH")
	}
	return k, nil
}

func durationFromEnv(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// LogBuffer collects a manager's log for a test to search (for secrets that
// must not be there, for panics); writes may come from many goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
