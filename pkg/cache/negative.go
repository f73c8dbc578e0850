package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// ErrNoValue is what a loader returns (wrapped, say with fmt.Errorf's %w) to
// report that its source has no value for the key: a missing row. Unlike
// other errors of a loader, it is cached, as a negative entry, for
// Config.NegativeTTL (at most the TTL the call would give a value), so that
// a hot missing row does not reach the source on every request. While it is
// cached, GetOrLoad and Cached return an error wrapping ErrNoValue without
// calling the loader.
//
// A negative entry is an entry like any other: Set replaces it; Delete,
// Invalidate, InvalidatePrefix and the policy's invalidations end it; a
// load's write-back is fenced as for a value; the near-cache keeps it (and
// drops it on invalidation) like a value. Get reports it as a miss
// (false, nil), since it holds nothing to decode. In Stats, reading one
// counts as a hit: the cache answered, and no load was needed.
var ErrNoValue = errors.New("cache: no value")

// noValueError is what GetOrLoad returns for a cached negative entry.
type noValueError struct{ key string }

func (e *noValueError) Error() string {
	return fmt.Sprintf("cache: %q: no value (cached)", e.key)
}

func (e *noValueError) Unwrap() error { return ErrNoValue }

// negativePayload stands for a negative entry's payload on the read path
// (usableEntry, the near-cache). It is told apart by identity, not content,
// so no codec's output can be taken for it. Never modified.
var negativePayload = []byte{0}

// isNegative reports whether payload is negativePayload.
func isNegative(payload []byte) bool {
	return len(payload) == 1 && &payload[0] == &negativePayload[0]
}

// isNegativeHit reports whether err is get's answer for a negative entry.
func isNegativeHit(err error) bool {
	var nv *noValueError
	return errors.As(err, &nv)
}

// nearCopy is the copy of payload the near-cache keeps: payload may alias
// the client's buffers (see Codec). negativePayload is kept as it is, for
// isNegative to recognise it.
func nearCopy(payload []byte) []byte {
	if isNegative(payload) {
		return payload
	}
	return slices.Clone(payload)
}

// storeNoValue caches a negative entry for key after its load returned
// loadErr, if loadErr wraps ErrNoValue: the write-back of GetOrLoad (see
// storeLoaded), with the TTL capped by NegativeTTL.
func (c *Cache) storeNoValue(ctx context.Context, st *prefixState, key string, gen, seq int64, obs observation, loadErr error, ttl time.Duration) {
	if !errors.Is(loadErr, ErrNoValue) {
		return
	}
	ttl = min(c.cfg.NegativeTTL, c.effectiveTTL(st, ttl))
	if err := c.storeEntry(ctx, st, key, gen, seq, obs, keyspace.AppendNegative(nil, gen), ttl); err != nil {
		c.warn("cache: caching no value failed", "key", key, "err", err)
	}
}
