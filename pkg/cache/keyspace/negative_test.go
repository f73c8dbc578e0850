package keyspace

import (
	"errors"
	"testing"
)

func TestNegativeEntry(t *testing.T) {
	b := AppendNegative(nil, 300)
	gen, payload, err := ParseEntry(b)
	if !errors.Is(err, ErrNegative) || gen != 300 || payload != nil {
		t.Fatalf("ParseEntry(negative) = %d, %q, %v; want 300, nil, ErrNegative", gen, payload, err)
	}
	if _, _, err := ParseEntry(AppendTombstone(nil, 1)); !errors.Is(err, ErrTombstone) {
		t.Fatalf("tombstone: %v", err)
	}
	if FlagNegative&flagTombstone != 0 || FlagNegative&entryVersion != 0 || (FlagNegative<<1)&(flagTombstone|entryVersion) != 0 {
		t.Fatal("FlagNegative (or the next flag) overlaps the version or the tombstone")
	}
}
