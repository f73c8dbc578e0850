package cache

import (
	"context"
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/internal/keyspace"
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

	gen atomic.Int64 // entries of older generations are stale
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
	m := make(map[string]*prefixState, len(old)+1)
	maps.Copy(m, old)
	m[st.name] = st
	p.states.Store(&m)
	return st
}

// flushStats adds the counters since the last flush to the stats hashes, in
// one pipelined round trip. Deltas that were not stored stay for the next one.
func (c *Cache) flushStats(ctx context.Context, cl redis.UniversalClient) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()

	// Each HINCRBY remembers which flushed counter it advances, so that a
	// partly failed pipeline re-sends exactly what did not land.
	type update struct {
		cmd     *redis.IntCmd
		flushed *int64
		value   int64
	}
	var updates []update
	pipe := cl.Pipeline()
	for _, st := range *c.states.Load() {
		key := c.space.StatsKey(st.name)
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
				updates = append(updates, update{pipe.HIncrBy(ctx, key, f.field, delta), f.flushed, f.value})
			}
		}
	}
	if len(updates) == 0 {
		return nil
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	_, err := pipe.Exec(octx)
	for _, u := range updates {
		if u.cmd.Err() == nil {
			*u.flushed = u.value
		}
	}
	return err
}
