package keyspace

import "strings"

// Load leases (pkg/cache Config.LoadLease): one loader per key across
// processes. On a miss a process takes the key's lease (LeaseAcquireLua); the
// holder loads and stores through LeaseWriteBackLua, which lands unless
// another holder has taken the lease over; the others poll LeaseAcquireLua
// until the value appears, the lease ends (one of them takes it) or they stop
// waiting and load themselves.
//
// Layout: the lease of data key D (Space.DataKey) is
//
//	KP:{T}:lease:<key>   (KP set)      {T}:lease:<key>   (no key prefix)
//
// where <key> is the key relative to the space and T is what Redis Cluster
// hashes D by: D's hash tag (the text between its first '{' and the first
// '}' after it, when not empty), else D itself. The lease therefore sits in
// D's cluster slot, so one script can check the lease and write the value
// atomically. It starts with "KP:", so an ACL user confined to "KP:*" may
// take it. Its prefix (first segment after KP) starts with '{', so the
// patterns of ordinary prefixes (KP:<prefix>:*) do not reach it; an
// invalidation whose pattern does (Invalidate("*"), a prefix that itself
// starts with '{') deletes it like any key: a waiter then takes over, and
// the holder's store is guarded by the compare-and-set as without a lease.
// A D without a hash tag that contains '}' has no '}'-free T naming its
// slot: such a key, like the empty key, has no lease (LeaseKey reports
// false) and loads as without one. A lease's value is its holder's token, unique per attempt.

// LeaseKey returns the lease key of key (relative to the space), and false
// for a key that cannot have one (see the layout above).
func (s Space) LeaseKey(key string) (string, bool) {
	d := s.DataKey(key)
	t, ok := HashTag(d)
	if !ok {
		if d == "" || strings.IndexByte(d, '}') >= 0 {
			return "", false
		}
		t = d
	}
	var b strings.Builder
	b.Grow(len(s.keyPrefix) + len(t) + len(key) + 10)
	if s.keyPrefix != "" {
		b.WriteString(s.keyPrefix)
		b.WriteString(Separator)
	}
	b.WriteByte('{')
	b.WriteString(t)
	b.WriteString("}:lease:")
	b.WriteString(key)
	return b.String(), true
}

// HashTag returns the hash tag of a Redis key, as Redis Cluster finds it: the
// text between the first '{' and the first '}' after it, if that is not
// empty. ok is false for a key without one (Cluster then hashes the whole
// key).
func HashTag(key string) (tag string, ok bool) {
	s := strings.IndexByte(key, '{')
	if s < 0 {
		return "", false
	}
	e := strings.IndexByte(key[s+1:], '}')
	if e <= 0 {
		return "", false
	}
	return key[s+1 : s+1+e], true
}

// LeaseAcquireLua takes the load lease KEYS[2] of data key KEYS[1] for ARGV[3]
// milliseconds with token ARGV[2], unless the data key has changed since the
// miss: ARGV[1] is the SHA1 of what the miss read ("" for nothing), as for
// WriteBackLua. It answers one of:
//
//	{2, value}  KEYS[1] holds something else than the miss saw: value, to be
//	            read instead of loading (a holder stored it, or a Set or a
//	            Delete's tombstone came in between)
//	{1}         the lease is taken: the caller loads and stores
//	{0, pttl}   another holds the lease for pttl more milliseconds
//
// Checking the data key in the same script is what makes one load per key
// hold: a holder stores and releases in one script (LeaseWriteBackLua), so a
// process whose miss came before that store either finds the lease held or
// finds the value, never a free lease and nothing to read. A data key found
// missing is not a change (as in WriteBackLua): an expiry brings no value.
// Waiters poll with this same script, so a lease that ends without a value
// (its holder crashed or failed) is taken over in the same round trip.
const LeaseAcquireLua = `
local cur = redis.call('GET', KEYS[1])
if cur and redis.sha1hex(cur) ~= ARGV[1] then return {2, cur} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1} end
return {0, redis.call('PTTL', KEYS[2])}
`

// LeaseWriteBackLua is WriteBackLua (KEYS[1], ARGV[1..3] as there) fenced by
// the load lease KEYS[2]: it writes unless another holder's token ARGV[4]
// holds the lease, and releases the holder's lease in the same step. It
// returns -1 if another holder has taken the lease over: a holder slower than
// its lease never lands while the next one loads, nor overwrites what that one
// stored (WriteBackLua's compare-and-set refuses that). A lease that expired
// with nobody taking it over does not stop the write: the compare-and-set
// still guards the key, and a load longer than the lease is not wasted.
// Otherwise it returns WriteBackLua's answer (1 wrote, 0 the key changed).
const LeaseWriteBackLua = `
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[4] then return -1 end
local function writeBack()
` + WriteBackLua + `
end
local r = writeBack()
redis.call('DEL', KEYS[2])
return r
`

// LeaseReleaseLua deletes the load lease KEYS[1] if it still holds the token
// ARGV[1]: a holder that stores nothing (its load failed, or was invalidated)
// lets a waiter take over at once instead of after the lease's expiry. It
// returns 1 if it released.
const LeaseReleaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`
