package keyspace_test

import (
	"errors"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// A compressed entry parses with its flag through ParseEntryFlags, and is
// foreign to ParseEntry, whose callers would take its bytes for the codec's.
func TestCompressedEntryFlags(t *testing.T) {
	b := keyspace.AppendEntryFlags(nil, 7, keyspace.FlagCompressed, []byte("zz"))
	g, flags, p, err := keyspace.ParseEntryFlags(b)
	if err != nil || g != 7 || flags != keyspace.FlagCompressed || string(p) != "zz" {
		t.Fatalf("ParseEntryFlags = %d, %#x, %q, %v", g, flags, p, err)
	}
	if _, _, err := keyspace.ParseEntry(b); !errors.Is(err, keyspace.ErrForeignEntry) {
		t.Fatalf("ParseEntry of a compressed entry: err = %v, want ErrForeignEntry", err)
	}
	if _, flags, _, err := keyspace.ParseEntryFlags(keyspace.AppendEntry(nil, 7, []byte("v"))); err != nil || flags != 0 {
		t.Fatalf("plain entry: flags %#x, %v", flags, err)
	}
	// Flags this version does not know make the entry foreign.
	if _, _, _, err := keyspace.ParseEntryFlags([]byte{0xFF, 1 | 0x10, 0, 'v'}); !errors.Is(err, keyspace.ErrForeignEntry) {
		t.Fatalf("unknown flag: err = %v", err)
	}
	if keyspace.FlagCompressed&keyspace.FlagNegative != 0 || (keyspace.FlagCompressed|keyspace.FlagNegative)&0x81 != 0 {
		t.Fatal("flags overlap each other, the tombstone flag or the version")
	}
}
