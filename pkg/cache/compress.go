package cache

import (
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// Compression (Config.CompressAbove). An encoded value longer than the
// threshold is stored S2-compressed, its entry flagged with
// keyspace.FlagCompressed; everything else about the entry (header,
// generation, fencing, TTL) is unchanged. Readers decompress flagged entries
// whatever their own CompressAbove, so caches with and without the option
// share one Redis, and turning it on or off needs no flush. S2 is chosen for
// speed: a cache hit pays the decompression on every read from Redis (the
// near-cache keeps the decompressed payload, so its hits do not).

// MaxDecompressedSize bounds the payload a compressed entry may expand to.
// A larger one (a corrupt entry, or a crafted "bomb") is refused before
// anything is allocated: it is treated like a foreign value, a miss counted
// as an error.
const MaxDecompressedSize = 64 << 20

// checkCompressAbove validates Config.CompressAbove.
func checkCompressAbove(n int) error {
	if n < 0 {
		return fmt.Errorf("cache: Config.CompressAbove is negative (%d)", n)
	}
	return nil
}

// appendEntry appends the stored form of payload, tagged with gen, to dst:
// compressed if it is longer than CompressAbove and compression shrinks it
// (an incompressible value is stored plain, so no reader pays for a
// decompression that saves nothing).
func (c *Cache) appendEntry(dst []byte, gen int64, payload []byte) []byte {
	above := c.cfg.CompressAbove
	if above <= 0 || len(payload) <= above || len(payload) > MaxDecompressedSize {
		return keyspace.AppendEntry(dst, gen, payload)
	}
	start := len(dst)
	hdr := keyspace.AppendEntryFlags(dst, gen, keyspace.FlagCompressed, nil)
	need := s2.MaxEncodedLen(len(payload))
	if need < 0 {
		return keyspace.AppendEntry(dst[:start], gen, payload)
	}
	buf := slices.Grow(hdr, need)
	z := s2.Encode(buf[len(hdr):len(hdr)+need], payload)
	if len(z) >= len(payload) {
		return keyspace.AppendEntry(buf[:start], gen, payload)
	}
	return buf[:len(hdr)+len(z)]
}

// decodeEntry is keyspace.ParseEntry for entries that may be compressed: it
// returns the payload decompressed (a new slice) or, for a plain entry,
// aliasing b. A compressed entry that does not decode, or would expand
// beyond MaxDecompressedSize, is keyspace.ErrForeignEntry.
func decodeEntry(b []byte) (gen int64, payload []byte, err error) {
	gen, flags, payload, err := keyspace.ParseEntryFlags(b)
	if err != nil || flags&keyspace.FlagCompressed == 0 {
		return gen, payload, err
	}
	n, err := s2.DecodedLen(payload)
	if err != nil || n > MaxDecompressedSize {
		return 0, nil, keyspace.ErrForeignEntry
	}
	out, err := s2.Decode(make([]byte, n), payload)
	if err != nil || len(out) != n {
		return 0, nil, keyspace.ErrForeignEntry
	}
	return gen, out, nil
}
