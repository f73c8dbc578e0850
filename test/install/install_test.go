// Package install_test checks the two ways a newcomer installs cacheplane:
// `kubectl apply -f dist/install.yaml` and the Helm chart in charts/cacheplane.
// Both are applied with the real kubectl to a real API server (envtest), and the
// chart is held to config/: its CRD and RBAC must stay what `make manifests`
// generates.
package install_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/cacheplane/cacheplane/internal/testenv"
)

var (
	root       string // the repository
	kubeconfig string // of the envtest API server
)

// TestMain starts an API server with no CRDs installed, as a fresh cluster is:
// the install files must bring their own.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if root, err = testenv.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	if _, err := env.Start(); err != nil {
		_ = env.Stop()
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	dir, err := os.MkdirTemp("", "cacheplane-install-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// runCmd runs a command in the repository with stdin and extra environment,
// failing t with its output when it fails.
func runCmd(t *testing.T, stdin []byte, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// kubectl runs the real kubectl (envtest's, matching the API server) against
// the test API server.
func kubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	k, err := testenv.KubectlPath()
	if err != nil {
		t.Fatal(err)
	}
	return runCmd(t, stdin, []string{"KUBECONFIG=" + kubeconfig}, k, args...)
}

// tool returns the pinned tool bin/<name> (or $<NAME>, as `make test` passes
// it), building it with `make <name>` when it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p := os.Getenv(strings.ToUpper(name)); p != "" {
		return p
	}
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		t.Logf("%s is missing; building it with make %s (minutes, once)", p, name)
		runCmd(t, nil, nil, "make", "--no-print-directory", name)
	}
	return p
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	return runCmd(t, nil, nil, tool(t, "helm"), args...)
}

// objects parses a multi-document YAML stream, skipping empty documents.
func objects(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("parsing YAML: %v", err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// find returns the object of kind and name, failing t when there is none.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s among the %d objects", kind, name, len(objs))
	return nil
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.GetKind()]++
	}
	return m
}

// applyAll applies manifests with kubectl and checks that kubectl reports every
// object of them as created, configured or unchanged: none was refused or
// skipped.
func applyAll(t *testing.T, manifests []byte, args ...string) {
	t.Helper()
	objs := objects(t, manifests)
	out := kubectl(t, manifests, append([]string{"apply", "-f", "-"}, args...)...)
	accepted := regexp.MustCompile(`(?m)^\S+/\S+ (created|configured|unchanged)( \(server dry run\))?$`)
	if got := len(accepted.FindAllString(out, -1)); got != len(objs) {
		t.Fatalf("kubectl apply accepted %d of %d objects:\n%s", got, len(objs), out)
	}
	for _, o := range objs {
		ref := strings.ToLower(o.GetKind()) + "/" + o.GetName()
		getArgs := []string{"get", ref, "-o", "name"}
		if ns := o.GetNamespace(); ns != "" {
			getArgs = append(getArgs, "-n", ns)
		}
		if o.GetKind() == "CustomResourceDefinition" {
			getArgs[1] = "customresourcedefinition.apiextensions.k8s.io/" + o.GetName()
		}
		kubectl(t, nil, getArgs...)
	}
}

func containerImage(t *testing.T, deploy *unstructured.Unstructured) (string, []string) {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		t.Fatalf("deployment %s has containers %v (%v), want one", deploy.GetName(), containers, err)
	}
	c := containers[0].(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	return c["image"].(string), args
}

// The committed dist/install.yaml is what a newcomer applies: every object is
// accepted by the API server, and the Deployment runs the default image.
func TestInstallYAMLApplies(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, data)
	want := map[string]int{
		"Namespace": 1, "CustomResourceDefinition": 1, "ServiceAccount": 1, "Deployment": 1, "Service": 1,
	}
	for kind, n := range want {
		if got := kinds(objs)[kind]; got != n {
			t.Errorf("dist/install.yaml has %d %s objects, want %d", got, kind, n)
		}
	}
	if kinds(objs)["ClusterRole"] == 0 || kinds(objs)["ClusterRoleBinding"] == 0 {
		t.Errorf("dist/install.yaml lacks the manager's RBAC: %v", kinds(objs))
	}
	applyAll(t, data)

	out := kubectl(t, nil, "get", "deployment", "cacheplane-controller-manager", "-n", "cacheplane-system",
		"-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if out != "cacheplane/manager:latest" {
		t.Errorf("the installed Deployment runs image %q, want cacheplane/manager:latest (make's default IMG)", out)
	}
	kubectl(t, nil, "wait", "--for=condition=Established", "crd/cachepolicies.cache.cacheplane.io", "--timeout=60s")
	kubectl(t, nil, "get", "cachepolicies", "-A")
}

// make build-installer IMG=... (hack/build-installer.sh) sets the image and
// changes nothing else.
func TestBuildInstallerWithCustomImage(t *testing.T) {
	const img = "registry.example.com/team/cacheplane-manager:v1.2.3"
	out := filepath.Join(t.TempDir(), "install.yaml")
	runCmd(t, nil, nil, filepath.Join(root, "hack", "build-installer.sh"), tool(t, "kustomize"), img, out)
	custom, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	image, _ := containerImage(t, find(t, objects(t, custom), "Deployment", "cacheplane-controller-manager"))
	if image != img {
		t.Errorf("the Deployment runs %q, want %q", image, img)
	}

	committed, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := objects(t, committed), objects(t, custom)
	if len(a) != len(b) {
		t.Fatalf("dist/install.yaml has %d objects, the custom one %d", len(a), len(b))
	}
	for i := range a {
		if a[i].GetKind() == "Deployment" {
			containers, _, _ := unstructured.NestedSlice(b[i].Object, "spec", "template", "spec", "containers")
			containers[0].(map[string]any)["image"] = "cacheplane/manager:latest"
			if err := unstructured.SetNestedSlice(b[i].Object, containers, "spec", "template", "spec", "containers"); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(a[i].Object, b[i].Object) {
			t.Errorf("%s %s differs beyond the image", a[i].GetKind(), a[i].GetName())
		}
	}
	applyAll(t, custom, "--dry-run=server")
}

// allOn sets every toggle of the chart, and the values beside them, to
// non-defaults.
var allOn = []string{
	"--set", "serviceMonitor.enabled=true",
	"--set", "prometheusRule.enabled=true",
	"--set", "grafanaDashboard.enabled=true",
	"--set", "crd.enable=true",
	"--set", "metrics.enabled=true",
	"--set", "metrics.secure=true",
	"--set", "leaderElection.enabled=true",
	"--set", "watchNamespaces={team-a,team-b}",
	"--set", "replicas=2",
	"--set", "image.repository=registry.example.com/cacheplane-manager",
	"--set", "image.tag=v9.9.9",
}

func chartDir() string { return filepath.Join(root, "charts", "cacheplane") }

func TestHelmLint(t *testing.T) {
	helm(t, "lint", "--strict", chartDir())
	helm(t, append([]string{"lint", "--strict", chartDir()}, allOn...)...)
	helm(t, "lint", "--strict", chartDir(), "--set", "metrics.secure=false", "--set", "crd.enable=false",
		"--set", "metrics.enabled=false", "--set", "leaderElection.enabled=false")
}

// The chart's defaults install the manager, its RBAC and the CRD, nothing of
// Prometheus or Grafana.
func TestHelmTemplateDefaultsApply(t *testing.T) {
	const ns = "helm-defaults"
	kubectl(t, nil, "create", "namespace", ns)
	manifests := helm(t, "template", "cacheplane", chartDir(), "--namespace", ns, "--set", "nameOverride=cp-defaults")
	objs := objects(t, []byte(manifests))
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ConfigMap"} {
		if kinds(objs)[kind] != 0 {
			t.Errorf("the defaults render a %s", kind)
		}
	}
	image, args := containerImage(t, find(t, objs, "Deployment", "cp-defaults-controller-manager"))
	if image != "cacheplane/manager:latest" {
		t.Errorf("the defaults run image %q, want cacheplane/manager:latest", image)
	}
	for _, want := range []string{"--leader-elect", "--metrics-bind-address=:8443", "--metrics-secure=true"} {
		if !contains(args, want) {
			t.Errorf("the defaults' manager args %v lack %s", args, want)
		}
	}
	find(t, objs, "CustomResourceDefinition", "cachepolicies.cache.cacheplane.io")
	find(t, objs, "ClusterRole", "cp-defaults-metrics-reader")
	applyAll(t, []byte(manifests))
}

// monitoringCRDs are minimal stand-ins for the Prometheus Operator's CRDs: the
// API server then accepts ServiceMonitors and PrometheusRules of any shape, so
// the test checks the chart's objects reach it under the right group, version
// and kind.
const monitoringCRDs = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// With every toggle on, the chart adds the ServiceMonitor, the PrometheusRule
// and the dashboard ConfigMap, and the API server accepts all of it.
func TestHelmTemplateAllTogglesApply(t *testing.T) {
	const ns = "helm-all"
	kubectl(t, []byte(monitoringCRDs), "apply", "-f", "-")
	kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	kubectl(t, nil, "create", "namespace", ns)

	manifests := helm(t, append([]string{"template", "cacheplane", chartDir(), "--namespace", ns, "--set", "nameOverride=cp-all"}, allOn...)...)
	objs := objects(t, []byte(manifests))
	image, args := containerImage(t, find(t, objs, "Deployment", "cp-all-controller-manager"))
	if image != "registry.example.com/cacheplane-manager:v9.9.9" {
		t.Errorf("image.repository and image.tag render image %q", image)
	}
	if !contains(args, "--watch-namespaces=team-a,team-b") {
		t.Errorf("watchNamespaces renders manager args %v", args)
	}
	if r, _, _ := unstructured.NestedFieldNoCopy(find(t, objs, "Deployment", "cp-all-controller-manager").Object, "spec", "replicas"); fmt.Sprint(r) != "2" {
		t.Errorf("replicas=2 renders %v replicas", r)
	}

	sm := find(t, objs, "ServiceMonitor", "cp-all-controller-manager-metrics-monitor")
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) == 0 || endpoints[0].(map[string]any)["scheme"] != "https" || endpoints[0].(map[string]any)["port"] != "https" {
		t.Errorf("the secure ServiceMonitor scrapes %v", endpoints)
	}
	svc := find(t, objs, "Service", "cp-all-controller-manager-metrics-service")
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 1 || ports[0].(map[string]any)["name"] != "https" {
		t.Errorf("the metrics Service has ports %v, want one named https", ports)
	}
	groups, _, _ := unstructured.NestedSlice(find(t, objs, "PrometheusRule", "cp-all-rules").Object, "spec", "groups")
	if len(groups) == 0 {
		t.Error("the PrometheusRule has no rule groups")
	}
	cm := find(t, objs, "ConfigMap", "cp-all-grafana-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard ConfigMap is labelled %v, want grafana_dashboard: \"1\" for the Grafana sidecar", cm.GetLabels())
	}
	dashboard, err := os.ReadFile(filepath.Join(root, "config", "grafana", "cacheplane-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedString(cm.Object, "data", "cacheplane-dashboard.json"); got != strings.TrimRight(string(dashboard), "\n") {
		t.Error("the dashboard ConfigMap does not hold config/grafana/cacheplane-dashboard.json")
	}

	applyAll(t, []byte(manifests))
	out := kubectl(t, nil, "get", "configmaps", "-n", ns, "-l", "grafana_dashboard=1", "-o", "name")
	if strings.TrimSpace(out) != "configmap/cp-all-grafana-dashboard" {
		t.Errorf("the Grafana sidecar's label selector finds %q", out)
	}
}

// The opposite toggles: plain-HTTP metrics scraped over http, no CRD, no
// leader election, no metrics at all.
func TestHelmTemplateTogglesOff(t *testing.T) {
	insecure := objects(t, []byte(helm(t, "template", "cacheplane", chartDir(), "--namespace", "x",
		"--set", "metrics.secure=false", "--set", "metrics.port=8080", "--set", "serviceMonitor.enabled=true", "--set", "crd.enable=false")))
	_, args := containerImage(t, find(t, insecure, "Deployment", "cacheplane-controller-manager"))
	for _, want := range []string{"--metrics-bind-address=:8080", "--metrics-secure=false"} {
		if !contains(args, want) {
			t.Errorf("metrics.secure=false renders manager args %v, lacking %s", args, want)
		}
	}
	endpoints, _, _ := unstructured.NestedSlice(find(t, insecure, "ServiceMonitor", "cacheplane-controller-manager-metrics-monitor").Object, "spec", "endpoints")
	for _, e := range endpoints {
		ep := e.(map[string]any)
		if ep["scheme"] != "http" || ep["port"] != "http" || ep["tlsConfig"] != nil || ep["bearerTokenFile"] != nil {
			t.Errorf("metrics.secure=false renders the endpoint %v, want plain http", ep)
		}
	}
	if kinds(insecure)["CustomResourceDefinition"] != 0 {
		t.Error("crd.enable=false still renders the CRD")
	}
	for _, o := range insecure {
		if strings.HasSuffix(o.GetName(), "metrics-reader") || strings.HasSuffix(o.GetName(), "metrics-auth-role") {
			t.Errorf("metrics.secure=false renders %s %s", o.GetKind(), o.GetName())
		}
	}

	off := objects(t, []byte(helm(t, "template", "cacheplane", chartDir(), "--namespace", "x",
		"--set", "metrics.enabled=false", "--set", "leaderElection.enabled=false")))
	_, args = containerImage(t, find(t, off, "Deployment", "cacheplane-controller-manager"))
	if !contains(args, "--metrics-bind-address=0") || contains(args, "--leader-elect") {
		t.Errorf("metrics and leader election off render manager args %v", args)
	}
	if kinds(off)["Service"] != 0 || kinds(off)["Role"] != 0 {
		t.Errorf("metrics and leader election off still render %v", kinds(off))
	}
	if _, err := runCmdErr(tool(t, "helm"), "template", "cacheplane", chartDir(),
		"--set", "metrics.enabled=false", "--set", "serviceMonitor.enabled=true"); err == nil {
		t.Error("a ServiceMonitor without metrics renders")
	}
}

func runCmdErr(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// The chart's CRD and RBAC are config/'s: `make manifests` regenerates
// config/crd/bases and config/rbac/role.yaml, and `make helm-sync` must have
// copied them, or this fails. Every Role and ClusterRole of dist/install.yaml
// (config/rbac through kustomize) has a twin of the same name and rules in the
// chart with every toggle on.
func TestChartMatchesConfig(t *testing.T) {
	chart := objects(t, []byte(helm(t, append([]string{"template", "cacheplane", chartDir(), "--namespace", "cacheplane-system"}, allOn...)...)))

	crds, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	for _, path := range crds {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := objects(t, data)[0]
		got := find(t, chart, "CustomResourceDefinition", want.GetName())
		if !reflect.DeepEqual(normalize(t, want.Object["spec"]), normalize(t, got.Object["spec"])) {
			t.Errorf("the chart's CRD %s differs from %s: run make helm-sync", want.GetName(), path)
		}
	}

	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := objects(t, data)[0]
	got := find(t, chart, "ClusterRole", "cacheplane-"+role.GetName())
	if !reflect.DeepEqual(normalize(t, role.Object["rules"]), normalize(t, got.Object["rules"])) {
		t.Errorf("the chart's ClusterRole cacheplane-%s differs from config/rbac/role.yaml: run make helm-sync", role.GetName())
	}

	install, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objects(t, install) {
		if o.GetKind() != "Role" && o.GetKind() != "ClusterRole" {
			continue
		}
		twin := find(t, chart, o.GetKind(), o.GetName())
		if !reflect.DeepEqual(normalize(t, o.Object["rules"]), normalize(t, twin.Object["rules"])) {
			t.Errorf("the chart's %s %s has other rules than config/rbac's", o.GetKind(), o.GetName())
		}
		for k, v := range o.GetLabels() {
			if strings.HasPrefix(k, "rbac.authorization.k8s.io/") && twin.GetLabels()[k] != v {
				t.Errorf("the chart's %s %s lacks the label %s=%s", o.GetKind(), o.GetName(), k, v)
			}
		}
	}

	// The files the chart reads are byte-for-byte the sources.
	for src, copy := range map[string]string{
		"config/rbac/role.yaml":                    "files/rbac/role.yaml",
		"config/prometheus/monitor.yaml":           "files/prometheus/monitor.yaml",
		"config/prometheus/rules.yaml":             "files/prometheus/rules.yaml",
		"config/grafana/cacheplane-dashboard.json": "files/grafana/cacheplane-dashboard.json",
	} {
		a, errA := os.ReadFile(filepath.Join(root, src))
		b, errB := os.ReadFile(filepath.Join(chartDir(), copy))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("charts/cacheplane/%s is not a copy of %s (%v, %v): run make helm-sync", copy, src, errA, errB)
		}
	}
}

// normalize round-trips v through YAML, so numbers compare alike whichever
// decoder produced them.
func normalize(t *testing.T, v any) any {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := yaml.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The README's Helm path: helm install, upgrade with every toggle on, and
// uninstall, against the API server. Uninstall removes the manager and keeps
// the CRD (crd.keep), so CachePolicies outlive the release.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	const ns = "helm-release"
	env := []string{"KUBECONFIG=" + kubeconfig}
	// The CRD of an earlier test was created by kubectl, not by a release:
	// helm refuses to adopt it. Start from a cluster without it, as a user's.
	kubectl(t, nil, "delete", "crd", "cachepolicies.cache.cacheplane.io", "--ignore-not-found", "--wait", "--timeout=60s")
	kubectl(t, []byte(monitoringCRDs), "apply", "-f", "-")
	kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	kubectl(t, nil, "create", "namespace", ns)

	hb := tool(t, "helm")
	runCmd(t, nil, env, hb, "install", "cp", chartDir(), "-n", ns, "--set", "nameOverride=cp-release")
	kubectl(t, nil, "get", "deployment/cp-release-controller-manager", "-n", ns)
	kubectl(t, nil, "wait", "--for=condition=Established", "crd/cachepolicies.cache.cacheplane.io", "--timeout=60s")

	runCmd(t, nil, env, hb, append([]string{"upgrade", "cp", chartDir(), "-n", ns, "--set", "nameOverride=cp-release"}, allOn...)...)
	out := kubectl(t, nil, "get", "deployment/cp-release-controller-manager", "-n", ns,
		"-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if out != "registry.example.com/cacheplane-manager:v9.9.9" {
		t.Errorf("after helm upgrade the manager runs %q", out)
	}
	kubectl(t, nil, "get", "servicemonitor/cp-release-controller-manager-metrics-monitor", "prometheusrule/cp-release-rules",
		"configmap/cp-release-grafana-dashboard", "-n", ns)

	runCmd(t, nil, env, hb, "uninstall", "cp", "-n", ns, "--wait", "--timeout=2m")
	if out := kubectl(t, nil, "get", "deployments,services,configmaps", "-n", ns, "-l", "app.kubernetes.io/instance=cp", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("helm uninstall left:\n%s", out)
	}
	kubectl(t, nil, "get", "crd/cachepolicies.cache.cacheplane.io")
}
