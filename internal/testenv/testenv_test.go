package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// Starting the API server is covered by every envtest-based package (see
// api/v1alpha1); these tests cover the lookups around it without one.

func TestRepoRootHoldsGoMod(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "envtest.sh")); err != nil {
		t.Fatalf("RepoRoot() = %s, which has no hack/envtest.sh: %v", root, err)
	}
	if wd, _ := os.Getwd(); filepath.Join(root, "internal", "testenv") != wd {
		t.Fatalf("RepoRoot() = %s, not two levels above %s", root, wd)
	}
}

func TestSchemeKnowsCachePolicyAndCoreKinds(t *testing.T) {
	s := Scheme()
	for _, obj := range []string{"CachePolicy", "CachePolicyList"} {
		if !s.Recognizes(cachev1alpha1.GroupVersion.WithKind(obj)) {
			t.Errorf("scheme does not know %s", obj)
		}
	}
	if gvks, _, err := s.ObjectKinds(&cachev1alpha1.CachePolicy{}); err != nil || len(gvks) != 1 {
		t.Errorf("ObjectKinds(CachePolicy) = %v, %v", gvks, err)
	}
	if !s.IsVersionRegistered(cachev1alpha1.GroupVersion) || !s.IsGroupRegistered("apps") {
		t.Error("scheme lacks cache.cacheplane.io/v1alpha1 or client-go's groups")
	}
}

func executable(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKubectlPathPrecedence(t *testing.T) {
	assetsDir, pathDir := t.TempDir(), t.TempDir()
	onPath := executable(t, pathDir, "kubectl")
	t.Setenv("PATH", pathDir)
	t.Setenv("KUBEBUILDER_ASSETS", assetsDir)

	t.Setenv("KUBECTL", "")
	if got, err := KubectlPath(); err != nil || got != onPath {
		t.Errorf("assets dir without kubectl: KubectlPath() = %q, %v; want PATH's %q", got, err, onPath)
	}

	inAssets := executable(t, assetsDir, "kubectl")
	if got, err := KubectlPath(); err != nil || got != inAssets {
		t.Errorf("KubectlPath() = %q, %v; want the assets dir's %q", got, err, inAssets)
	}

	t.Setenv("KUBECTL", "/opt/kubectl")
	if got, err := KubectlPath(); err != nil || got != "/opt/kubectl" {
		t.Errorf("KubectlPath() = %q, %v; want $KUBECTL", got, err)
	}
}

func TestKubectlPathFailsClearly(t *testing.T) {
	t.Setenv("KUBECTL", "")
	t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
	t.Setenv("PATH", t.TempDir())
	if got, err := KubectlPath(); err == nil {
		t.Fatalf("KubectlPath() = %q with no kubectl anywhere; want an error", got)
	}
}

func TestAssetsDirPrefersTheEnvironment(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", "/somewhere/else")
	if got, err := AssetsDir(); err != nil || got != "/somewhere/else" {
		t.Fatalf("AssetsDir() = %q, %v; want $KUBEBUILDER_ASSETS", got, err)
	}
}

func TestWriteKubeconfig(t *testing.T) {
	e := &Env{Environment: &envtest.Environment{}}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := e.WriteKubeconfig(path); err == nil {
		t.Fatal("WriteKubeconfig before Start succeeded; want an error")
	}

	e.Environment.KubeConfig = []byte("apiVersion: v1\nkind: Config\n")
	if err := e.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode = %v, want 0600: it holds a client key", info.Mode().Perm())
	}
	if data, _ := os.ReadFile(path); string(data) != string(e.Environment.KubeConfig) {
		t.Errorf("kubeconfig = %q", data)
	}
}
