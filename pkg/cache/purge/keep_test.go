package purge_test

import (
	"context"
	"slices"
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
)

// Keep spares tombstones and entries of the kept generation or later,
// whatever flags their header carries (negative entries included).
func TestPurgeKeepsFlaggedEntries(t *testing.T) {
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	for k, v := range map[string][]byte{
		"keep:new":     keyspace.AppendEntry(nil, 5, []byte(`"v"`)),
		"keep:newneg":  keyspace.AppendNegative(nil, 5),
		"keep:tomb":    keyspace.AppendTombstone(nil, 1),
		"keep:old":     keyspace.AppendEntry(nil, 4, []byte(`"v"`)),
		"keep:oldneg":  keyspace.AppendNegative(nil, 4),
		"keep:foreign": []byte("plain"),
	} {
		if err := c.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	keep := int64(5)
	if _, err := purge.All(ctx, c, "keep:*", purge.Options{Keep: &keep}); err != nil {
		t.Fatal(err)
	}
	left, err := c.Keys(ctx, "keep:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(left)
	if want := []string{"keep:new", "keep:newneg", "keep:tomb"}; !slices.Equal(left, want) {
		t.Errorf("left %v; want %v", left, want)
	}
}
