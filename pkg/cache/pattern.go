package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// QuotePattern returns s with every character that Invalidate's glob syntax
// treats specially (* ? [ ] \) escaped by a backslash, so that the result
// matches s literally, as regexp.QuoteMeta does for regular expressions.
// Quote whatever part of a pattern comes from input:
//
//	c.Invalidate(ctx, "user:"+cache.QuotePattern(id)+":*")
//
// deletes the keys of user id alone, even for id "*". Bytes are escaped one
// by one, so a string that is not valid UTF-8 stays the same bytes.
func QuotePattern(s string) string { return keyspace.EscapeGlob(s) }

// ErrInvalidTTL reports a negative ttl. A ttl of 0 is valid and means the
// policy's TTL for the key's prefix, or Config.DefaultTTL.
var ErrInvalidTTL = errors.New("cache: invalid ttl: negative (0 means the policy or default TTL)")

// NoExpiry is what TTL returns for a key that exists but never expires
// (written by something other than Set, or PERSISTed). It is negative, so no
// remaining time equals it; it is not a valid ttl for Set.
const NoExpiry time.Duration = -1

// checkTTL returns an error wrapping ErrInvalidTTL for a negative ttl.
func checkTTL(op, key string, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("cache: %s %q: ttl %v: %w", op, key, ttl, ErrInvalidTTL)
	}
	return nil
}
