package cache_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	libraryModule  = "github.com/cacheplane/cacheplane/pkg/cache"
	operatorModule = "github.com/cacheplane/cacheplane"
)

// TestConsumerModuleIsKubernetesFree builds a throwaway application module that
// imports the library (and its public subpackages, redistest from a test) the
// way a user's service does, and fails if its module graph holds any
// Kubernetes module or the operator's module: pulling those in would raise the
// minimum versions of Kubernetes libraries the application already uses.
func TestConsumerModuleIsKubernetesFree(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go command is not on PATH: the consumer module is built with it (make test runs go from PATH)")
	}
	lib, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("main.go", `package main

import (
	"fmt"

	"`+libraryModule+`"
	_ "`+libraryModule+`/keyspace"
	_ "`+libraryModule+`/purge"
	_ "`+libraryModule+`/redisconn"
)

func main() { fmt.Println(cache.Config{}.KeyPrefix) }
`)
	write("main_test.go", `package main

import (
	"testing"

	_ "`+libraryModule+`/redistest"
)

func TestNothing(t *testing.T) {}
`)

	// GOPROXY, GOMODCACHE and GOCACHE come from the environment; -mod=mod
	// lets the commands update the consumer's go.mod and go.sum.
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), goBin, args...)
		cmd.Dir = dir
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "init", "example.com/consumer")
	run("mod", "edit", "-require="+libraryModule+"@v0.0.0", "-replace="+libraryModule+"="+lib)
	run("mod", "tidy")
	run("build", "./...")
	run("vet", "./...") // compiles the test file, and with it redistest
	modules := run("list", "-m", "-f", "{{.Path}}", "all")

	for _, path := range strings.Fields(modules) {
		operator := path == operatorModule || (strings.HasPrefix(path, operatorModule+"/") && path != libraryModule)
		if strings.HasPrefix(path, "k8s.io/") || strings.HasPrefix(path, "sigs.k8s.io/") ||
			strings.Contains(path, "controller-runtime") || operator {
			t.Errorf("a module importing %s depends on %s", libraryModule, path)
		}
	}
	if !strings.Contains(modules, libraryModule+"\n") {
		t.Fatalf("the consumer's module graph does not hold %s:\n%s", libraryModule, modules)
	}
}
