package nearstore

import (
	"fmt"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
)

func fillStore(s *Store, key string, payload []byte) bool {
	token := uint64(len(key))<<32 + uint64(len(payload)) + 1
	if !s.Reserve(key, token) {
		return false
	}
	return s.Fill(key, token, payload, 0, mono.Now()+int64(1<<62), func() bool { return true })
}

// The reason for S3-FIFO over LRU: a scan of keys read once does not push out
// the entries that are read again and again. With LRU, 1000 one-off keys
// through a 100-entry cache would leave none of the hot ones.
func TestNearStoreScanResistance(t *testing.T) {
	s := New(100, 1<<20)
	hot := make([]string, 50)
	for i := range hot {
		hot[i] = fmt.Sprint("hot:", i)
		fillStore(s, hot[i], []byte("h"))
	}
	for round := range 1000 {
		// Every 20 one-off keys, the working set is read once more (and
		// not re-filled: what is gone stays gone).
		if round%20 == 0 {
			for _, k := range hot {
				s.Get(k)
			}
		}
		fillStore(s, fmt.Sprint("scan:", round), []byte("s"))
	}
	kept := 0
	for _, k := range hot {
		if s.Get(k) != nil {
			kept++
		}
	}
	if kept < 45 {
		t.Errorf("only %d of 50 hot keys survived a scan of 1000 one-off keys", kept)
	}
	if n, _ := s.Size(); n > 100 {
		t.Errorf("store holds %d entries, bound 100", n)
	}
}

// An invalidation between reserve and fill voids the fill: the read may have
// seen the value from before the write.
func TestNearStoreInvalidationVoidsReservation(t *testing.T) {
	s := New(100, 1<<20)
	if !s.Reserve("k", 7) {
		t.Fatal("reserve failed")
	}
	if s.Reserve("k", 8) {
		t.Error("second reservation of a key in flight succeeded")
	}
	s.Invalidate("k")
	if s.Fill("k", 7, []byte("old"), 0, mono.Now()+1e12, func() bool { return true }) {
		t.Error("fill after invalidation succeeded")
	}
	if s.Get("k") != nil {
		t.Error("invalidated read was published")
	}
	// A flush voids it too.
	s.Reserve("k", 9)
	s.Clear()
	if s.Fill("k", 9, []byte("old"), 0, mono.Now()+1e12, func() bool { return true }) {
		t.Error("fill after clear succeeded")
	}
	// And so does a failed validity check (an epoch change).
	s.Reserve("k", 10)
	if s.Fill("k", 10, []byte("v"), 0, mono.Now()+1e12, func() bool { return false }) {
		t.Error("fill with a stale epoch succeeded")
	}
}

func TestNearStoreShardedBounds(t *testing.T) {
	s := New(2000, 2<<20)
	if len(s.shards) != 16 {
		t.Fatalf("%d shards, want 16", len(s.shards))
	}
	total, bytes := 0, int64(0)
	for i := range s.shards {
		total += s.shards[i].maxEntries
		bytes += s.shards[i].maxBytes
	}
	if total != 2000 || bytes != 2<<20 {
		t.Errorf("shard bounds add up to %d entries, %d bytes", total, bytes)
	}
	for i := range 10_000 {
		fillStore(s, fmt.Sprint("k", i), make([]byte, 100))
	}
	if n, b := s.Size(); n > 2000 || b > 2<<20 || n < 1500 {
		t.Errorf("store holds %d entries, %d bytes", n, b)
	}
}
