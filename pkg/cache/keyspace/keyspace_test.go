package keyspace_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

func TestSpaceKeys(t *testing.T) {
	tests := []struct {
		keyPrefix                    string
		data, pattern, prefixPattern string
		policy, stats, events        string
	}{
		{"myapp", "myapp:user:1", "myapp:user:*", "myapp:users:*", "{cacheplane:myapp}:policy", "{cacheplane:myapp}:stats:users", "{cacheplane:myapp}:events"},
		{"a*b", "a*b:user:1", `a\*b:user:*`, `a\*b:users:*`, "{cacheplane:a*b}:policy", "{cacheplane:a*b}:stats:users", "{cacheplane:a*b}:events"},
		{"", "user:1", "user:*", "users:*", "{cacheplane:}:policy", "{cacheplane:}:stats:users", "{cacheplane:}:events"},
	}
	for _, tt := range tests {
		s := keyspace.New(tt.keyPrefix)
		check := func(what, got, want string) {
			if got != want {
				t.Errorf("%q %s = %q, want %q", tt.keyPrefix, what, got, want)
			}
		}
		check("DataKey", s.DataKey("user:1"), tt.data)
		check("Pattern", s.Pattern("user:*"), tt.pattern)
		check("PrefixPattern", s.PrefixPattern("users"), tt.prefixPattern)
		check("PolicyKey", s.PolicyKey(), tt.policy)
		check("StatsKey", s.StatsKey("users"), tt.stats)
		check("EventsChannel", s.EventsChannel(), tt.events)
		rel, ok := s.Relative(tt.data)
		if !ok || rel != "user:1" {
			t.Errorf("%q Relative(%q) = %q, %v", tt.keyPrefix, tt.data, rel, ok)
		}
	}
	if got := keyspace.New("app").InDB(3).EventsChannel(); got != "{cacheplane:app}:events:db3" {
		t.Errorf("events channel in db 3 = %q", got)
	}
	if a, b := keyspace.New("app").InDB(3), keyspace.New("app").InDB(4); a.EventsChannel() == b.EventsChannel() || a.PolicyKey() != b.PolicyKey() {
		t.Error("databases must differ in events channel only (keys are per database already)")
	}
	if _, ok := keyspace.New("a").Relative("ab:x"); ok {
		t.Error(`Relative("ab:x") in space "a" succeeded`)
	}
}

func TestEscapeGlob(t *testing.T) {
	tests := map[string]string{
		"plain":    "plain",
		"a*":       `a\*`,
		"[x]?":     `\[x\]\?`,
		`back\sl`:  `back\\sl`,
		"üñí*code": `üñí\*code`,
	}
	for in, want := range tests {
		if got := keyspace.EscapeGlob(in); got != want {
			t.Errorf("EscapeGlob(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrefixOf(t *testing.T) {
	for key, want := range map[string]string{"users:1": "users", "users": "users", ":x": "", "a:b:c": "a"} {
		if got := keyspace.PrefixOf(key); got != want {
			t.Errorf("PrefixOf(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, gen := range []int64{0, 1, 127, 128, 1 << 40} {
		payload := []byte(`{"name":"x"}`)
		b := keyspace.AppendEntry(nil, gen, payload)
		g, p, err := keyspace.ParseEntry(b)
		if err != nil || g != gen || !bytes.Equal(p, payload) {
			t.Errorf("gen %d: got %d, %q, %v", gen, g, p, err)
		}
	}
}

func TestParseEntryRejectsForeignValues(t *testing.T) {
	for _, v := range [][]byte{nil, []byte(`{"a":1}`), []byte("\xff"), []byte("\xff\x02\x00x"), []byte("\xff\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")} {
		if _, _, err := keyspace.ParseEntry(v); !errors.Is(err, keyspace.ErrForeignEntry) {
			t.Errorf("ParseEntry(%q) err = %v, want ErrForeignEntry", v, err)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte("\xff\x01\x05{}"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, p, err := keyspace.ParseEntry(b)
		if err != nil {
			return
		}
		if g < 0 || len(p) > len(b) {
			t.Fatalf("ParseEntry(%q) = %d, %q", b, g, p)
		}
		again := keyspace.AppendEntry(nil, g, p)
		if g2, p2, err := keyspace.ParseEntry(again); err != nil || g2 != g || !bytes.Equal(p2, p) {
			t.Fatalf("re-encoding %d %q does not round-trip", g, p)
		}
	})
}

func TestPolicyAndEventRoundTrip(t *testing.T) {
	off := false
	for _, p := range []keyspace.PrefixPolicy{{TTLMillis: 600000, Generation: 3}, {TTLMillis: 1, NearCache: &off}} {
		got, err := keyspace.ParsePrefixPolicy(p.Marshal())
		if err != nil || !got.Equal(p) {
			t.Errorf("policy round trip of %+v = %+v, %v", p, got, err)
		}
	}
	on := true
	if (keyspace.PrefixPolicy{NearCache: &on}).Equal(keyspace.PrefixPolicy{NearCache: &off}) || (keyspace.PrefixPolicy{}).Equal(keyspace.PrefixPolicy{NearCache: &off}) {
		t.Error("Equal ignores NearCache")
	}
	e := keyspace.Event{Type: keyspace.EventInvalidated, Prefix: "users", Generation: 4}
	ge, err := keyspace.ParseEvent(e.Marshal())
	if err != nil || ge != e {
		t.Errorf("event round trip = %+v, %v", ge, err)
	}
}

func TestTombstone(t *testing.T) {
	b := keyspace.AppendTombstone(nil, 42)
	if len(b) != keyspace.TombstoneLen {
		t.Errorf("a tombstone is %d bytes, TombstoneLen (and the scripts) say %d", len(b), keyspace.TombstoneLen)
	}
	if _, _, err := keyspace.ParseEntry(b); !errors.Is(err, keyspace.ErrTombstone) {
		t.Errorf("ParseEntry(tombstone) err = %v, want ErrTombstone", err)
	}
	if bytes.Equal(b, keyspace.AppendTombstone(nil, 43)) {
		t.Error("two nonces, one tombstone")
	}
}
