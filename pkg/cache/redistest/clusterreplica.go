package redistest

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AddReplica starts a node, joins it to the cluster as a replica of master
// (one of Nodes, or a replica promoted since) and returns once it is in sync
// and every node of the cluster knows it, so that a CLUSTER FAILOVER on it
// can start at once.
func (c *Cluster) AddReplica(master *Server) (*Server, error) {
	ctx := context.Background()
	r, err := startClusterNode()
	if err != nil {
		return nil, err
	}
	c.Replicas = append(c.Replicas, r)
	mc := master.Client()
	defer mc.Close()
	rc := r.Client()
	defer rc.Close()
	id, err := mc.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return nil, err
	}
	if err := rc.ClusterMeet(ctx, "127.0.0.1", fmt.Sprint(master.Port)).Err(); err != nil {
		return nil, err
	}
	// The new node must have learnt the master's id over the bus first.
	if err := waitUntil(20*time.Second, "the new node to replicate "+master.Addr(), func() (bool, error) {
		return rc.ClusterReplicate(ctx, id).Err() == nil, nil
	}); err != nil {
		return nil, err
	}
	if err := waitUntil(20*time.Second, "the replica to sync", func() (bool, error) { return replicaSynced(r) }); err != nil {
		return nil, err
	}
	myid, err := rc.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return nil, err
	}
	for _, s := range append(c.Nodes, c.Replicas...) {
		cl := s.Client()
		err := waitUntil(20*time.Second, s.Addr()+" to know the replica", func() (bool, error) {
			nodes, err := cl.ClusterNodes(ctx).Result()
			return err == nil && nodesKnowReplica(nodes, myid, id), err
		})
		cl.Close()
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// nodesKnowReplica reports whether CLUSTER NODES lists node as a replica of
// master.
func nodesKnowReplica(nodes, node, master string) bool {
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == node && strings.Contains(f[2], "slave") && f[3] == master {
			return true
		}
	}
	return false
}
