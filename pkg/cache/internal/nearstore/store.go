// Package nearstore is the near-cache's memory: a sharded map with S3-FIFO
// eviction and read reservations, which know nothing of Redis. The cache
// package decides what goes in and what is invalidated; this package keeps
// the bounds and the race between a read and an invalidation straight.
package nearstore

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
)

// Store is the near-cache's memory: a sharded map with S3-FIFO eviction
// (Yang et al., SOSP '23), bounded by entries and by bytes.
//
// Why S3-FIFO rather than LRU or CLOCK: a hit must be cheap under many
// parallel readers, and LRU moves the entry to the front of a list on every
// hit, which takes the shard's write lock. S3-FIFO, like CLOCK, only bumps a
// 2-bit counter on a hit (an atomic add under the read lock, skipped once the
// counter is saturated, so a hot entry's cache line stays shared). Unlike
// CLOCK it is scan resistant: new entries go to a small FIFO (10% of the
// space) and reach the main FIFO only if they were read again while there, so
// a burst of one-off keys (a crawler, a batch job) passes through without
// evicting the working set. The ghost FIFO remembers recently evicted keys,
// so a key that comes back soon goes straight to the main FIFO.
//
// Pending reservations (see Reserve and Fill) live beside the entries: an
// invalidation removes both, which is what keeps a read that raced a write
// from publishing the value it read before the write.
//
// Reads take no lock: index (a sync.Map, whose Load writes no shared memory)
// maps keys to entries. Every change goes through the key's shard, under its
// lock, which keeps index, the shard's map and its FIFOs in step; the shard
// locks are for writers only, so parallel hits never contend on one.
type Store struct {
	seed   maphash.Seed
	shards []segment
	mask   uint64
	index  sync.Map // string -> *Entry

	Evictions     atomic.Int64 // entries dropped by the size bounds
	Invalidations atomic.Int64 // entries dropped because their key changed
}

// entryOverhead approximates the bytes an entry costs beyond its key and
// payload: the entry struct, its map slot and the key's string header.
const entryOverhead = 112

// Entry is immutable once published, except freq (atomic) and the list
// links and inMain (used under the shard's lock only), so readers use it
// without a lock.
type Entry struct {
	key     string
	Payload []byte
	Gen     int64 // generation of the stored entry: stale once the prefix moves past it
	expires int64 // monotonic nanoseconds (see mono.Now)
	size    int64
	hash    uint64

	freq       atomic.Int32 // reads since insertion or last eviction pass, 0..3
	inMain     bool
	prev, next *Entry
}

type segment struct {
	mu      sync.Mutex
	m       map[string]*Entry
	pending map[string]uint64 // key -> token of the read in flight
	small   fifo
	main    fifo
	ghost   ghost

	maxEntries int
	maxBytes   int64
}

// New returns a store bounded by maxEntries entries and maxBytes bytes
// (keys, payloads and a fixed per-entry overhead).
func New(maxEntries int, maxBytes int64) *Store {
	n := 16
	// Small caches keep one shard, so the bounds stay exact rather than being
	// split into shares too small to hold anything.
	if maxEntries < 64*n || maxBytes < 64<<10*int64(n) {
		n = 1
	}
	s := &Store{seed: maphash.MakeSeed(), shards: make([]segment, n), mask: uint64(n - 1)}
	for i := range s.shards {
		sh := &s.shards[i]
		// Shares add up to exactly the configured bounds.
		sh.maxEntries = maxEntries / n
		if i < maxEntries%n {
			sh.maxEntries++
		}
		sh.maxBytes = maxBytes / int64(n)
		if int64(i) < maxBytes%int64(n) {
			sh.maxBytes++
		}
		sh.m = make(map[string]*Entry)
		sh.pending = make(map[string]uint64)
		sh.ghost.init(max(sh.maxEntries, 16))
	}
	return s
}

func (s *Store) hash(key string) uint64 { return maphash.String(s.seed, key) }

func (s *Store) shard(h uint64) *segment { return &s.shards[h&s.mask] }

// Get returns key's entry if it is present and unexpired. The caller checks
// its generation.
func (s *Store) Get(key string) *Entry { return s.GetAt(key, mono.Now()) }

// GetAt is Get at now (mono.Now), for a caller that has read the clock.
func (s *Store) GetAt(key string, now int64) *Entry {
	v, ok := s.index.Load(key)
	if !ok {
		return nil
	}
	e := v.(*Entry)
	if now >= e.expires {
		return nil
	}
	if f := e.freq.Load(); f < 3 {
		e.freq.CompareAndSwap(f, f+1) // a lost race loses one count: harmless
	}
	return e
}

// Reserve records that a read of key is about to be sent to Redis, under
// token, and drops a present entry (the caller found it unusable). It
// reports false if another read of key is already in flight: that one will
// fill the entry.
func (s *Store) Reserve(key string, token uint64) bool {
	sh := s.shard(s.hash(key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.pending[key]; ok {
		return false
	}
	if e := sh.m[key]; e != nil {
		s.remove(sh, e)
	}
	sh.pending[key] = token
	return true
}

// Fill publishes what the read under token found, if the reservation still
// stands (no invalidation of key arrived since Reserve) and valid() holds
// under the shard lock. It reports whether the entry was published.
func (s *Store) Fill(key string, token uint64, payload []byte, gen, expires int64, valid func() bool) bool {
	h := s.hash(key)
	sh := s.shard(h)
	size := int64(len(key)+len(payload)) + entryOverhead
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.pending[key] != token {
		return false
	}
	delete(sh.pending, key)
	if size > sh.maxBytes || !valid() {
		return false
	}
	e := &Entry{key: key, Payload: payload, Gen: gen, expires: expires, size: size, hash: h}
	if sh.ghost.take(h) {
		e.inMain = true // evicted recently and wanted again: skip probation
		sh.main.pushFront(e)
	} else {
		sh.small.pushFront(e)
	}
	sh.m[key] = e
	s.index.Store(key, e)
	for sh.entries() > sh.maxEntries || sh.bytes() > sh.maxBytes {
		e := sh.evictOne()
		s.index.CompareAndDelete(e.key, e)
		s.Evictions.Add(1)
	}
	return true
}

// Cancel drops the reservation under token, if it still stands.
func (s *Store) Cancel(key string, token uint64) {
	sh := s.shard(s.hash(key))
	sh.mu.Lock()
	if sh.pending[key] == token {
		delete(sh.pending, key)
	}
	sh.mu.Unlock()
}

// Invalidate drops key's entry and any read of it in flight.
func (s *Store) Invalidate(key string) {
	sh := s.shard(s.hash(key))
	sh.mu.Lock()
	delete(sh.pending, key)
	if e := sh.m[key]; e != nil {
		s.remove(sh, e)
		s.Invalidations.Add(1)
	}
	sh.mu.Unlock()
}

// Drop removes e if it is still key's entry (a reader found it stale).
func (s *Store) Drop(e *Entry) {
	sh := s.shard(e.hash)
	sh.mu.Lock()
	if sh.m[e.key] == e {
		s.remove(sh, e)
	}
	sh.mu.Unlock()
}

// Clear drops every entry and every reservation.
func (s *Store) Clear() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			s.index.CompareAndDelete(k, e)
		}
		clear(sh.m)
		clear(sh.pending)
		sh.small = fifo{}
		sh.main = fifo{}
		sh.mu.Unlock()
	}
}

// Size returns the entries and bytes held.
func (s *Store) Size() (entries int, bytes int64) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		entries += sh.entries()
		bytes += sh.bytes()
		sh.mu.Unlock()
	}
	return entries, bytes
}

func (sh *segment) entries() int { return sh.small.n + sh.main.n }
func (sh *segment) bytes() int64 { return sh.small.bytes + sh.main.bytes }
func (sh *segment) queue(e *Entry) *fifo {
	if e.inMain {
		return &sh.main
	}
	return &sh.small
}

// remove drops e from sh and the index; sh is locked.
func (s *Store) remove(sh *segment, e *Entry) {
	sh.queue(e).unlink(e)
	delete(sh.m, e.key)
	s.index.CompareAndDelete(e.key, e)
}

// evictOne frees one entry's room, as S3-FIFO does: from the small FIFO while
// it holds at least a tenth of either bound (an entry read there moves on to
// the main FIFO instead, one never read is evicted and remembered in the
// ghost), otherwise from the main FIFO (an entry read since it last came by
// gets another round with one count less). It returns the evicted entry, for
// the caller to drop from the index.
func (sh *segment) evictOne() *Entry {
	for {
		if sh.small.n > 0 && (sh.main.n == 0 || sh.small.n*10 >= sh.maxEntries || sh.small.bytes*10 >= sh.maxBytes) {
			e := sh.small.back()
			sh.small.unlink(e)
			if e.freq.Load() > 0 {
				e.freq.Store(0)
				e.inMain = true
				sh.main.pushFront(e)
				continue
			}
			delete(sh.m, e.key)
			sh.ghost.add(e.hash)
			return e
		}
		e := sh.main.back()
		sh.main.unlink(e)
		if f := e.freq.Load(); f > 0 {
			e.freq.Store(f - 1)
			sh.main.pushFront(e)
			continue
		}
		delete(sh.m, e.key)
		return e
	}
}

// fifo is an intrusive doubly linked queue: new entries at the front,
// eviction candidates at the back.
type fifo struct {
	head, tail *Entry
	n          int
	bytes      int64
}

func (q *fifo) pushFront(e *Entry) {
	e.prev, e.next = nil, q.head
	if q.head != nil {
		q.head.prev = e
	} else {
		q.tail = e
	}
	q.head = e
	q.n++
	q.bytes += e.size
}

func (q *fifo) back() *Entry { return q.tail }

func (q *fifo) unlink(e *Entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		q.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		q.tail = e.prev
	}
	e.prev, e.next = nil, nil
	q.n--
	q.bytes -= e.size
}

// ghost remembers the hashes of the last evicted keys (as many as the shard
// holds entries), in a ring, with a multiset for lookups.
type ghost struct {
	ring []uint64
	next int
	full bool
	set  map[uint64]int
}

func (g *ghost) init(n int) {
	g.ring = make([]uint64, n)
	g.set = make(map[uint64]int, n)
}

func (g *ghost) add(h uint64) {
	if g.full {
		old := g.ring[g.next]
		if g.set[old]--; g.set[old] <= 0 {
			delete(g.set, old)
		}
	}
	g.ring[g.next] = h
	g.set[h]++
	g.next++
	if g.next == len(g.ring) {
		g.next, g.full = 0, true
	}
}

// take reports whether h is remembered, and forgets it once.
func (g *ghost) take(h uint64) bool {
	n, ok := g.set[h]
	if !ok {
		return false
	}
	// The ring slot stays; when it is overwritten the count no longer
	// includes it, which the <= 0 check in add tolerates.
	if n <= 1 {
		delete(g.set, h)
	} else {
		g.set[h] = n - 1
	}
	return true
}
