package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cacheplane/cacheplane/internal/testenv"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestSecureMetrics runs the manager as main does (run with the flags'
// defaults, only the addresses changed) against a real API server and scrapes
// its HTTPS metrics endpoint: no token is 401, a ServiceAccount token without
// the metrics-reader ClusterRole is 403, and a token from `kubectl create
// token` for a ServiceAccount bound to config/rbac's metrics-reader gets the
// cacheplane_ series.
func TestSecureMetrics(t *testing.T) {
	env, cfg, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	k8s, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}

	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	o := defaultOptions(t)
	o.metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	o.probeAddr = "0"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// The ClusterRole as shipped, applied with the real kubectl.
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, env, "apply", "-f", filepath.Join(root, "config", "rbac", "metrics_reader_role.yaml"))
	bg := context.Background()
	for _, name := range []string{"stranger", "scraper"} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
		if err := k8s.Create(bg, sa); err != nil {
			t.Fatal(err)
		}
	}
	// A separate ServiceAccount for the allowed case: the filter caches a
	// denial for 30s, so the stranger's token would stay denied after a binding.
	if err := k8s.Create(bg, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "scraper"}},
	}); err != nil {
		t.Fatal(err)
	}

	url := fmt.Sprintf("https://%s/metrics", o.metricsAddr)
	// The certificate is the manager's self-signed one.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(token string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	// Until the server listens.
	var code int
	if err := wait.PollUntilContextTimeout(bg, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		c, _, err := scrape("")
		code = c
		return err == nil, nil
	}); err != nil {
		t.Fatalf("metrics endpoint %s never answered", url)
	}
	if code != http.StatusUnauthorized {
		t.Errorf("no token: status %d, want 401", code)
	}

	strangerToken := strings.TrimSpace(kubectl(t, env, "create", "token", "stranger", "-n", "default"))
	if c, body, err := scrape(strangerToken); err != nil || c != http.StatusForbidden {
		t.Errorf("token without metrics-reader: status %d (%v), want 403; body %.200q", c, err, body)
	}

	scraperToken := strings.TrimSpace(kubectl(t, env, "create", "token", "scraper", "-n", "default"))
	var body string
	// RBAC reaches the API server's authorizer through an informer: poll.
	if err := wait.PollUntilContextTimeout(bg, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		c, b, err := scrape(scraperToken)
		code, body = c, b
		return err == nil && c == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("token bound to metrics-reader: last status %d, want 200; body %.300q", code, body)
	}
	for _, series := range []string{"cacheplane_invalidation_keys_deleted_total", "cacheplane_stats_sync_errors_total"} {
		if !strings.Contains(body, "\n"+series) {
			t.Errorf("metrics lack %s", series)
		}
	}
}

// TestMetricsFlagsDefault: secure on :8443 unless told otherwise, as the
// Deployment and the metrics Service expect.
func TestMetricsFlagsDefault(t *testing.T) {
	o := defaultOptions(t)
	if o.metricsAddr != ":8443" || !o.metricsSecure {
		t.Fatalf("defaults: --metrics-bind-address=%q --metrics-secure=%v, want :8443 and true", o.metricsAddr, o.metricsSecure)
	}
	if m := metricsOptions(o); !m.SecureServing || m.FilterProvider == nil {
		t.Errorf("secure metrics options lack HTTPS or the auth filter: %+v", m)
	}
	o.metricsSecure = false
	if m := metricsOptions(o); m.SecureServing || m.FilterProvider != nil {
		t.Errorf("--metrics-secure=false still secures: %+v", m)
	}
}

// defaultOptions parses an empty command line with main's flags.
func defaultOptions(t *testing.T) options {
	t.Helper()
	var o options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	bindFlags(fs, &o)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return o
}

// kubectl runs the real kubectl against env, failing the test if it fails.
func kubectl(t *testing.T, env *testenv.Env, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, err := env.KubectlCommand(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}
