package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/testenv"
)

// TestDemoSmoke runs `make demo`'s program with --exit-after-invalidation and
// --prometheus: its own control plane, Redis, the manager binary, the
// workload, the load generator and a Prometheus. It must show a hit ratio and a completed invalidation in kubectl
// output, exit 0, and leave no process behind.
func TestDemoSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo builds three binaries and starts a second control plane")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", bin, "./hack/demo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./hack/demo: %v\n%s", err, out)
	}

	// As a child subreaper, this process inherits every process the demo
	// leaves behind (its orphans, and their descendants once orphaned); the
	// children it had before are its own.
	if err := becomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	before := children()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--exit-after-invalidation", "--rate", "200", "--prometheus")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+assets)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("demo ran for %v", time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() { killLeftovers(t, before) })
	output := out.String()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, output)
	}

	// `kubectl get cachepolicies` rows: NAME READY HIT-RATIO HITS [LAST-INVALIDATION KEYS-DELETED] AGE.
	ratios := regexp.MustCompile(`(?m)^\s+demo\s+True\s+([0-9.]+)%\s+\d+\s`).FindAllStringSubmatch(output, -1)
	best := 0.0
	for _, m := range ratios {
		f, _ := strconv.ParseFloat(m[1], 64)
		best = max(best, f)
	}
	if best < 50 {
		t.Errorf("no kubectl get row with a hit ratio of 50%% or more (best %.1f%%):\n%s", best, output)
	}
	done := regexp.MustCompile(`(?m)^\s+demo\s+True\s+[0-9.]+%\s+\d+\s+Complete\s+(\d+)\s`).FindStringSubmatch(output)
	if done == nil || done[1] == "0" {
		t.Errorf("no kubectl get row with a Complete invalidation that deleted keys:\n%s", output)
	}
	for _, want := range []string{
		"kubectl patch cachepolicy demo --type merge -p '{\"spec\":{\"invalidation\":{\"token\":\"v2\"}}}'",
		"Invalidation complete: deleted",
		"InvalidationComplete",
		" get cachepol\n",
		"KUBECONFIG=",
		"Stopped everything the demo started",
		"Prometheus at http://127.0.0.1:",
		"stopping Prometheus: done",
	} {
		if !strings.Contains(output, want) {
			t.Errorf("demo output lacks %q:\n%s", want, output)
		}
	}

	// The demo waits for what it stops, so nothing should be inherited.
	// A leftover that was killed but never waited for shows up as a zombie.
	if left := leftovers(before); len(left) > 0 {
		t.Errorf("the demo left %d processes behind:\n%s", len(left), strings.Join(left, "\n"))
	}
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2), Linux 3.4+.
const prSetChildSubreaper = 36

func becomeSubreaper() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	return nil
}

// children returns the pids of this process's children, from /proc.
func children() map[int]bool {
	out := map[int]bool{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			out[pid] = true
		}
	}
	return out
}

// leftovers describes the children that were not there before: what the
// demo left behind.
func leftovers(before map[int]bool) []string {
	var left []string
	for pid := range children() {
		if before[pid] {
			continue
		}
		state := "?"
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 {
				state = f[0] // Z: a zombie, killed but not waited for
			}
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("pid %d (state %s): %s", pid, state,
			strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " ")))
	}
	return left
}

// killLeftovers kills and reaps, by pid, what the demo left behind, so a
// failed smoke test does not leave a control plane running. Killing one may
// orphan its own children onto this process: hence the rounds.
func killLeftovers(t *testing.T, before map[int]bool) {
	for range 10 {
		found := false
		for pid := range children() {
			if before[pid] {
				continue
			}
			found = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, 0, nil)
		}
		if !found {
			return
		}
	}
	t.Errorf("processes left by the demo keep appearing: %v", leftovers(before))
}
