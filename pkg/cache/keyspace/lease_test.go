package keyspace_test

import (
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// TestLeaseKeySlot checks that a key's load lease sits in the key's cluster
// slot (the lease write-back script needs both in one slot), whatever braces
// the key holds, that leases of different keys differ, and that a lease lies
// inside its key prefix (where an ACL user of the prefix may write it).
func TestLeaseKeySlot(t *testing.T) {
	keys := []string{
		"user:1", "user:{1}", "user:{1}:x", "{user}:1", "user:{}", "user:{}x", "user:{",
		"user:{{a}}", "user:{a}{b}", "user:}", "user:}{a}", "user:a}b", "user:{}{a}",
		"user:}{", "{", "}", "{}", "a{b", "ü:{ü}", "user:{a\x00b}:c", "", ":", "x:{:}",
		"user:{cacheplane:kp}", "user:{1}:lease:user:1",
	}
	for _, kp := range []string{"", "kp", "team-a/shop"} {
		s := keyspace.New(kp)
		seen := map[string]string{}
		for _, k := range keys {
			lease, ok := s.LeaseKey(k)
			d := s.DataKey(k)
			_, tagged := keyspace.HashTag(d)
			if want := tagged || (d != "" && !strings.Contains(d, "}")); ok != want {
				t.Errorf("LeaseKey(%q) in %q: ok = %v, want %v", k, kp, ok, want)
			}
			if !ok {
				continue
			}
			if got, want := purge.Slot(lease), purge.Slot(d); got != want {
				t.Errorf("key %q in %q: lease %q in slot %d, data key %q in slot %d", k, kp, lease, got, d, want)
			}
			if kp != "" && !strings.HasPrefix(lease, kp+":{") {
				t.Errorf("lease %q of %q lies outside %q:{", lease, k, kp)
			}
			if other, dup := seen[lease]; dup {
				t.Errorf("keys %q and %q share the lease %q", other, k, lease)
			}
			seen[lease] = k
			if lease == d {
				t.Errorf("key %q is its own lease", k)
			}
		}
	}
}

// TestHashTag follows Redis Cluster's rule: the first '{', then the first
// '}' after it, with something in between.
func TestHashTag(t *testing.T) {
	for k, want := range map[string]string{
		"a{b}c": "b", "{a}{b}": "a", "{{a}}": "{a", "a{}b{c}": "", "a}{b}": "b", "a{b": "", "ab": "",
	} {
		got, ok := keyspace.HashTag(k)
		if got != want || ok != (want != "") {
			t.Errorf("HashTag(%q) = %q, %v; want %q", k, got, ok, want)
		}
	}
}
