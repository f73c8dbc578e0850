package consistency_test

import (
	"testing"
	"time"
)

// The checker's own tests: hand-written histories (times in milliseconds)
// that it must refute, and ones it must accept because a concurrent call
// explains the read.

const ms = int64(time.Millisecond)

func write(proc int, op, key string, ver int64, start, end int64) Event {
	return Event{Proc: proc, Op: op, Key: key, Wrote: ver, SrcStart: start * ms, Start: start * ms, CacheStart: start * ms, End: end * ms, Floors: map[string]int64{key: ver}}
}

func get(proc int, key string, ver int64, start, end int64) Event {
	return Event{Proc: proc, Op: opGet, Key: key, Ver: ver, Found: true, Start: start * ms, End: end * ms}
}

func TestCheckerRefutes(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    []Event
		cc   checkConfig
		kind string
	}{
		{"read after a delete returns the old version", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opDelete, "k", 2, 2, 3),
			get(3, "k", 1, 4, 5),
		}, checkConfig{}, "stale"},
		{"read after a set returns the old version", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opSet, "k", 2, 2, 3),
			get(1, "k", 1, 4, 5),
		}, checkConfig{}, "stale"},
		{"a load's write-back lands after another process's invalidation", []Event{
			{Proc: 1, Op: opLoad, Key: "k", Ver: 0, Start: 0, End: 1 * ms},
			write(2, opIOW, "k", 1, 2, 3),
			get(3, "k", 0, 10, 11),
		}, checkConfig{}, "stale"},
		{"beyond a near-cache's bound", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opDelete, "k", 2, 2, 3),
			get(3, "k", 1, 3+1500, 3+1501),
		}, checkConfig{Bound: map[int]time.Duration{3: time.Second}}, "stale"},
		{"the bound is for other processes: read-your-writes", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opDelete, "k", 2, 2, 3),
			get(2, "k", 1, 4, 5),
		}, checkConfig{Bound: map[int]time.Duration{2: time.Second}}, "stale"},
		{"joining a load does not excuse within the invalidating process", []Event{
			{Proc: 1, Op: opLoad, Key: "k", Ver: 0, Start: 1 * ms, End: 2 * ms},
			{Proc: 1, Op: opGetOrLoad, Key: "k", Ver: 0, OwnLoad: true, Start: 0, End: 20 * ms},
			write(1, opDelete, "k", 1, 3, 4),
			{Proc: 1, Op: opGetOrLoad, Key: "k", Ver: 0, Start: 5 * ms, End: 20 * ms},
		}, checkConfig{}, "stale"},
		{"the generation bound does not cover a Delete", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opDelete, "k", 2, 2, 3),
			get(3, "k", 1, 4, 5),
		}, checkConfig{GenBound: time.Second}, "stale"},
		{"the generation bound is for other processes", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opIOW, "k", 2, 2, 3),
			get(2, "k", 1, 4, 5),
		}, checkConfig{GenBound: time.Second}, "stale"},
		{"beyond the generation bound", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opIOW, "k", 2, 2, 3),
			get(3, "k", 1, 3+1500, 3+1501),
		}, checkConfig{GenBound: time.Second}, "stale"},
		{"a version never written", []Event{
			write(1, opSet, "k", 1, 0, 1),
			get(2, "k", 7, 2, 3),
		}, checkConfig{}, "corrupt"},
		{"another key's version", []Event{
			write(1, opSet, "j", 1, 0, 1),
			get(2, "k", 1, 2, 3),
		}, checkConfig{}, "corrupt"},
		{"a version from the future", []Event{
			get(2, "k", 1, 0, 1),
			write(1, opSet, "k", 1, 2, 3),
		}, checkConfig{}, "corrupt"},
		{"a decode error", []Event{
			{Proc: 1, Op: opGet, Key: "k", Start: 0, End: 1, Err: "cache: decode", Corrupt: "cache: decode"},
		}, checkConfig{}, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs, _ := check(tc.h, tc.cc)
			if len(vs) != 1 || vs[0].Kind != tc.kind {
				t.Fatalf("got %v, want one %s violation", vs, tc.kind)
			}
		})
	}
}

func TestCheckerAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    []Event
		cc   checkConfig
	}{
		{"the read began before the delete completed", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opDelete, "k", 2, 2, 5),
			get(3, "k", 1, 4, 6),
		}, checkConfig{}},
		{"a Set of the old version overlapped the delete", []Event{
			write(1, opSet, "k", 1, 0, 10),
			write(2, opDelete, "k", 2, 2, 3),
			get(3, "k", 1, 11, 12),
		}, checkConfig{}},
		{"a Set of the old version failed: it may land late", []Event{
			func() Event { e := write(1, opSet, "k", 1, 0, 1); e.Err = "timeout"; return e }(),
			write(2, opDelete, "k", 2, 2, 3),
			get(3, "k", 1, 100, 101),
		}, checkConfig{}},
		{"a load's write-back racing a plain Set", []Event{
			{Proc: 1, Op: opLoad, Key: "k", Ver: 0, Start: 0, End: 1 * ms},
			write(2, opSet, "k", 1, 2, 3),
			get(3, "k", 0, 10, 11),
		}, checkConfig{}},
		{"a load's write-back racing a Delete, told Delete does not fence", []Event{
			{Proc: 1, Op: opLoad, Key: "k", Ver: 0, Start: 0, End: 1 * ms},
			write(2, opDelete, "k", 1, 2, 3),
			get(3, "k", 0, 10, 11),
		}, checkConfig{DeleteDoesNotFence: true}},
		{"within a near-cache's bound", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opDelete, "k", 2, 2, 3),
			get(3, "k", 1, 3+900, 3+901),
		}, checkConfig{Bound: map[int]time.Duration{3: time.Second}}},
		{"joined a load of its process begun before another's invalidation", []Event{
			{Proc: 1, Op: opLoad, Key: "k", Ver: 0, Start: 1 * ms, End: 2 * ms},
			{Proc: 1, Op: opGetOrLoad, Key: "k", Ver: 0, OwnLoad: true, Start: 0, End: 20 * ms},
			write(2, opDelete, "k", 1, 3, 4),
			{Proc: 1, Op: opGetOrLoad, Key: "k", Ver: 0, Start: 5 * ms, End: 20 * ms},
		}, checkConfig{}},
		{"another process's InvalidateOnWrite within the generation bound", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opIOW, "k", 2, 2, 3),
			get(3, "k", 1, 4, 5),
		}, checkConfig{GenBound: time.Second}},
		{"another process's Invalidate of a prefix within the generation bound", []Event{
			write(1, opSet, "k", 1, 0, 1),
			func() Event { e := write(2, opInvalidate, "k", 2, 2, 3); e.Pattern = "p:*"; return e }(),
			get(3, "k", 1, 4, 5),
		}, checkConfig{GenBound: time.Second}},
		{"an InvalidateOnWrite during a fault promises nothing", []Event{
			write(1, opSet, "k", 1, 0, 1),
			write(2, opIOW, "k", 2, 2, 3),
			{Proc: -1, Op: opFault, Fault: faultKillPool, Start: 2 * ms, End: 2 * ms},
			get(3, "k", 1, 4, 5),
		}, checkConfig{}},
		{"a failed delete promises nothing", []Event{
			write(1, opSet, "k", 1, 0, 1),
			func() Event { e := write(2, opDelete, "k", 2, 2, 3); e.Err = "timeout"; return e }(),
			get(3, "k", 1, 4, 5),
		}, checkConfig{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if vs, _ := check(tc.h, tc.cc); len(vs) != 0 {
				t.Fatalf("got %v, want none", vs)
			}
		})
	}
}
