package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// compressible is a JSON-ish value of n bytes or so that S2 shrinks well.
func compressible(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"user-%d","active":true},`, i, i%10)
	}
	return b.String()
}

// rawEntry reads what Redis holds under key of c's KeyPrefix.
func rawEntry(t *testing.T, kp, key string) []byte {
	t.Helper()
	b, err := rawClient(t).Get(context.Background(), kp+":"+key).Bytes()
	if err != nil {
		t.Fatalf("raw GET %s: %v", key, err)
	}
	return b
}

func TestCompressAboveRoundTrip(t *testing.T) {
	kp := testPrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp, CompressAbove: 256})
	big, small := compressible(10<<10), "short value"
	mustSet(t, c, "big", big)
	mustSet(t, c, "small", small)
	if got := getString(t, c, "big"); got != big {
		t.Fatalf("big: got %d bytes, want %d", len(got), len(big))
	}
	if got := getString(t, c, "small"); got != small {
		t.Fatalf("small = %q", got)
	}
	rb, rs := rawEntry(t, kp, "big"), rawEntry(t, kp, "small")
	if rb[1] != 1|keyspace.FlagCompressed || len(rb) >= len(big)/2 {
		t.Errorf("big stored with version byte %#x, %d bytes for a %d-byte value: want compressed", rb[1], len(rb), len(big))
	}
	if rs[1] != 1 || !bytes.HasSuffix(rs, []byte(`"short value"`)) {
		t.Errorf("small stored as %q: want a plain entry", rs)
	}
}

func TestCompressAboveNegativeIsConfigError(t *testing.T) {
	_, err := cache.New(cache.Config{CompressAbove: -1})
	if err == nil || !strings.Contains(err.Error(), "CompressAbove") {
		t.Fatalf("New(CompressAbove: -1) err = %v, want an error naming CompressAbove", err)
	}
}

// Compressed and plain entries coexist: a cache without the option reads
// what one with it wrote, and the other way round.
func TestCompressReaderWithoutOption(t *testing.T) {
	kp := testPrefix(t)
	w := newCache(t, cache.Config{KeyPrefix: kp, CompressAbove: 64})
	r := newCache(t, cache.Config{KeyPrefix: kp})
	v := compressible(4 << 10)
	mustSet(t, w, "k", v)
	if raw := rawEntry(t, kp, "k"); raw[1]&keyspace.FlagCompressed == 0 {
		t.Fatal("writer did not compress")
	}
	if got := getString(t, r, "k"); got != v {
		t.Fatalf("reader without CompressAbove: got %d bytes, want %d", len(got), len(v))
	}
	mustSet(t, r, "plain", v)
	if got := getString(t, w, "plain"); got != v {
		t.Fatalf("compressing reader of a plain entry: got %d bytes, want %d", len(got), len(v))
	}
}

func TestCompressIncompressibleStoredPlain(t *testing.T) {
	kp := testPrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp, CompressAbove: 64})
	v := make([]byte, 8<<10)
	rand.Read(v)
	if err := c.Set(context.Background(), "rnd", v, time.Hour); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(v)
	raw := rawEntry(t, kp, "rnd")
	if raw[1] != 1 || !bytes.HasSuffix(raw, want) {
		t.Fatalf("incompressible value stored with version byte %#x (%d bytes): want the plain encoding", raw[1], len(raw))
	}
	var got []byte
	if ok, err := c.Get(context.Background(), "rnd", &got); !ok || err != nil || !bytes.Equal(got, v) {
		t.Fatalf("Get = %v, %v", ok, err)
	}
}

// A compressed entry that would expand beyond MaxDecompressedSize is refused
// like a foreign value: a miss counted as an error, nothing allocated.
func TestCompressBombRefused(t *testing.T) {
	kp := testPrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp})
	rc := rawClient(t)
	ctx := context.Background()
	// The prefix's current generation, from an entry the cache wrote.
	mustSet(t, c, "probe", "x")
	gen, _, err := keyspace.ParseEntry(rawEntry(t, kp, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	bomb := s2.Encode(nil, make([]byte, cache.MaxDecompressedSize+1))
	ok := s2.Encode(nil, []byte(`"fine"`))
	for key, z := range map[string][]byte{"bomb": bomb, "ok": ok} {
		b := keyspace.AppendEntryFlags(nil, gen, keyspace.FlagCompressed, z)
		if err := rc.Set(ctx, kp+":"+key, b, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if got := getString(t, c, "ok"); got != "fine" {
		t.Fatalf("hand-made compressed entry: got %q", got)
	}
	before := c.Stats().Errors
	var v string
	found, err := c.Get(ctx, "bomb", &v)
	if found || err != nil {
		t.Fatalf("Get of a bomb = %v, %v: want a miss", found, err)
	}
	if c.Stats().Errors != before+1 {
		t.Fatalf("errors %d -> %d: want the bomb counted", before, c.Stats().Errors)
	}
	if _, _, err := cache.DecodeEntry(keyspace.AppendEntryFlags(nil, 0, keyspace.FlagCompressed, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})); !errors.Is(err, keyspace.ErrForeignEntry) {
		t.Fatalf("header claiming 4 GiB: err = %v", err)
	}
}

func TestCompressNearCache(t *testing.T) {
	kp := testPrefix(t)
	c := newNearCache(t, cache.Config{KeyPrefix: kp, CompressAbove: 128})
	v := compressible(4 << 10)
	mustSet(t, c, "k", v)
	for i := range 3 {
		if got := getString(t, c, "k"); got != v {
			t.Fatalf("read %d: got %d bytes, want %d", i, len(got), len(v))
		}
	}
	if s := c.Stats(); s.LocalHits == 0 {
		t.Fatalf("no near-cache hit: %+v", s)
	}
}

// AutoPipeline and the write-back (GetOrLoad's compare-and-set) carry
// compressed entries like plain ones.
func TestCompressAutoPipelineAndWriteBack(t *testing.T) {
	kp := testPrefix(t)
	c := newCache(t, cache.Config{KeyPrefix: kp, CompressAbove: 128})
	ctx := context.Background()
	v := compressible(4 << 10)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i%4)
			got, err := cache.GetOrLoad(ctx, c, key, time.Hour, func(context.Context) (string, error) { return v, nil })
			if err != nil || got != v {
				t.Errorf("GetOrLoad %s: %d bytes, %v", key, len(got), err)
			}
		})
	}
	wg.Wait()
	for i := range 4 {
		key := fmt.Sprintf("k%d", i)
		if raw := rawEntry(t, kp, key); raw[1]&keyspace.FlagCompressed == 0 {
			t.Errorf("%s written back uncompressed", key)
		}
		if got := getString(t, c, key); got != v {
			t.Errorf("%s: got %d bytes", key, len(got))
		}
	}
}

// The purge after a generation bump keeps entries of the new generation,
// compressed ones too (UnlinkStaleLua reads their header).
func TestCompressedEntrySurvivesStalePurge(t *testing.T) {
	kp := testPrefix(t)
	rc := rawClient(t)
	ctx := context.Background()
	entries := map[string][]byte{
		kp + ":new-z": keyspace.AppendEntryFlags(nil, 5, keyspace.FlagCompressed, s2.Encode(nil, []byte(`"x"`))),
		kp + ":new-p": keyspace.AppendEntry(nil, 5, []byte(`"x"`)),
		kp + ":old-z": keyspace.AppendEntryFlags(nil, 1, keyspace.FlagCompressed, s2.Encode(nil, []byte(`"x"`))),
	}
	var keys []string
	for k, b := range entries {
		rc.Set(ctx, k, b, time.Hour)
		keys = append(keys, k)
	}
	n, err := rc.Eval(ctx, keyspace.UnlinkStaleLua, keys, 3).Int64()
	if err != nil || n != 1 {
		t.Fatalf("UnlinkStaleLua = %d, %v: want 1 (the old entry)", n, err)
	}
	if left, _ := rc.Exists(ctx, kp+":new-z", kp+":new-p").Result(); left != 2 {
		t.Fatalf("%d of the 2 current entries left", left)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(keyspace.AppendEntry(nil, 3, []byte(`"v"`)))
	f.Add(keyspace.AppendEntryFlags(nil, 3, keyspace.FlagCompressed, s2.Encode(nil, []byte(compressible(300)))))
	f.Add(keyspace.AppendEntryFlags(nil, 0, keyspace.FlagCompressed, []byte{0xff, 0xff, 0xff, 0x1f, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, p, err := cache.DecodeEntry(b)
		if err == nil && len(p) > cache.MaxDecompressedSize {
			t.Fatalf("decoded %d bytes", len(p))
		}
	})
}
