package main

import (
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// server is a redis-server child process on a free loopback port with
// persistence off: the test suites' (pkg/cache/redistest), which bench may
// use as a module of this repository.
type server struct{ *redistest.Server }

func startServer(args ...string) (*server, error) {
	s, err := redistest.Start(args...)
	if err != nil {
		return nil, err
	}
	return &server{s}, nil
}

func (s *server) addr() string { return s.Addr() }

func (s *server) url() string { return s.URL(0) }

func (s *server) close() { s.Close() }
