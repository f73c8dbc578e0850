package cache

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// unlinkKeys UNLINKs keys and returns how many existed. Redis Cluster refuses
// a multi-key command whose keys hash to different slots (CROSSSLOT), so on a
// cluster the keys go out as one UNLINK per slot, pipelined: one round trip
// per master.
func unlinkKeys(ctx context.Context, cl redis.UniversalClient, keys []string) (int64, error) {
	if _, ok := cl.(*redis.ClusterClient); !ok || len(keys) < 2 {
		return cl.Unlink(ctx, keys...).Result()
	}
	groups := purge.BySlot(keys)
	pipe := cl.Pipeline()
	cmds := make([]*redis.IntCmd, 0, len(groups))
	for _, g := range groups {
		cmds = append(cmds, pipe.Unlink(ctx, g...))
	}
	_, err := pipe.Exec(ctx)
	var n int64
	for _, c := range cmds {
		n += c.Val() // the slots that were unlinked count even if another failed
	}
	return n, err
}
