// Package keyspace is the Redis contract shared by the controller and pkg/cache:
// where data lives, where the control keys live, how patterns built from user input
// are escaped, and how a stored entry carries its prefix's generation.
//
// Layout, for a key prefix KP (a CachePolicy's spec.keyPrefix, pkg/cache's
// Config.KeyPrefix):
//
//	KP:<prefix>:<rest>             data keys written by pkg/cache
//	KP:{T}:lease:<key>             string: the load lease of data key KP:<key>, T its
//	                               hash tag or itself (Config.LoadLease; lease.go)
//	{cacheplane:KP}:policy         hash: prefix -> PrefixPolicy JSON (controller writes)
//	{cacheplane:KP}:gen            hash: prefix -> generation, plus GenBaseField (both
//	                               write, only through the scripts in gen.go)
//	{cacheplane:KP}:stats:<prefix> hash: hits, misses, errors (pkg/cache, FlushStatsLua)
//	{cacheplane:KP}:flushed:<pid>  string: last applied stats flush of process pid
//	{cacheplane:KP}:events         pub/sub channel of Event JSON (controller publishes);
//	                               {cacheplane:KP}:events:db<N> for database N > 0
//
// Control keys share one hash tag, so in Redis Cluster they sit on one slot, and
// they start with '{', so no data pattern (which starts with the escaped KP) can
// match them.
//
// The package is public, and lives in the library module rather than the
// operator's, because it is the wire contract: clients in other languages can
// implement it from here, and the operator imports it (it cannot import the
// library module's internal packages) so the layout has exactly one source.
package keyspace

import (
	"strconv"
	"strings"
)

// Separator joins the key prefix, the prefix and the rest of a data key.
const Separator = ":"

// Stats hash fields.
const (
	FieldHits   = "hits"
	FieldMisses = "misses"
	FieldErrors = "errors"
)

// Space is one key prefix's corner of Redis. The zero value is the unprefixed space.
type Space struct {
	keyPrefix string
	db        int
	// matchPrefix is the escaped "KP:" that starts every pattern of this space.
	matchPrefix string
	tag         string
}

// New returns the space of keyPrefix ("" means no prefix).
func New(keyPrefix string) Space {
	s := Space{keyPrefix: keyPrefix, tag: "{cacheplane:" + keyPrefix + "}"}
	if keyPrefix != "" {
		s.matchPrefix = EscapeGlob(keyPrefix) + Separator
	}
	return s
}

// InDB returns the space in Redis database db. Keys live per database, but
// pub/sub channels are server-wide, so the events channel of every database
// but 0 carries the database's number: two policies with one key prefix on
// two databases of one server (prod and staging, say) must not hear each
// other's invalidations.
func (s Space) InDB(db int) Space {
	s.db = db
	return s
}

// KeyPrefix returns the key prefix the space was built from.
func (s Space) KeyPrefix() string { return s.keyPrefix }

// DataKey returns the Redis key of a key relative to the space.
func (s Space) DataKey(key string) string {
	if s.keyPrefix == "" {
		return key
	}
	return s.keyPrefix + Separator + key
}

// Relative strips the space's prefix from a Redis key. ok is false when the key
// lies outside the space.
func (s Space) Relative(redisKey string) (key string, ok bool) {
	if s.keyPrefix == "" {
		return redisKey, true
	}
	p := s.keyPrefix + Separator
	if !strings.HasPrefix(redisKey, p) {
		return "", false
	}
	return redisKey[len(p):], true
}

// Pattern turns a glob relative to the space into a SCAN MATCH pattern that can
// only match keys inside the space: the key prefix is escaped, the glob is kept.
func (s Space) Pattern(relativeGlob string) string {
	return s.matchPrefix + relativeGlob
}

// PrefixPattern matches every data key of one prefix; the prefix is taken
// literally.
func (s Space) PrefixPattern(prefix string) string {
	return s.matchPrefix + EscapeGlob(prefix) + Separator + "*"
}

// PolicyKey is the hash the controller publishes the policy into.
func (s Space) PolicyKey() string { return s.tag + ":policy" }

// StatsKey is the hash pkg/cache adds its counters of one prefix to.
func (s Space) StatsKey(prefix string) string { return s.tag + ":stats:" + prefix }

// EventsChannel is the pub/sub channel of policy changes and invalidations:
// {cacheplane:KP}:events in database 0, {cacheplane:KP}:events:db<N> in
// database N (see InDB).
func (s Space) EventsChannel() string {
	if s.db == 0 {
		return s.tag + ":events"
	}
	return s.tag + ":events:db" + strconv.Itoa(s.db)
}

// PrefixOf returns a relative key's prefix: its first ':'-separated segment.
func PrefixOf(key string) string {
	if i := strings.Index(key, Separator); i >= 0 {
		return key[:i]
	}
	return key
}

// EscapeGlob escapes the characters Redis glob patterns treat specially
// (* ? [ ] \), so s matches only itself.
func EscapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 4)
	// Byte by byte, not rune by rune: ranging over a string turns invalid
	// UTF-8 into U+FFFD, which would make the pattern match another tenant's
	// keys. Glob characters are ASCII, and no byte of a multi-byte UTF-8
	// sequence is.
	for i := range len(s) {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
