package consistency_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// A cache process runs a worker. In-process ones are Cache instances of
// this test binary; an OS process is this test binary re-executed in worker
// mode (workerEnv), configured and driven over stdin and reporting its
// events as JSON lines on stdout.
type process interface {
	start()
	// stop ends the operations, closes the cache and waits for both.
	stop() error
}

// inProcess is a Cache in this test binary.
type inProcess struct {
	c    *cache.Cache
	src  *source
	w    *worker
	halt chan struct{}
	done chan struct{}
}

func newInProcess(ctx context.Context, cfg workerConfig, rec *recorder) (*inProcess, error) {
	c, err := openCache(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	src := newSource(cfg.SourceAddr)
	return &inProcess{
		c: c, src: src,
		w:    &worker{cfg: cfg, c: c, src: src, emit: rec.add},
		halt: make(chan struct{}),
		done: make(chan struct{}),
	}, nil
}

func (p *inProcess) start() {
	go func() {
		defer close(p.done)
		p.w.run(p.halt)
	}()
}

func (p *inProcess) stop() error {
	close(p.halt)
	<-p.done
	p.src.rc.Close()
	// Close's error is its last statistics flush, which a fault may fail:
	// not what this test judges.
	_ = p.c.Close()
	return nil
}

// workerEnv selects worker mode in TestMain.
const workerEnv = "CACHEPLANE_CONSISTENCY_WORKER"

// wireMsg is one line a worker process writes: a control message or an event.
type wireMsg struct {
	Ctl string `json:"ctl,omitempty"` // "ready", "done", "error"
	Err string `json:"err,omitempty"`
	Ev  *Event `json:"ev,omitempty"`
}

// osProcess is a worker in a process of its own.
type osProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	ctl    chan wireMsg // control messages, in order
	read   chan struct{}
	proc   int
}

func newOSProcess(ctx context.Context, cfg workerConfig, rec *recorder) (*osProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphans if the test binary dies
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &osProcess{cmd: cmd, stdin: stdin, stderr: &syncBuffer{}, ctl: make(chan wireMsg, 4), read: make(chan struct{}), proc: cfg.Proc}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.read)
		defer close(p.ctl)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var m wireMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				p.ctl <- wireMsg{Ctl: "error", Err: fmt.Sprintf("bad line from worker: %q: %v", sc.Text(), err)}
				continue
			}
			if m.Ev != nil {
				rec.add(*m.Ev)
				continue
			}
			p.ctl <- m
		}
	}()
	line, _ := json.Marshal(cfg)
	if _, err := fmt.Fprintf(stdin, "%s\n", line); err != nil {
		p.kill()
		return nil, err
	}
	select {
	case m, ok := <-p.ctl:
		if ok && m.Ctl == "ready" {
			return p, nil
		}
		p.kill()
		return nil, fmt.Errorf("worker process %d did not start: %s\n%s", cfg.Proc, m.Err, p.stderr)
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("worker process %d not ready after 30s\n%s", cfg.Proc, p.stderr)
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

func (p *osProcess) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

func (p *osProcess) start() { fmt.Fprintln(p.stdin, "start") }

func (p *osProcess) stop() error {
	fmt.Fprintln(p.stdin, "stop")
	var problem string
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case m, ok := <-p.ctl:
			switch {
			case !ok:
				done = true
				if problem == "" {
					problem = "exited without reporting done"
				}
			case m.Ctl == "done":
				done = true
			case m.Ctl == "error":
				problem = m.Err
			}
		case <-timeout:
			p.kill()
			return fmt.Errorf("worker process %d did not stop within 60s\n%s", p.proc, p.stderr)
		}
	}
	p.stdin.Close()
	<-p.read
	if err := p.cmd.Wait(); err != nil || problem != "" {
		// A race report makes the child exit non-zero: it is a failure too.
		return fmt.Errorf("worker process %d: %v %s\n%s", p.proc, err, problem, p.stderr)
	}
	return nil
}

// workerMain is the whole life of a worker process: a config line on stdin,
// "ready" on stdout, then operations between "start" and "stop", then "done".
func workerMain() int {
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	send := func(m wireMsg) {
		b, _ := json.Marshal(m)
		outMu.Lock()
		out.Write(append(b, '\n'))
		outMu.Unlock()
	}
	flush := func() {
		outMu.Lock()
		out.Flush()
		outMu.Unlock()
	}
	fail := func(err error) int {
		send(wireMsg{Ctl: "error", Err: err.Error()})
		flush()
		return 1
	}

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 4<<20)
	if !in.Scan() {
		return fail(errors.New("no config on stdin"))
	}
	var cfg workerConfig
	if err := json.Unmarshal(in.Bytes(), &cfg); err != nil {
		return fail(err)
	}
	c, err := openCache(context.Background(), &cfg)
	if err != nil {
		return fail(err)
	}
	src := newSource(cfg.SourceAddr)
	send(wireMsg{Ctl: "ready"})
	flush()

	lines := make(chan string)
	go func() {
		defer close(lines)
		for in.Scan() {
			lines <- strings.TrimSpace(in.Text())
		}
	}()
	if l := <-lines; l != "start" {
		return fail(fmt.Errorf("want start, got %q", l))
	}
	// Events are flushed at least every 20ms: the parent counts operations
	// to schedule its faults.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	go func() {
		for range tick.C {
			flush()
		}
	}()
	halt := make(chan struct{})
	go func() {
		for l := range lines {
			if l == "stop" {
				break
			}
		}
		close(halt) // "stop", or the parent went away
	}()
	w := &worker{cfg: cfg, c: c, src: src, emit: func(e Event) { send(wireMsg{Ev: &e}) }}
	w.run(halt)
	c.Close()
	src.rc.Close()
	send(wireMsg{Ctl: "done"})
	flush()
	return 0
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
