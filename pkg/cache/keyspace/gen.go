package keyspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Generations live in their own hash, GenKey: field = prefix, value = the
// prefix's generation as a decimal integer, plus GenBaseField, the time the
// hash was created. A prefix without a field has the base generation.
//
// Generations are microseconds of the Redis server's clock (TIME), raised by
// one where that is not higher than what was there: so a lost hash (evicted,
// deleted, a policy recreated) can never make them go backwards. Whoever
// recreates it sets the base just above the current time, above every
// generation handed out before, so every entry written before is stale: a
// lost hash costs a cold cache, never a stale read. (Microseconds, not
// milliseconds: a script runs for more than one, so generations cannot run
// ahead of the clock however often a prefix is bumped, and a hash recreated
// right after a bump still starts above it.) (The caveat: a failover to a server whose
// clock is behind the old one's, losing the hash, can hand out a lower base;
// processes that still know higher generations raise them again, see
// RaiseGenerations.)
//
// The scripts below are the only writers of the hash; both the library and
// the controller run them. They touch only GenKey (and publish), so they work
// on Redis Cluster.

// GenBaseField is the field of the generations hash that holds its base. A
// prefix never contains ':', so it cannot collide with a prefix's field.
const GenBaseField = ":base"

// GenKey is the hash of generations (see above).
func (s Space) GenKey() string { return s.tag + ":gen" }

// FlushedKey is the string holding the sequence number of the last stats
// flush of the process pid that was applied (see FlushStats).
func (s Space) FlushedKey(pid string) string { return s.tag + ":flushed:" + pid }

// luaNow sets now to the server's time in microseconds (exact in Lua's
// doubles until the year 2255) and base to the hash's base, creating it one
// above now if missing. Scripts that read TIME and then write need effects
// replication, the default from Redis 5 on.
const luaNow = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function str(n) return string.format('%.0f', n) end
local base = tonumber(redis.call('HGET', KEYS[1], ':base'))
if not base then
  base = now + 1
  redis.call('HSET', KEYS[1], ':base', str(base))
end
`

// BumpGenerationsLua raises each prefix's generation to
// max(old+1, base+1, floor+1, now) and publishes an invalidated Event for it.
// KEYS[1] = GenKey; ARGV[1] = the events channel; then pairs of prefix, floor.
// It returns the new generations in order.
const BumpGenerationsLua = luaNow + `
local out = {}
for i = 2, #ARGV, 2 do
  local p = ARGV[i]
  local old = tonumber(redis.call('HGET', KEYS[1], p)) or 0
  local gen = math.max(old + 1, base + 1, (tonumber(ARGV[i + 1]) or 0) + 1, now)
  redis.call('HSET', KEYS[1], p, str(gen))
  redis.call('PUBLISH', ARGV[1], '{"type":"invalidated","prefix":' .. cjson.encode(p) .. ',"generation":' .. str(gen) .. '}')
  out[#out + 1] = gen
end
return out
`

// EnsureGenerationsLua creates the base if the hash has none and returns the
// whole hash (HGETALL). KEYS[1] = GenKey.
const EnsureGenerationsLua = luaNow + `
return redis.call('HGETALL', KEYS[1])
`

// RaiseGenerationsLua makes each prefix's generation at least its floor,
// never lowering it, and returns the resulting generations in order (a
// prefix without a field: the base). It publishes an invalidated Event for
// each prefix it raised. KEYS[1] = GenKey; ARGV[1] = the events channel; then
// pairs of prefix, floor.
const RaiseGenerationsLua = luaNow + `
local out = {}
for i = 2, #ARGV, 2 do
  local p = ARGV[i]
  local cur = math.max(tonumber(redis.call('HGET', KEYS[1], p)) or 0, base)
  local floor = tonumber(ARGV[i + 1]) or 0
  if floor > cur then
    cur = floor
    redis.call('HSET', KEYS[1], p, str(cur))
    redis.call('PUBLISH', ARGV[1], '{"type":"invalidated","prefix":' .. cjson.encode(p) .. ',"generation":' .. str(cur) .. '}')
  end
  out[#out + 1] = cur
end
return out
`

// FlushStatsLua applies a batch of HINCRBYs at most once per (process, seq):
// only if the process's FlushedKey holds less than seq, which it then holds
// (with a TTL), so a batch re-sent after a reply was lost is a no-op.
// KEYS[1] = FlushedKey, KEYS[2..] = stats hashes; ARGV[1] = seq, ARGV[2] = the
// FlushedKey's TTL in milliseconds, then triples of key index (2..), field,
// increment. It returns 1 if it applied the batch, 0 if it had before.
const FlushStatsLua = `
local last = tonumber(redis.call('GET', KEYS[1])) or 0
if last >= tonumber(ARGV[1]) then return 0 end
for i = 3, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

var (
	bumpScript   = redis.NewScript(BumpGenerationsLua)
	ensureScript = redis.NewScript(EnsureGenerationsLua)
	raiseScript  = redis.NewScript(RaiseGenerationsLua)
	flushScript  = redis.NewScript(FlushStatsLua)
)

// Generations is the content of the generations hash.
type Generations struct {
	Base     int64
	Prefixes map[string]int64
}

// Of returns prefix's generation: its field, or the base if that is higher.
func (g Generations) Of(prefix string) int64 { return max(g.Base, g.Prefixes[prefix]) }

// BumpGenerations runs BumpGenerationsLua for prefixes (floor may be nil) and
// returns their new generations.
func (s Space) BumpGenerations(ctx context.Context, c redis.Scripter, prefixes []string, floor map[string]int64) (map[string]int64, error) {
	return s.runPairs(ctx, c, bumpScript, prefixes, floor)
}

// RaiseGenerations runs RaiseGenerationsLua and returns the generation of
// each prefix of floor.
func (s Space) RaiseGenerations(ctx context.Context, c redis.Scripter, floor map[string]int64) (map[string]int64, error) {
	prefixes := make([]string, 0, len(floor))
	for p := range floor {
		prefixes = append(prefixes, p)
	}
	return s.runPairs(ctx, c, raiseScript, prefixes, floor)
}

func (s Space) runPairs(ctx context.Context, c redis.Scripter, script *redis.Script, prefixes []string, floor map[string]int64) (map[string]int64, error) {
	out := make(map[string]int64, len(prefixes))
	if len(prefixes) == 0 {
		return out, nil
	}
	args := make([]any, 0, 1+2*len(prefixes))
	args = append(args, s.EventsChannel())
	for _, p := range prefixes {
		args = append(args, p, floor[p])
	}
	vals, err := script.Run(ctx, c, []string{s.GenKey()}, args...).Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(vals) != len(prefixes) {
		return nil, fmt.Errorf("generations script returned %d values for %d prefixes", len(vals), len(prefixes))
	}
	for i, p := range prefixes {
		out[p] = vals[i]
	}
	return out, nil
}

// EnsureGenerations queues EnsureGenerationsLua on c (a pipeline, say: it is
// sent in full, as EVAL, so that it works there); ParseGenerations reads the
// reply.
func (s Space) EnsureGenerations(ctx context.Context, c redis.Scripter) *redis.Cmd {
	return ensureScript.Eval(ctx, c, []string{s.GenKey()})
}

// ParseGenerations reads the reply of EnsureGenerations.
func ParseGenerations(cmd *redis.Cmd) (Generations, error) {
	flat, err := cmd.StringSlice()
	if err != nil {
		return Generations{}, err
	}
	g := Generations{Prefixes: make(map[string]int64, len(flat)/2)}
	for i := 0; i+1 < len(flat); i += 2 {
		v, err := strconv.ParseInt(flat[i+1], 10, 64)
		if err != nil {
			continue // not written by these scripts; the base still bounds it
		}
		if flat[i] == GenBaseField {
			g.Base = v
		} else {
			g.Prefixes[flat[i]] = v
		}
	}
	return g, nil
}

// FlushedTTLMillis is how long Redis remembers a process's last applied stats
// flush: a batch re-sent later than this after its reply was lost counts
// twice.
const FlushedTTLMillis = 3600 * 1000

// StatsIncrement is one HINCRBY of a stats flush.
type StatsIncrement struct {
	Prefix, Field string
	Delta         int64
}

// FlushStats applies incs once for (pid, seq) with FlushStatsLua: a later call
// with the same pid and seq (the reply of the first was lost) does nothing.
// seq must rise with each new batch of the process. It reports whether this
// call applied the batch.
func (s Space) FlushStats(ctx context.Context, c redis.Scripter, pid string, seq int64, incs []StatsIncrement) (bool, error) {
	keys := []string{s.FlushedKey(pid)}
	index := map[string]int{}
	args := make([]any, 0, 2+3*len(incs))
	args = append(args, seq, FlushedTTLMillis)
	for _, in := range incs {
		i, ok := index[in.Prefix]
		if !ok {
			keys = append(keys, s.StatsKey(in.Prefix))
			i = len(keys) // Lua indexes from 1
			index[in.Prefix] = i
		}
		args = append(args, i, in.Field, in.Delta)
	}
	n, err := flushScript.Run(ctx, c, keys, args...).Int64()
	return n == 1, err
}

// NewProcessID returns a random identifier for one process's stats flushes.
func NewProcessID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}
