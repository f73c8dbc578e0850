package keyspace

import (
	"encoding/binary"
	"errors"
)

// Stored entries are: entryMagic, entryVersion, the prefix's generation as an
// unsigned varint, then the codec's bytes. 0xFF never starts valid UTF-8 or
// JSON, so a value written by something else is recognised as foreign instead
// of being decoded as a payload.
//
// A tombstone (what Delete leaves behind, see TombstoneLua) is entryMagic,
// entryVersion|flagTombstone, then a nonce that makes every tombstone unique,
// so that a write-back comparing a key with what it observed (WriteBackLua)
// tells one Delete from the next.
//
// The bits of the version byte above the version are flags: flagTombstone,
// FlagCompressed and FlagNegative. An entry with other flags is foreign, so
// an older reader never misreads a newer kind of entry.
//
// A negative entry (a loader's "no value", cached for a short TTL) is
// entryMagic, entryVersion|FlagNegative and the generation, with no payload:
// it ages with its prefix's generation like any entry.
const (
	entryMagic    = 0xFF
	entryVersion  = 1
	flagTombstone = 0x80
)

// Flags in the version byte, below flagTombstone; the version keeps the low
// nibble.
const (
	// FlagNegative marks a negative entry: a loader's "no value".
	FlagNegative = 0x20
	// FlagCompressed marks an entry whose payload is compressed (S2, see
	// pkg/cache/compress.go). Readers decompress it whatever their own
	// settings, so compressed and plain entries coexist.
	FlagCompressed = 0x40
)

// ErrForeignEntry means a stored value lacks the entry header: it was not
// written by pkg/cache (or is corrupt). Readers treat it as a miss.
var ErrForeignEntry = errors.New("value is not a cacheplane entry")

// ErrTombstone means a stored value is a tombstone: the key was deleted.
// Readers treat it as a plain miss, never as an error.
var ErrTombstone = errors.New("entry is a tombstone")

// ErrNegative means a stored value is a negative entry: ParseEntry returns
// its generation with it (and no payload), since it is served only while
// its prefix has not moved past that generation.
var ErrNegative = errors.New("entry is a negative entry")

// AppendEntry appends the header for generation and then payload to dst.
func AppendEntry(dst []byte, generation int64, payload []byte) []byte {
	dst = append(dst, entryMagic, entryVersion)
	dst = binary.AppendUvarint(dst, uint64(max(generation, 0)))
	return append(dst, payload...)
}

// AppendNegative appends a negative entry for generation to dst.
func AppendNegative(dst []byte, generation int64) []byte {
	dst = append(dst, entryMagic, entryVersion|FlagNegative)
	return binary.AppendUvarint(dst, uint64(max(generation, 0)))
}

// TombstoneLen is the length of a tombstone (luaIsTombstone knows it too).
const TombstoneLen = 10

// AppendTombstone appends a tombstone carrying nonce to dst. Each Delete
// must use a nonce of its own.
func AppendTombstone(dst []byte, nonce uint64) []byte {
	dst = append(dst, entryMagic, entryVersion|flagTombstone)
	return binary.BigEndian.AppendUint64(dst, nonce)
}

// AppendEntryFlags is AppendEntry for an entry carrying flags
// (FlagCompressed).
func AppendEntryFlags(dst []byte, generation int64, flags byte, payload []byte) []byte {
	dst = append(dst, entryMagic, entryVersion|flags&FlagCompressed)
	dst = binary.AppendUvarint(dst, uint64(max(generation, 0)))
	return append(dst, payload...)
}

// ParseEntry splits a stored value into its generation and payload. The payload
// aliases b. A tombstone is ErrTombstone; a negative entry is ErrNegative,
// with its generation. A compressed entry is ErrForeignEntry here: its
// payload is not the codec's bytes (see ParseEntryFlags).
func ParseEntry(b []byte) (generation int64, payload []byte, err error) {
	g, flags, payload, err := ParseEntryFlags(b)
	if err == nil && flags != 0 {
		return 0, nil, ErrForeignEntry
	}
	return g, payload, err
}

// ParseEntryFlags is ParseEntry that also accepts compressed entries and
// returns their flags; the caller must undo them (decompress a
// FlagCompressed payload). A negative entry is ErrNegative with its
// generation, a tombstone ErrTombstone.
func ParseEntryFlags(b []byte) (generation int64, flags byte, payload []byte, err error) {
	if len(b) >= 2 && b[0] == entryMagic && b[1] == entryVersion|flagTombstone {
		return 0, 0, nil, ErrTombstone
	}
	if len(b) < 3 || b[0] != entryMagic {
		return 0, 0, nil, ErrForeignEntry
	}
	switch b[1] {
	case entryVersion, entryVersion | FlagCompressed, entryVersion | FlagNegative:
	default:
		return 0, 0, nil, ErrForeignEntry
	}
	g, n := binary.Uvarint(b[2:])
	if n <= 0 || g > 1<<62 {
		return 0, 0, nil, ErrForeignEntry
	}
	if b[1]&FlagNegative != 0 {
		return int64(g), 0, nil, ErrNegative
	}
	return int64(g), b[1] & FlagCompressed, b[2+n:], nil
}
