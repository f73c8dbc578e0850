package keyspace

// Scripts that fence write-backs against deletions, on one data key each (so
// they run on Redis Cluster, one slot per call). See docs/generations.md,
// "Write-back fencing".
//
// A loader's write-back is a compare-and-set: the miss that started the load
// remembers what it saw under the key (nothing, a stale entry, a tombstone,
// a foreign value), and the write-back lands only if the key still holds
// exactly that. A Delete replaces the key with a unique tombstone instead of
// removing it, so a write-back whose miss came before the Delete (even of a
// key that was absent) finds something else and does nothing. The
// tombstone's TTL bounds how long a load may take and still be fenced.

// luaIsTombstone tells a tombstone (see AppendTombstone) from anything else;
// v is a GET reply (false for a missing key).
const luaIsTombstone = `
local function tomb(v)
  return type(v) == 'string' and string.byte(v, 1) == 255 and string.byte(v, 2) == 129
end
`

// WriteBackLua sets KEYS[1] to ARGV[2] with a TTL of ARGV[3] milliseconds
// only if it holds what the miss observed, or nothing: ARGV[1] is the SHA1
// (hex, lower case) of the value the miss read, or "" if the key was missing.
// It returns 1 if it wrote, 0 if the key holds something else (a newer Set or
// a Delete's tombstone wins).
//
// A key found missing is written whatever the miss saw: what removes a key
// without leaving a tombstone cannot make the loaded value stale. An expiry is
// no invalidation; reclaims and operator purges remove only entries of older
// generations (and keep tombstones and newer entries), and a writer taking its
// own write back does so because the generation moved, which fences this
// write-back too (it carries the generation read before its load). Demanding
// "still missing" or "still the stale entry" instead would refuse the first
// write-back after every invalidation whose reclaim ran during the load.
const WriteBackLua = `
local cur = redis.call('GET', KEYS[1])
if cur and redis.sha1hex(cur) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`

// UnsetLua deletes KEYS[1] only if it holds the value whose SHA1 is ARGV[1]:
// a write-back takes back what it wrote, never a tombstone or a newer value
// written since. It returns 1 if it deleted.
const UnsetLua = `
local cur = redis.call('GET', KEYS[1])
if cur and redis.sha1hex(cur) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`

// TombstoneLua replaces each of KEYS with the tombstone ARGV[2] for ARGV[1]
// milliseconds and returns how many of them held something other than a
// tombstone (what Delete reports as existing). A key of another type than
// string counts and is replaced, as UNLINK would have removed it.
const TombstoneLua = luaIsTombstone + `
local n = 0
for _, k in ipairs(KEYS) do
  local v = redis.pcall('GET', k)
  if type(v) == 'table' or (v and not tomb(v)) then n = n + 1 end
  redis.call('SET', k, ARGV[2], 'PX', ARGV[1])
end
return n
`

// ExistsLua returns 1 if KEYS[1] holds anything but a tombstone.
const ExistsLua = luaIsTombstone + `
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' or (v and not tomb(v)) then return 1 end
return 0
`

// PTTLLua returns the PTTL of KEYS[1], or -2 (missing) for a tombstone.
const PTTLLua = luaIsTombstone + `
local v = redis.pcall('GET', KEYS[1])
if tomb(v) then return -2 end
return redis.call('PTTL', KEYS[1])
`

// UnlinkStaleLua UNLINKs each of KEYS unless it is a tombstone or, when
// ARGV[1] is above 0, an entry of generation ARGV[1] or later, and returns
// how many it deleted: the purge of the library's reclaims and Invalidate
// (purge.Options.Keep). Removing a tombstone, or an entry written after the
// bump that made the others stale, would put the key back in a state a
// write-back's miss may have observed (missing), so that its compare-and-set
// would land what it read before the Delete or Set in between. An entry is
// any version-1 header, whatever its flags (FlagNegative, FlagCompressed;
// the tombstone is told apart first). It reads only a value's first 12 bytes.
const UnlinkStaleLua = luaIsTombstone + `
local keep = tonumber(ARGV[1]) or 0
local n = 0
for _, k in ipairs(KEYS) do
  local h = redis.pcall('GETRANGE', k, 0, 11)
  local del = true
  if type(h) == 'string' then
    if tomb(h) then
      del = false
    elseif keep > 0 and string.byte(h, 1) == 255 and string.byte(h, 2) % 16 == 1 then
      local g, mul = 0, 1
      for i = 3, #h do
        local b = string.byte(h, i)
        g = g + (b % 128) * mul
        if b < 128 then
          if g >= keep then del = false end
          break
        end
        mul = mul * 128
      end
    end
  end
  if del then n = n + redis.call('UNLINK', k) end
end
return n
`
