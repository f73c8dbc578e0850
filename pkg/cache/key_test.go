package cache_test

import (
	"testing"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// Equal values give equal keys whatever pointers hold them: the key of a
// value must not depend on where it sits in memory.
func TestGenerateKeyPointers(t *testing.T) {
	t.Parallel()
	type unencodable struct { // the func field sends it past encoding/json
		F func()
		P *int
		Q **string
	}
	type node struct {
		V    int
		Next *node
		F    func()
	}
	type edge struct{ From, To *node }
	ip := func(v int) *int { return &v }
	sp := func(v string) *string { return &v }
	spp := func(v string) **string { p := sp(v); return &p }

	// Each row builds the same value twice, from distinct allocations.
	for _, tc := range []struct {
		name  string
		build func() any
	}{
		{"pointer field", func() any { return unencodable{P: ip(1)} }},
		{"pointer to pointer", func() any { return unencodable{Q: spp("x")} }},
		{"pointer to unencodable", func() any { return &unencodable{P: ip(2)} }},
		{"pointer map keys", func() any { return map[*string]int{sp("a"): 1, sp("b"): 2} }},
		{"pointer map keys to equal values", func() any { return map[*string]int{sp("x"): 1, sp("x"): 2, sp("x"): 3} }},
		{"pointer map keys, nested", func() any { return map[string]any{"m": map[*int]string{ip(1): "a", ip(2): "b"}, "f": func() {}} }},
		{"pointers in a slice", func() any { return []any{ip(1), sp("x"), make(chan int)} }},
		{"pointers in a map", func() any { return map[string]any{"a": ip(1), "c": make(chan int)} }},
		{"nested nodes", func() any { return &node{V: 1, Next: &node{V: 2}} }},
		{"shared pointer", func() any { n := &node{V: 3}; return edge{n, n} }},
		{"complex", func() any { return []any{complex(1, 2), ip(3)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := cache.GenerateKey("p", map[string]any{"q": tc.build()})
			for range 20 { // map iteration order varies from call to call
				if b := cache.GenerateKey("p", map[string]any{"q": tc.build()}); a != b {
					t.Fatalf("equal values, different keys: %s and %s", a, b)
				}
			}
		})
	}

	// Different values still differ, and nil differs from a zero value.
	distinct := []any{
		unencodable{},
		unencodable{P: ip(0)},
		unencodable{P: ip(1)},
		unencodable{Q: spp("")},
		unencodable{Q: new(*string)},
		&unencodable{},
		(*unencodable)(nil),
		map[*string]int{sp("a"): 1},
		map[*string]int{sp("a"): 2},
		map[*string]int{sp("b"): 1},
		map[*string]int{nil: 1},
		&node{V: 1},
		&node{V: 1, Next: &node{V: 1}},
		edge{&node{V: 1}, nil},
		edge{nil, &node{V: 1}},
		[]any{ip(1), make(chan int)},
		[]any{ip(2), make(chan int)},
		[]any{(*int)(nil), make(chan int)},
	}
	seen := map[string]int{}
	for i, v := range distinct {
		k := cache.GenerateKey("p", map[string]any{"q": v})
		if j, dup := seen[k]; dup {
			t.Errorf("values #%d %#v and #%d %#v share key %s", j, distinct[j], i, v, k)
		}
		seen[k] = i
	}
}

// A cyclic value neither hangs nor crashes GenerateKey, and two cycles of
// the same shape and values share a key.
func TestGenerateKeyCycles(t *testing.T) {
	t.Parallel()
	type node struct {
		V    int
		Next *node
	}
	ring := func(vs ...int) *node {
		nodes := make([]*node, len(vs))
		for i, v := range vs {
			nodes[i] = &node{V: v}
		}
		for i := range nodes {
			nodes[i].Next = nodes[(i+1)%len(nodes)]
		}
		return nodes[0]
	}
	selfSlice := func(v int) []any { s := []any{v, nil}; s[1] = s; return s }
	selfMap := func(v int) map[string]any { m := map[string]any{"v": v}; m["m"] = m; return m }
	for _, tc := range []struct {
		name  string
		build func(v int) any
	}{
		{"pointer ring", func(v int) any { return ring(v, 2, 3) }},
		{"self loop", func(v int) any { return ring(v) }},
		{"slice holding itself", func(v int) any { return selfSlice(v) }},
		{"map holding itself", func(v int) any { return selfMap(v) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := cache.GenerateKey("p", map[string]any{"q": tc.build(1)})
			b := cache.GenerateKey("p", map[string]any{"q": tc.build(1)})
			c := cache.GenerateKey("p", map[string]any{"q": tc.build(7)})
			if a != b {
				t.Errorf("equal cyclic values, different keys: %s and %s", a, b)
			}
			if a == c {
				t.Errorf("cyclic values that differ share key %s", a)
			}
		})
	}
}
