package keyspace

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyPrefixLen is the longest key prefix, in bytes (a valid key prefix is
// ASCII, so bytes and characters agree). The CRD's maxLength says the same.
const MaxKeyPrefixLen = 64

// KeyPrefixChars are the characters a key prefix may contain besides ASCII
// letters and digits.
const KeyPrefixChars = "._-/"

// ValidateKeyPrefix reports whether s may be a key prefix: the
// spec.keyPrefix of a CachePolicy and the Config.KeyPrefix of pkg/cache go
// through it, and the CRD's validation rules (api/v1alpha1) accept exactly the
// strings it accepts; a test walks both with one table so they cannot drift.
//
// A key prefix is 1 to MaxKeyPrefixLen ASCII letters, digits and the
// characters of KeyPrefixChars. Above all it contains no ':': data keys are
// "<keyPrefix>:<prefix>:<rest>", so a key prefix "a" would otherwise own
// every key of a key prefix "a:b" (Get("b:users:1"), Invalidate("b:*"), a
// CachePolicy purging its prefix "b"). Without ':' the first ':' of a data key
// ends its key prefix, so two different key prefixes never share a key. The
// other exclusions keep patterns and control keys safe without relying on
// escaping alone: glob characters (* ? [ ] \), braces (the hash tag of the
// control keys {cacheplane:<keyPrefix>}), whitespace and anything outside
// ASCII (metric labels and kubectl output).
//
// The empty string is rejected: a CachePolicy must own a namespace. pkg/cache
// alone gives "" a meaning (no prefix, the whole database) and skips this
// check for it.
//
// The error says what to change, naming the first offending character.
func ValidateKeyPrefix(s string) error {
	if s == "" {
		return fmt.Errorf(`key prefix is empty; use 1 to %d letters, digits and the characters %s, such as "shop" or "team-a/shop"`,
			MaxKeyPrefixLen, quotedChars())
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if problem := keyPrefixCharProblem(r, size); problem != "" {
			return fmt.Errorf("key prefix %q: %s at byte %d; %s", s, problem, i, fixHint(r))
		}
		i += size
	}
	if len(s) > MaxKeyPrefixLen {
		return fmt.Errorf("key prefix %q is %d characters long; shorten it to at most %d", s, len(s), MaxKeyPrefixLen)
	}
	return nil
}

// keyPrefixCharProblem names what is wrong with the rune r (size bytes long)
// in a key prefix, or returns "" if r may appear.
func keyPrefixCharProblem(r rune, size int) string {
	switch {
	case r == utf8.RuneError && size <= 1:
		return "invalid UTF-8"
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', strings.ContainsRune(KeyPrefixChars, r):
		return ""
	case r == ':':
		return "':' is not allowed"
	case strings.ContainsRune(`*?[]\`, r):
		return fmt.Sprintf("glob character %q is not allowed", r)
	case r == '{' || r == '}':
		return fmt.Sprintf("brace %q is not allowed", r)
	case unicode.IsSpace(r):
		return fmt.Sprintf("whitespace %q is not allowed", r)
	case r > 0x7f:
		return fmt.Sprintf("non-ASCII character %q is not allowed", r)
	default:
		return fmt.Sprintf("character %q is not allowed", r)
	}
}

// fixHint says how to get rid of r.
func fixHint(r rune) string {
	if r == ':' {
		return `key prefixes cannot nest (cacheplane adds the ':' between key prefix and key itself, and a key prefix "a" would own the keys of "a:b"); use one of ` +
			quotedChars() + ` instead, such as "team-a/shop"`
	}
	return "use only letters, digits and the characters " + quotedChars()
}

func quotedChars() string {
	q := make([]string, 0, len(KeyPrefixChars))
	for _, c := range KeyPrefixChars {
		q = append(q, "'"+string(c)+"'")
	}
	return strings.Join(q, " ")
}
