package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

var keyShape = regexp.MustCompile(`^[0-9a-f]{16}$`)

func FuzzGenerateKey(f *testing.F) {
	f.Add("tasks", "user_id", "1", "status", int64(1), 1.5, true)
	f.Add("", "", "", "", int64(0), 0.0, false)
	f.Add("a:b", "<&>", "\u2028", "é", int64(-1<<63), math.NaN(), true)
	f.Add("p", "k", "v", "k", int64(7), math.Inf(-1), false)
	f.Fuzz(func(t *testing.T, prefix, k1, v1, k2 string, n int64, fl float64, b bool) {
		params := map[string]any{k1: v1, k2: n, "float": fl, "bool": b, "nested": map[string]any{k2: []any{v1, n}}}
		key := cache.GenerateKey(prefix, params)
		hex, ok := strings.CutPrefix(key, prefix+":")
		if !ok || !keyShape.MatchString(hex) {
			t.Fatalf("GenerateKey(%q, ...) = %q, want %q + ':' + 16 lowercase hex digits", prefix, key, prefix)
		}
		// The same map built in another insertion order gives the same key.
		names := make([]string, 0, len(params))
		for k := range params {
			names = append(names, k)
		}
		slices.Sort(names)
		reordered := map[string]any{}
		for _, k := range slices.Backward(names) {
			reordered[k] = params[k]
		}
		if again := cache.GenerateKey(prefix, reordered); again != key {
			t.Fatalf("GenerateKey is not deterministic: %q then %q", key, again)
		}
		// Another parameter gives another key.
		reordered["\x00extra"] = v1
		if other := cache.GenerateKey(prefix, reordered); other == key {
			t.Fatalf("an extra parameter did not change the key %q", key)
		}
	})
}

// FuzzPatternEscape checks, with Redis's own matcher, that a tenant's pattern
// never reaches a key outside "<keyPrefix>:", and that an escaped literal
// still finds its own key. The same holds for the patterns the controller
// builds: PrefixPattern (a whole prefix, taken literally) stays inside
// "<keyPrefix>:<prefix>:".
func FuzzPatternEscape(f *testing.F) {
	for _, seed := range [][2]string{
		{"a", "*"}, {"a*", "*"}, {"a?", "?*"}, {"[ab]", "*"}, {`a\`, `*`}, {`\`, `\*`},
		{"app", "user:*"}, {"a[", "]*"}, {"*", "*"}, {"a:b", "*"}, {"x]", "[^x]*"}, {"a", `\`}, {"\xc0*", "x"},
	} {
		f.Add(seed[0], seed[1])
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr(), DB: 1}) // this fuzz test's own database
	defer rc.Close()
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, keyPrefix, pattern string) {
		if keyPrefix == "" || len(keyPrefix) > 32 || len(pattern) > 32 {
			t.Skip("an empty KeyPrefix is the whole keyspace by design; long inputs add nothing")
		}
		inside := []string{keyPrefix + ":", keyPrefix + ":x", keyPrefix + ":" + pattern, keyPrefix + "::"}
		outside := []string{
			keyPrefix, keyPrefix + "x:", keyPrefix + "x:" + pattern, "x" + keyPrefix + ":",
			keyPrefix + `\:`, `\` + keyPrefix + ":", pattern, ":" + keyPrefix + ":",
			keyspace.EscapeGlob(keyPrefix) + ":x", keyPrefix[:len(keyPrefix)-1] + ":x",
			"{cacheplane:" + keyPrefix + "}:policy",
			strings.ToValidUTF8(keyPrefix, "\uFFFD") + ":x", // what rune-wise escaping would match
			// Near misses of PrefixPattern(pattern).
			keyPrefix + ":" + pattern, keyPrefix + ":" + pattern + "x:", keyPrefix + ":x" + pattern + ":",
			"{cacheplane:" + keyPrefix + "x}:stats:x", "{cacheplane:x" + keyPrefix + "}:stats:x",
			"{cacheplane:" + keyPrefix + "}:statsx",
		}
		inside = append(inside, keyPrefix+":"+pattern+":", keyPrefix+":"+pattern+":x")
		// Every glob character of the prefix swapped for a letter: what an
		// unescaped prefix would match.
		for i := range len(keyPrefix) {
			if strings.IndexByte(`*?[]\`, keyPrefix[i]) >= 0 {
				outside = append(outside, keyPrefix[:i]+"a"+keyPrefix[i+1:]+":x", keyPrefix[:i]+keyPrefix[i+1:]+":x")
			}
		}
		if err := rc.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		pipe := rc.Pipeline()
		for _, k := range slices.Concat(inside, outside) {
			pipe.Set(ctx, k, "v", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		space := keyspace.New(keyPrefix)
		for _, k := range scanAll(t, rc, space.Pattern(pattern)) {
			if !strings.HasPrefix(k, keyPrefix+":") {
				t.Fatalf("keyPrefix %q, pattern %q: SCAN MATCH %q reached %q", keyPrefix, pattern, space.Pattern(pattern), k)
			}
		}
		literal := space.Pattern(keyspace.EscapeGlob(pattern))
		if got := scanAll(t, rc, literal); !slices.Contains(got, keyPrefix+":"+pattern) {
			t.Fatalf("escaped literal %q did not find %q (found %q)", literal, keyPrefix+":"+pattern, got)
		}
		// The fuzzed pattern as a prefix name, the way a CachePolicy's
		// prefixes reach the controller's purge.
		own := keyPrefix + ":" + pattern + ":"
		got := scanAll(t, rc, space.PrefixPattern(pattern))
		for _, k := range got {
			if !strings.HasPrefix(k, own) {
				t.Fatalf("keyPrefix %q, prefix %q: SCAN MATCH %q reached %q", keyPrefix, pattern, space.PrefixPattern(pattern), k)
			}
		}
		if !slices.Contains(got, own+"x") {
			t.Fatalf("PrefixPattern %q did not find %q (found %q)", space.PrefixPattern(pattern), own+"x", got)
		}
	})
}

func scanAll(t *testing.T, rc *redis.Client, match string) []string {
	var keys []string
	iter := rc.Scan(context.Background(), 0, match, 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// FuzzParseEntry feeds arbitrary stored values to the decoding Get and the
// middleware rely on: nothing may panic, and what AppendEntry writes parses
// back.
func FuzzParseEntry(f *testing.F) {
	f.Add([]byte("plain"))
	f.Add(keyspace.AppendEntry(nil, 0, []byte(`{"a":1}`)))
	f.Add(keyspace.AppendEntry(nil, 1<<40, []byte{1, 200, 1, 2, 'a', 'b'}))
	f.Add([]byte{0xff, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{1, 200, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{2, 0xc8, 0x01, 0x01, 0x01, 1, 1, 'a', 1, 1, 'b', 'x'}) // a stored response
	f.Fuzz(func(t *testing.T, b []byte) {
		gen, payload, err := keyspace.ParseEntry(b)
		if err == nil {
			if gen < 0 || !bytes.HasSuffix(b, payload) {
				t.Fatalf("ParseEntry(%x) = %d, %x", b, gen, payload)
			}
			var v any
			_ = json.Unmarshal(payload, &v)
		}
		cache.DecodeResponse(b)
		g, p, err := keyspace.ParseEntry(keyspace.AppendEntry(nil, int64(len(b)), b))
		if err != nil || g != int64(len(b)) || !bytes.Equal(p, b) {
			t.Fatalf("AppendEntry/ParseEntry round trip of %x: %d, %x, %v", b, g, p, err)
		}
	})
}
