package cache

import (
	"context"
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Stats are the cache's counters since New, in this process.
type Stats struct {
	Hits int64 `json:"hits"`
	// LocalHits counts the hits served by the near-cache; they are part of
	// Hits too, so Hits - LocalHits went to Redis.
	LocalHits int64 `json:"localHits"`
	Misses    int64 `json:"misses"`
	// Errors counts failed Redis calls, values that could not be encoded or
	// decoded, and foreign values found under a key.
	Errors int64 `json:"errors"`
	// HitRate is Hits / (Hits + Misses) in percent (0-100); 0 before any read.
	HitRate float64 `json:"hitRate"`
	// Prefixes breaks the counters down by key prefix. The first 1024
	// prefixes seen are kept apart; later ones are added up under "_other".
	Prefixes map[string]PrefixStats `json:"prefixes"`
}

// PrefixStats are the counters of one key prefix.
type PrefixStats struct {
	Hits      int64   `json:"hits"`
	LocalHits int64   `json:"localHits"` // near-cache hits, included in Hits
	Misses    int64   `json:"misses"`
	Errors    int64   `json:"errors"`
	HitRate   float64 `json:"hitRate"`
}

// Stats returns the counters since New.
func (c *Cache) Stats() Stats {
	s := Stats{Prefixes: map[string]PrefixStats{}}
	if c == nil {
		return s
	}
	for name, st := range *c.states.Load() {
		p := PrefixStats{Hits: st.allHits(), LocalHits: st.localHits.Load(), Misses: st.misses.Load(), Errors: st.errors.Load()}
		if p == (PrefixStats{}) {
			continue // known from the policy only
		}
		p.HitRate = hitRate(p.Hits, p.Misses)
		s.Prefixes[name] = p
		s.Hits += p.Hits
		s.LocalHits += p.LocalHits
		s.Misses += p.Misses
		s.Errors += p.Errors
	}
	s.HitRate = hitRate(s.Hits, s.Misses)
	return s
}

// labelValue makes a prefix usable as a Prometheus label value, which must
// be valid UTF-8 (client_golang panics or fails the scrape otherwise): each
// run of invalid bytes becomes U+FFFD. Prefixes that become equal share the
// label, and their counters add up: escaping them apart instead (say \xff)
// could collide with a prefix spelled that way, and keys from URL slugs with
// stray bytes are better counted together than as many series.
func labelValue(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// jsonSafe returns s with the prefixes that encoding/json would write alike
// (it writes invalid bytes as U+FFFD) added up under their labelValue, so a
// JSON object gets each name once.
func (s Stats) jsonSafe() Stats {
	merged := make(map[string]PrefixStats, len(s.Prefixes))
	for name, p := range s.Prefixes {
		name = labelValue(name)
		q := merged[name]
		q.Hits += p.Hits
		q.LocalHits += p.LocalHits
		q.Misses += p.Misses
		q.Errors += p.Errors
		q.HitRate = hitRate(q.Hits, q.Misses)
		merged[name] = q
	}
	s.Prefixes = merged
	return s
}

func hitRate(hits, misses int64) float64 {
	if hits+misses == 0 {
		return 0
	}
	return float64(hits) * 100 / float64(hits+misses)
}

// maxPrefixes caps how many prefixes are counted apart: keys without a ':'
// are their own prefix, and counting each of them apart would grow memory
// and the stats flush without bound.
const maxPrefixes = 1024

// otherPrefix collects the counters of prefixes beyond maxPrefixes.
const otherPrefix = "_other"

// prefixState is what the cache knows of one prefix: its counters, and the
// TTL and generation the policy gives it.
type prefixState struct {
	name string
	// label is name as a Prometheus label value (see labelValue).
	label string
	// hits counts the hits served by Redis, localHits those served by the
	// near-cache; allHits adds them up.
	hits, misses, errors atomic.Int64
	localHits            atomic.Int64
	// flushed* are the counter values already added to Redis; guarded by
	// Cache.flushMu.
	flushedHits, flushedMisses, flushedErrors int64

	// gen is the highest generation of the prefix seen in this process
	// (see policy.go); entries of older generations are stale. It only rises.
	gen atomic.Int64
	ttl atomic.Int64 // policy TTL in nanoseconds; 0 = none
	// near is the policy's near-cache choice for the prefix: nearUnset,
	// nearOn or nearOff.
	near atomic.Int32

	// invalidations counts the Invalidate and Delete calls of this process
	// that reached the prefix (see Cache.invalidationSeq).
	invalidations atomic.Int64
}

// prefixes is a copy-on-write map: reads on the hot path are one atomic load
// and a map lookup, without locks or allocations; prefixes are added rarely.
type prefixes struct {
	states   atomic.Pointer[map[string]*prefixState]
	statesMu sync.Mutex
	// base is the generation of a prefix without one of its own in the
	// generations hash (keyspace.GenBaseField): new states start at it.
	// Written under statesMu, so that no state misses a raise.
	base atomic.Int64
}

func (p *prefixes) init() {
	m := map[string]*prefixState{}
	p.states.Store(&m)
}

// state returns the state of prefix, creating it on first use.
func (p *prefixes) state(prefix string) *prefixState {
	if st, ok := (*p.states.Load())[prefix]; ok {
		return st
	}
	return p.addState(prefix, false)
}

// addState creates the state of prefix. Unless force is set (for prefixes the
// policy names, which must keep their own generation), prefixes beyond
// maxPrefixes share otherPrefix's state.
func (p *prefixes) addState(prefix string, force bool) *prefixState {
	p.statesMu.Lock()
	defer p.statesMu.Unlock()
	return p.addStateLocked(prefix, force)
}

func (p *prefixes) addStateLocked(prefix string, force bool) *prefixState {
	old := *p.states.Load()
	if st, ok := old[prefix]; ok {
		return st
	}
	if !force && len(old) >= maxPrefixes {
		if st, ok := old[otherPrefix]; ok {
			return st
		}
		prefix = otherPrefix
	}
	// Cloned: prefix may be a substring of a large key.
	st := &prefixState{name: strings.Clone(prefix), label: labelValue(prefix)}
	st.gen.Store(p.base.Load())
	m := make(map[string]*prefixState, len(old)+1)
	maps.Copy(m, old)
	m[st.name] = st
	p.states.Store(&m)
	return st
}

// flushStats adds the counters since the last flush to the stats hashes, in
// one round trip, at most once: each batch carries the process's ID and a
// sequence number, and the script applies a batch only if Redis has not seen
// its number (keyspace.FlushStatsLua). A batch whose reply was lost (a timeout
// after Redis ran it, say) is re-sent as it was, so it is a no-op if it
// landed; only then are newer counts sent, as the next batch.
func (c *Cache) flushStats(ctx context.Context, cl redis.UniversalClient) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	for {
		resend := c.pendingFlush != nil
		if !resend {
			c.pendingFlush = c.nextFlush()
			if c.pendingFlush == nil {
				return nil
			}
		}
		b := c.pendingFlush
		octx, cancel := c.opCtx(ctx)
		_, err := c.space.FlushStats(octx, cl, c.pid, b.seq, b.incs)
		cancel()
		if err != nil {
			return err // kept for the next flush, unchanged
		}
		for _, a := range b.acks {
			*a.flushed = a.value
		}
		c.pendingFlush = nil
		if !resend {
			return nil
		}
	}
}

// flushBatch is one stats flush: the increments, and the flushed counters
// they advance once Redis has them.
type flushBatch struct {
	seq  int64
	incs []keyspace.StatsIncrement
	acks []flushAck
}

type flushAck struct {
	flushed *int64
	value   int64
}

// nextFlush builds the batch of the counts since the last flush; nil when
// there are none. Guarded by flushMu.
func (c *Cache) nextFlush() *flushBatch {
	b := &flushBatch{}
	for _, st := range *c.states.Load() {
		for _, f := range [...]struct {
			field   string
			value   int64
			flushed *int64
		}{
			{keyspace.FieldHits, st.allHits(), &st.flushedHits},
			{keyspace.FieldMisses, st.misses.Load(), &st.flushedMisses},
			{keyspace.FieldErrors, st.errors.Load(), &st.flushedErrors},
		} {
			if delta := f.value - *f.flushed; delta != 0 {
				b.incs = append(b.incs, keyspace.StatsIncrement{Prefix: st.name, Field: f.field, Delta: delta})
				b.acks = append(b.acks, flushAck{f.flushed, f.value})
			}
		}
	}
	if len(b.incs) == 0 {
		return nil
	}
	c.flushSeq++
	b.seq = c.flushSeq
	return b
}

// applyGenerations raises every state to what the generations hash says,
// giving each prefix named there a state of its own: its generation must not
// be shared with otherPrefix's.
func (p *prefixes) applyGenerations(g keyspace.Generations) {
	p.statesMu.Lock()
	defer p.statesMu.Unlock()
	if g.Base > p.base.Load() {
		p.base.Store(g.Base)
	}
	for name := range g.Prefixes {
		p.addStateLocked(name, true)
	}
	for name, st := range *p.states.Load() {
		raiseGeneration(st, g.Of(name))
	}
}
