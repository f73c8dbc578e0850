package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// The near-cache on a Redis Cluster: a hit of pkg/cache's near-cache, which
// tracks every node of a 3-master cluster, against a hit of rueidis's
// client-side cache (DoCache) on the same cluster, at 1 and 64 callers.

var clusterNearNames = []string{"pkg/cache near-cache (cluster)", "rueidis client-side cache (cluster)"}

func (r *report) runClusterNear(ctx context.Context) error {
	progress("cluster near-cache: starting a 3-master cluster")
	cl, err := redistest.StartCluster(3)
	if err != nil {
		return err
	}
	defer cl.Close()
	near, err := connect(ctx, cache.Config{Mode: cache.ModeCluster, Addrs: cl.Addrs(), KeyPrefix: "near",
		NearCache: &cache.NearCacheConfig{TTL: time.Minute}})
	if err != nil {
		return err
	}
	defer near.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !near.NearCacheStats().Enabled {
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster near-cache tracking not established: %+v", near.NearCacheStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	rue, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: cl.Addrs()})
	if err != nil {
		return fmt.Errorf("rueidis on the cluster: %w", err)
	}
	defer rue.Close()
	b, _ := json.Marshal(value)
	if err := errors.Join(
		near.Set(ctx, hitKey, value, ttl),
		rue.Do(ctx, rue.B().Set().Key("rue:"+hitKey).Value(string(b)).Ex(ttl).Build()).Error(),
	); err != nil {
		return err
	}
	ops := map[string]op{
		clusterNearNames[0]: func(ctx context.Context) error {
			var v user
			found, err := near.Get(ctx, hitKey, &v)
			if err == nil && !found {
				err = errMissed
			}
			return err
		},
		clusterNearNames[1]: func(ctx context.Context) error {
			b, err := rue.DoCache(ctx, rue.B().Get().Key("rue:"+hitKey).Cache(), time.Minute).AsBytes()
			if err != nil {
				return err
			}
			var v user
			return json.Unmarshal(b, &v)
		},
	}
	before := near.Stats()
	res := map[int]map[string]measurement{}
	for _, n := range callerCounts {
		progress("cluster near-cache at %d callers", n)
		m, err := r.measure(n, clusterNearNames, ops)
		if err != nil {
			return err
		}
		res[n] = m
	}
	// As for the standalone tier: the series must have been served from
	// memory, not from a tier that had turned itself off.
	after := near.Stats()
	if hits, local := after.Hits-before.Hits, after.LocalHits-before.LocalHits; hits == 0 || float64(local) < 0.999*float64(hits) {
		return fmt.Errorf("cluster near-cache served %d of %d hits from memory: %+v", local, hits, near.NearCacheStats())
	}
	for _, n := range callerCounts {
		ours, theirs := res[n][clusterNearNames[0]].nsPerOp, res[n][clusterNearNames[1]].nsPerOp
		rw := row{
			what: "near-cache hit on a 3-master cluster vs rueidis client-side cache hit", callers: fmt.Sprint(n),
			ours: fmtNs(ours), peer: fmtNs(theirs),
			ratio: ours / theirs, speedup: theirs / ours, target: "≤ 1.00x",
		}
		rw.met = yesNo(rw.ratio <= 1.0)
		r.rows = append(r.rows, rw)
	}
	return nil
}
