// Package redistest starts real redis-server processes for tests: one per test
// package (from TestMain), on a free loopback port, with persistence off. Tests
// isolate themselves by key prefix.
//
// Besides a single server it starts Redis Cluster (StartCluster), Sentinel
// deployments (StartSentinel), servers with ACL users (CacheUser) or TLS
// (StartTLS), and a TCP proxy that can stall like a hung server (StartProxy). It is
// public so that applications embedding pkg/cache can test their own code
// against the same real Redis topologies the library is tested with, rather
// than against mocks. It needs a redis-server binary on PATH.
package redistest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server child process.
type Server struct {
	// Port is the loopback TCP port the server listens on; it stays the same
	// across Stop and Start, so clients reconnect to the restarted server.
	Port int

	// Certs is the test PKI of a TLS server (StartTLS); nil for plain TCP.
	Certs *Certs

	args []string
	dir  string
	// conf is a config file passed first (Sentinel needs one it can
	// rewrite); sentinel starts the server in Sentinel mode.
	conf     string
	sentinel bool
	// clientAuth is the TLS server's --tls-auth-clients.
	clientAuth ClientAuth

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *lockedBuffer
}

// Start launches a redis-server on a free port and waits until it answers PING.
// args are extra redis-server arguments, for example "--maxmemory", "10mb".
func Start(args ...string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server not found on PATH: run hack/ensure-redis.sh (`make test` does) to install it")
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // a free port can be taken between choosing and binding it
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s := &Server{Port: port, args: args, dir: dir}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// MustStart is Start for TestMain: it exits the test binary when Redis cannot start.
func MustStart(args ...string) *Server {
	s, err := Start(args...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redistest:", err)
		os.Exit(1)
	}
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is a redis:// URL of database db on the server, rediss:// for a TLS
// server.
func (s *Server) URL(db int) string {
	scheme := "redis"
	if s.Certs != nil {
		scheme = "rediss"
	}
	return fmt.Sprintf("%s://%s/%d", scheme, s.Addr(), db)
}

// TLSConfig is what a client needs to reach a TLS server (trust in the test
// CA, and the client certificate); nil for a plain server.
func (s *Server) TLSConfig() *tls.Config {
	if s.Certs == nil {
		return nil
	}
	return s.Certs.ClientTLS()
}

// Client returns a new client of database 0, as the default user; the caller
// closes it.
func (s *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.TLSConfig()})
}

// Start (re)starts a stopped server on the same port and waits until it answers.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	var args []string
	if s.conf != "" {
		args = append(args, s.conf) // redis-server wants the file first
	}
	if s.sentinel {
		args = append(args, "--sentinel")
	}
	if s.Certs != nil {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(s.Port),
			"--tls-cert-file", s.Certs.ServerCertFile,
			"--tls-key-file", s.Certs.ServerKeyFile,
			"--tls-ca-cert-file", s.Certs.CAFile,
			"--tls-auth-clients", string(s.clientAuth))
	} else {
		args = append(args, "--port", strconv.Itoa(s.Port))
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
	)
	args = append(args, s.args...)
	cmd := exec.Command("redis-server", args...)
	s.log = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphans if the test binary dies
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond, TLSConfig: s.TLSConfig()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil || isAuthError(err) { // a server with requirepass is up too
			s.cmd, s.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start:\n%s", s.Port, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d did not answer PING within 10s: %v\n%s", s.Port, err, s.log.String())
		}
	}
}

// Stop kills the server (SIGKILL: like a crash, nothing is saved) and waits
// until it has exited. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Stop()
	os.RemoveAll(s.dir)
}

// Log returns what the server printed since it last started.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

func isAuthError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS")
}

func listenLoopback(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Fill writes n keys, fmt.Sprintf(format, i) for i in [0, n), each with the
// value "v" and no TTL, in pipelined batches (through a cluster client too).
func Fill(ctx context.Context, c redis.Cmdable, format string, n int) error {
	for start := 0; start < n; start += 5000 {
		pipe := c.Pipeline()
		for i := start; i < min(start+5000, n); i++ {
			pipe.Set(ctx, fmt.Sprintf(format, i), "v", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}
