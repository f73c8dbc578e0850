package keyspace_test

import (
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// The API server's half of this table lives in
// api/v1alpha1/keyprefix_parity_test.go, which checks that the CRD accepts
// and rejects what ValidateKeyPrefix does; this test checks the messages.
func TestValidateKeyPrefix(t *testing.T) {
	for _, ok := range []string{
		"shop", "team-a/shop", "shop.v2_eu", "a", "A-Z_0.9/", "/", "-", strings.Repeat("k", keyspace.MaxKeyPrefixLen),
	} {
		if err := keyspace.ValidateKeyPrefix(ok); err != nil {
			t.Errorf("ValidateKeyPrefix(%q) = %v, want nil", ok, err)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   []string // parts of the message
	}{
		{"", []string{"empty", `"team-a/shop"`}},
		{"a:b", []string{"':' is not allowed at byte 1", "cannot nest", `"team-a/shop"`}},
		{"shop:", []string{"':' is not allowed at byte 4"}},
		{":", []string{"':'"}},
		{"shop*", []string{"glob character '*'"}},
		{"shop?", []string{"glob character '?'"}},
		{"shop[1]", []string{"glob character '['"}},
		{"shop]", []string{"glob character ']'"}},
		{`shop\x`, []string{`glob character '\\'`}},
		{"{shop}", []string{"brace '{' is not allowed at byte 0"}},
		{"shop}", []string{"brace '}'"}},
		{"my shop", []string{"whitespace ' '"}},
		{"shop\t", []string{`whitespace '\t'`}},
		{"shop\n", []string{`whitespace '\n'`}},
		{"sh\u00a0op", []string{"whitespace"}},
		{"caf\u00e9", []string{"non-ASCII character 'é' is not allowed at byte 3"}},
		{"\xffshop", []string{"invalid UTF-8 at byte 0"}},
		{"shop\xc0", []string{"invalid UTF-8"}},
		{"a\x00b", []string{`character '\x00'`}},
		{"a,b", []string{"character ','", "'.' '_' '-' '/'"}},
		{strings.Repeat("k", keyspace.MaxKeyPrefixLen+1), []string{"65 characters", "at most 64"}},
	} {
		err := keyspace.ValidateKeyPrefix(tc.prefix)
		if err == nil {
			t.Errorf("ValidateKeyPrefix(%q) = nil, want an error", tc.prefix)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ValidateKeyPrefix(%q) = %q, want it to contain %q", tc.prefix, err, w)
			}
		}
	}
}

// TestValidKeyPrefixesDoNotNest is the property the ':' rule exists for: the
// data keys of two different valid key prefixes never overlap, so neither
// space's patterns nor Relative can reach the other's keys.
func TestValidKeyPrefixesDoNotNest(t *testing.T) {
	prefixes := []string{"a", "ab", "a-b", "a/b", "a.b", "b", "a_", "A"}
	for _, p := range prefixes {
		if err := keyspace.ValidateKeyPrefix(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range prefixes {
		for _, q := range prefixes {
			if p == q {
				continue
			}
			// A key of q's space, with a rest chosen to look like p's keys.
			key := keyspace.New(q).DataKey(p + ":users:1")
			if rel, ok := keyspace.New(p).Relative(key); ok {
				t.Errorf("key prefix %q reaches %q (as %q) of key prefix %q", p, key, rel, q)
			}
		}
	}
}
