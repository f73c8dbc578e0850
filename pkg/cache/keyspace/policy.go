package keyspace

import (
	"encoding/json"
	"time"
)

// PrefixPolicy is the value of one field of the policy hash.
type PrefixPolicy struct {
	// TTLMillis is the TTL of new entries of the prefix; 0 = the library's default.
	TTLMillis int64 `json:"ttlMillis"`
	// Generation is no longer part of the policy: generations live in their
	// own hash (Space.GenKey), which pkg/cache reads; this field is ignored
	// and kept only so that old hashes still parse.
	Generation int64 `json:"generation,omitempty"`
	// NearCache, when set, says whether pods whose Cache has a near-cache
	// keep this prefix's entries in memory; unset leaves it to the pod.
	NearCache *bool `json:"nearCache,omitempty"`
}

// TTL returns the policy's TTL as a duration.
func (p PrefixPolicy) TTL() time.Duration { return time.Duration(p.TTLMillis) * time.Millisecond }

// Event types published on the events channel.
const (
	// EventPolicyChanged: re-read the policy hash.
	EventPolicyChanged = "policy"
	// EventInvalidated: Prefix now has Generation; older entries are stale.
	EventInvalidated = "invalidated"
)

// Event is a message on the events channel.
type Event struct {
	Type       string `json:"type"`
	Prefix     string `json:"prefix,omitempty"`
	Generation int64  `json:"generation,omitempty"`
}

// Equal reports whether p and o say the same.
func (p PrefixPolicy) Equal(o PrefixPolicy) bool {
	return p.TTLMillis == o.TTLMillis && p.Generation == o.Generation &&
		(p.NearCache == nil) == (o.NearCache == nil) && (p.NearCache == nil || *p.NearCache == *o.NearCache)
}

// Marshal encodes a policy field value.
func (p PrefixPolicy) Marshal() string {
	b, _ := json.Marshal(p) // int64s and a bool cannot fail
	return string(b)
}

// ParsePrefixPolicy decodes a policy hash field value.
func ParsePrefixPolicy(s string) (PrefixPolicy, error) {
	var p PrefixPolicy
	err := json.Unmarshal([]byte(s), &p)
	return p, err
}

// Marshal encodes an event message.
func (e Event) Marshal() string {
	b, _ := json.Marshal(e) // strings and an int64 cannot fail
	return string(b)
}

// ParseEvent decodes an event message.
func ParseEvent(s string) (Event, error) {
	var e Event
	err := json.Unmarshal([]byte(s), &e)
	return e, err
}
