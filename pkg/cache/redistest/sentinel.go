package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name the sentinels of StartSentinel monitor.
const SentinelMasterName = "cacheplane"

// Sentinel is a real Redis Sentinel deployment: one master, one replica and
// three sentinels with a quorum of two, tuned to fail over within a few
// seconds (down-after-milliseconds 1000), for tests of failover behaviour.
type Sentinel struct {
	// MasterName is what the sentinels call the master.
	MasterName string
	// Data are the data nodes: the first started as master, the second as
	// its replica. Which one is master changes with failovers: ask Master.
	Data []*Server
	// Sentinels are the sentinel processes.
	Sentinels []*Server
}

// Sentinel timings: a master is down after a second without answers; a
// failover that stalls is retried after twice failover-timeout.
const (
	sentinelDownAfter       = 1000
	sentinelFailoverTimeout = 3000
)

// StartSentinel starts the master, its replica and three sentinels, and
// returns once the replica is in sync and every sentinel agrees on the master
// and knows the replica and the other two sentinels, so that a failover can
// start as soon as the master dies.
func StartSentinel() (*Sentinel, error) {
	d := &Sentinel{MasterName: SentinelMasterName}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	// Without a delay the master sends its (empty) dataset to the replica at
	// once, instead of waiting five seconds for more replicas to join.
	master, err := Start("--repl-diskless-sync-delay", "0")
	if err != nil {
		return nil, fmt.Errorf("start master: %w", err)
	}
	d.Data = append(d.Data, master)
	replica, err := Start("--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	if err != nil {
		return nil, fmt.Errorf("start replica: %w", err)
	}
	d.Data = append(d.Data, replica)
	// The sentinels learn of replicas from the master's INFO, which they read
	// at once on connecting and then only every ten seconds: the replica
	// must be attached before they start.
	if err := waitUntil(15*time.Second, "the replica to sync", func() (bool, error) {
		return replicaSynced(replica)
	}); err != nil {
		return nil, err
	}
	for i := range 3 {
		s, err := startSentinel(d.MasterName, master.Port)
		if err != nil {
			return nil, fmt.Errorf("start sentinel %d: %w", i, err)
		}
		d.Sentinels = append(d.Sentinels, s)
	}
	// Sentinels find each other through hello messages on the master, every
	// two seconds.
	if err := waitUntil(20*time.Second, "the sentinels to agree on the master", func() (bool, error) {
		return d.agree(master.Addr(), true)
	}); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

func startSentinel(masterName string, masterPort int) (*Server, error) {
	var lastErr error
	for range 5 { // a free port can be taken between choosing and binding it
		dir, err := os.MkdirTemp("", "redistest-sentinel-")
		if err != nil {
			return nil, err
		}
		// Sentinel refuses to run without a config file it can rewrite.
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
			"sentinel down-after-milliseconds %[1]s %[3]d\n"+
			"sentinel failover-timeout %[1]s %[4]d\n"+
			"sentinel parallel-syncs %[1]s 1\n",
			masterName, masterPort, sentinelDownAfter, sentinelFailoverTimeout)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		port, err := FreePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &Server{Port: port, dir: dir, conf: conf, sentinel: true}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
		os.RemoveAll(dir)
	}
	return nil, lastErr
}

// Addrs are the sentinels' host:port addresses.
func (d *Sentinel) Addrs() []string {
	out := make([]string, len(d.Sentinels))
	for i, s := range d.Sentinels {
		out[i] = s.Addr()
	}
	return out
}

// Client returns a new failover client of the master; the caller closes it.
func (d *Sentinel) Client() *redis.Client {
	return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: d.MasterName, SentinelAddrs: d.Addrs()})
}

// Master returns the data node that the sentinels report as master; they
// must all agree.
func (d *Sentinel) Master() (*Server, error) {
	addr, err := d.masterAddr()
	if err != nil {
		return nil, err
	}
	for _, s := range d.Data {
		if s.Addr() == addr {
			return s, nil
		}
	}
	return nil, fmt.Errorf("the sentinels report master %s, which is not a data node of this deployment", addr)
}

// KillMaster kills the current master (SIGKILL, like a crash) and returns it;
// the sentinels notice within a second and start a failover. It can be
// started again with its Start, and the sentinels then make it a replica.
func (d *Sentinel) KillMaster() (*Server, error) {
	m, err := d.Master()
	if err != nil {
		return nil, err
	}
	m.Stop()
	return m, nil
}

// WaitForNewMaster waits until every sentinel reports a master other than
// old and that node has taken the role, then returns it.
func (d *Sentinel) WaitForNewMaster(old *Server, timeout time.Duration) (*Server, error) {
	var master *Server
	err := waitUntil(timeout, "a new master", func() (bool, error) {
		addr, err := d.masterAddr()
		if err != nil || addr == old.Addr() {
			return false, err
		}
		if master, err = d.Master(); err != nil {
			return false, err
		}
		return hasRole(master, "master")
	})
	return master, err
}

// Close stops every process and removes their directories.
func (d *Sentinel) Close() {
	for _, s := range d.Sentinels {
		s.Close()
	}
	for _, s := range d.Data {
		s.Close()
	}
}

// masterAddr asks every sentinel for the master's address and fails unless
// they agree.
func (d *Sentinel) masterAddr() (string, error) {
	var addr string
	for _, s := range d.Sentinels {
		got, err := sentinelMasterAddr(s, d.MasterName)
		if err != nil {
			return "", err
		}
		if addr != "" && got != addr {
			return "", fmt.Errorf("sentinels disagree on the master: %s and %s", addr, got)
		}
		addr = got
	}
	return addr, nil
}

// agree reports whether every sentinel sees master as a healthy master, with
// the other sentinels and (when withReplica) a replica known.
func (d *Sentinel) agree(master string, withReplica bool) (bool, error) {
	for _, s := range d.Sentinels {
		info, err := sentinelMasterInfo(s, d.MasterName)
		if err != nil {
			return false, err
		}
		if info["ip"]+":"+info["port"] != master || info["flags"] != "master" ||
			info["num-other-sentinels"] != strconv.Itoa(len(d.Sentinels)-1) ||
			(withReplica && info["num-slaves"] == "0") {
			return false, nil
		}
	}
	return true, nil
}

func sentinelMasterAddr(s *Server, name string) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	hp, err := c.GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", s.Addr(), err)
	}
	return hp[0] + ":" + hp[1], nil
}

func sentinelMasterInfo(s *Server, name string) (map[string]string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.Master(ctx, name).Result()
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: %w", s.Addr(), err)
	}
	return info, nil
}

// replicaSynced reports whether a replica's link to its master is up.
func replicaSynced(s *Server) (bool, error) {
	info, err := infoField(s, "replication", "master_link_status")
	return info == "up", err
}

// hasRole reports whether s answers INFO with the given role.
func hasRole(s *Server, role string) (bool, error) {
	got, err := infoField(s, "replication", "role")
	return got == role, err
}

func infoField(s *Server, section, field string) (string, error) {
	c := s.Client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", nil
}

// waitUntil polls cond every 50ms until it holds, or fails with what and the
// last error after timeout.
func waitUntil(timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("condition not met")
			}
			return fmt.Errorf("redistest: timed out after %v waiting for %s: %w", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
