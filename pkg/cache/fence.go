package cache

import (
	"context"
	"crypto/sha1" //nolint:gosec // Redis's own script hash (redis.sha1hex), for equality, not security
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// Write-back fencing across processes (docs/generations.md): a loader's
// write-back is a compare-and-set against what its miss observed under the
// key, and Delete leaves a unique tombstone rather than nothing, so a load
// that began before another process's Delete cannot land after it.

var (
	writeBackScript = redis.NewScript(keyspace.WriteBackLua)
	unsetScript     = redis.NewScript(keyspace.UnsetLua)
	tombstoneScript = redis.NewScript(keyspace.TombstoneLua)
	existsScript    = redis.NewScript(keyspace.ExistsLua)
	pttlScript      = redis.NewScript(keyspace.PTTLLua)
)

// observation is what a miss saw under a key, for the write-back's
// compare-and-set: ok once a read of the key returned (a value or nothing),
// sum the SHA1 of the value ("" for none). raw is a value that was read and
// found usable, kept until the caller knows whether it decodes (a value that
// does not is a miss too).
type observation struct {
	ok    bool
	local bool // get served the entry from the near-cache (for tracing)
	sum   string
	raw   []byte
	// lease is the load lease the write-back is fenced by (LoadLease),
	// nil when this call holds none.
	lease *leaseHold
}

// saw records a reply of GET: b, or nothing (nil).
func (o *observation) saw(b []byte) {
	if o == nil {
		return
	}
	o.ok, o.raw, o.sum = true, nil, ""
	if b != nil {
		o.sum = sha1Hex(b)
	}
}

// sawUsable records a value that may yet turn out to be a miss (a payload
// that does not decode): its hash is computed only then (settle).
func (o *observation) sawUsable(b []byte) {
	if o == nil {
		return
	}
	o.ok, o.raw, o.sum = true, b, ""
}

// settle computes the hash of a value recorded by sawUsable.
func (o *observation) settle() {
	if o != nil && o.raw != nil {
		o.sum, o.raw = sha1Hex(o.raw), nil
	}
}

func sha1Hex(b []byte) string {
	s := sha1.Sum(b) //nolint:gosec // see the import
	return hex.EncodeToString(s[:])
}

// scriptRefused reports a server that will not run scripts for this client
// (an ACL without EVAL, scripting disabled): the fences fall back to the
// plain commands.
func scriptRefused(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "NOPERM") || strings.Contains(msg, "unknown command")
}

// redisWriteBack is the write-back's compare-and-set (keyspace.WriteBackLua):
// value is stored under key for ttl only if the key still holds what obs
// saw. It reports whether it wrote. Pipelined if configured, like redisSet.
func (c *Cache) redisWriteBack(ctx context.Context, cl *universal, key, obs string, value []byte, ttl time.Duration) (bool, error) {
	ms := max(ttl.Milliseconds(), 1)
	busy := c.concurrent()
	defer c.done()
	var n int64
	var err error
	if p := c.pipeliner(cl); p != nil && busy {
		// A copy: the command may go out after the caller recycled value.
		cmd := redis.NewCmd(ctx, "evalsha", writeBackScript.Hash(), 1, key, obs, slices.Clone(value), ms)
		err = await(ctx, p, cmd)
		if err == nil {
			n, err = cmd.Int64()
		}
		if err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return n == 1, err
		}
		// A restarted server forgot the script: EVAL loads it.
	}
	n, err = writeBackScript.Run(ctx, cl, []string{key}, obs, value, ms).Int64()
	if scriptRefused(err) {
		c.warn("cache: cannot run the write-back script; writing back unfenced", "err", err)
		return true, cl.Set(ctx, key, value, ttl).Err()
	}
	return n == 1, err
}

// redisUnset deletes key if it still holds value (keyspace.UnsetLua).
func (c *Cache) redisUnset(ctx context.Context, cl *universal, key string, value []byte) error {
	err := unsetScript.Run(ctx, cl, []string{key}, sha1Hex(value)).Err()
	if scriptRefused(err) {
		return cl.Unlink(ctx, key).Err()
	}
	return err
}

// tombstone replaces keys (Redis keys) with a tombstone each for
// Config.TombstoneTTL and returns how many held an entry (anything but a
// tombstone). On a cluster the keys go out as one script per slot,
// pipelined.
func (c *Cache) tombstone(ctx context.Context, cl *universal, keys []string) (int64, error) {
	tomb := keyspace.AppendTombstone(make([]byte, 0, 10), rand.Uint64())
	ms := max(c.cfg.TombstoneTTL.Milliseconds(), 1)
	_, cluster := cl.UniversalClient.(*redis.ClusterClient)
	var n int64
	var err error
	if !cluster || len(keys) < 2 {
		n, err = tombstoneScript.Run(ctx, cl, keys, ms, tomb).Int64()
	} else {
		groups := purge.BySlot(keys)
		pipe := cl.Pipeline()
		cmds := make([]*redis.Cmd, 0, len(groups))
		for _, g := range groups {
			// EVAL, not EVALSHA: a NOSCRIPT inside a pipeline is not
			// retried.
			cmds = append(cmds, tombstoneScript.Eval(ctx, pipe, g, ms, tomb))
		}
		_, err = pipe.Exec(ctx)
		for _, cmd := range cmds {
			v, _ := cmd.Int64() // the slots that were done count even if another failed
			n += v
		}
	}
	if scriptRefused(err) {
		c.warn("cache: cannot run the delete script; deleting without a tombstone", "err", err)
		return unlinkKeys(ctx, cl.UniversalClient, keys)
	}
	return n, err
}

// redisExists reports whether key holds anything but a tombstone.
func (c *Cache) redisExists(ctx context.Context, cl *universal, key string) (bool, error) {
	n, err := existsScript.Run(ctx, cl, []string{key}).Int64()
	if scriptRefused(err) {
		n, err = cl.Exists(ctx, key).Result()
	}
	return n > 0, err
}

// redisPTTL is PTTL of key, a tombstone reading as missing (-2), in
// milliseconds as Redis answers.
func (c *Cache) redisPTTL(ctx context.Context, cl *universal, key string) (int64, error) {
	ms, err := pttlScript.Run(ctx, cl, []string{key}).Int64()
	if scriptRefused(err) {
		var d time.Duration
		d, err = cl.PTTL(ctx, key).Result()
		switch {
		case err != nil:
		case d == -2 || d == -1:
			ms = int64(d) // go-redis passes -1 and -2 through as nanoseconds
		default:
			ms = d.Milliseconds()
		}
	}
	return ms, err
}

// observe reads what key holds into obs, for a write-back that follows no
// lookup (a no-cache request). A failed read leaves obs empty: nothing is
// written back.
func (c *Cache) observe(ctx context.Context, key string, obs *observation) {
	cl := c.client.Load()
	if cl == nil {
		return
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	b, err := c.redisGet(octx, cl, c.space.DataKey(key))
	switch err {
	case redis.Nil:
		obs.saw(nil)
	case nil:
		obs.saw(b)
	}
}
