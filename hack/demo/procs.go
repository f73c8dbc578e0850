package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// child is a process the demo started, with its output in a log file.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, valid once done is closed
	stopped bool          // the demo stopped it: its exit is expected
}

// startChild starts bin with args, its output going to <dir>/<logName>. The
// child gets its own process group, so a Ctrl-C in the terminal reaches only
// the demo, which then stops the children in order (load first, the control
// plane last); and it is killed if the demo dies without cleaning up.
func (d *demo) startChild(name, logName, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(d.dir, logName)
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	d.children = append(d.children, c)
	d.onCleanup("stopping the "+name, func() error { return c.stop(15 * time.Second) })
	return c, nil
}

// stop sends SIGTERM, so the child shuts down cleanly (the workload flushes
// its stats, the manager finishes its reconciles), and SIGKILL after grace.
func (c *child) stop(grace time.Duration) error {
	c.stopped = true
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(grace):
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM; killed it", c.name, grace)
}

// exited returns an error when the child has exited although the demo did
// not stop it, with the end of its log to say why.
func (c *child) exited() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	if c.stopped {
		return nil
	}
	status := "exit status 0"
	if c.err != nil {
		status = c.err.Error()
	}
	return fmt.Errorf("the %s exited unexpectedly (%s); the end of %s:\n%s", c.name, status, c.logPath, tail(c.logPath, 15))
}

// tail returns the last n lines of a file, indented.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, "    "+sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "    (empty)"
	}
	return strings.Join(lines, "\n")
}

// lastLineWith returns the last line of the file that contains substr.
func lastLineWith(path, substr string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			last = sc.Text()
		}
	}
	return last
}

// childFailure reports the first child that died on its own.
func (d *demo) childFailure() error {
	var errs []error
	for _, c := range d.children {
		if err := c.exited(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
