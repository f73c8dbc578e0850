package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a real Redis Cluster of redis-server processes: masters only,
// every slot assigned, for tests of cluster behaviour (slots, per-master SCAN).
type Cluster struct {
	// Nodes are the masters as started (AddReplica's failovers may change
	// which node is master of their slots).
	Nodes []*Server
	// Replicas are the nodes AddReplica added.
	Replicas []*Server
}

// StartCluster starts n masters with cluster mode on and assigns the slots
// with `redis-cli --cluster create`, then waits until every node reports the
// cluster ok. args are extra redis-server arguments for every node.
func StartCluster(n int, args ...string) (*Cluster, error) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, errors.New("redis-cli not found on PATH: run hack/ensure-redis.sh to install it")
	}
	c := &Cluster{}
	for i := range n {
		s, err := startClusterNode(args...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("start cluster node %d: %v", i, err)
		}
		c.Nodes = append(c.Nodes, s)
	}
	create := []string{"--cluster", "create"}
	for _, s := range c.Nodes {
		create = append(create, s.Addr())
	}
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", create...).CombinedOutput(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(30 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) waitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, s := range c.Nodes {
		cl := s.Client()
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				cl.Close()
				return fmt.Errorf("cluster node %s not ok within %v: %v %s", s.Addr(), timeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl.Close()
	}
	return nil
}

// Addrs are the masters' host:port addresses, the seeds for a cluster client.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr()
	}
	return out
}

// Client returns a new cluster client; the caller closes it.
func (c *Cluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
}

// Close stops every node and removes their directories.
func (c *Cluster) Close() {
	for _, s := range append(c.Nodes, c.Replicas...) {
		s.Close()
	}
}

// startClusterNode starts a server with cluster mode on, on a port whose
// cluster bus port (port+10000) is free as well.
func startClusterNode(args ...string) (*Server, error) {
	var err error
	for range 10 {
		port, perr := FreePort()
		if perr != nil {
			return nil, perr
		}
		if port > 55535 || !portFree(port+10000) {
			continue
		}
		var s *Server
		s, err = startOn(port, append([]string{"--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port),
			"--cluster-node-timeout", "2000"}, args...)...)
		if err == nil {
			return s, nil
		}
	}
	return nil, err
}

// startOn starts a server in its own directory on a given port.
func startOn(port int, args ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	s := &Server{Port: port, args: args, dir: dir}
	if err := s.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func portFree(port int) bool {
	l, err := listenLoopback(port)
	if err != nil {
		return false
	}
	l.Close()
	return true
}
