package consistency_test

import (
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// mono reads CLOCK_MONOTONIC in nanoseconds. The history mixes events of
// this process and of re-executed worker processes, so every event is
// stamped where it happens with a clock all processes of one boot share.
// (time.Now's monotonic reading is relative to each process's start, so it
// cannot be compared across processes; stamping in the parent on receipt
// would blur the order by the pipe's latency, in the direction that hides
// violations.)
func mono() int64 {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		panic("clock_gettime(CLOCK_MONOTONIC): " + errno.Error())
	}
	return ts.Nano()
}

// Operation kinds in the history.
const (
	opGet        = "get"        // Cache.Get
	opGetOrLoad  = "getorload"  // cache.GetOrLoad
	opLoad       = "load"       // one call of a GetOrLoad loader: a read of the source
	opSet        = "set"        // write-through: source write, then Cache.Set of the new version
	opDelete     = "delete"     // optional source write, then Cache.Delete of the key
	opInvalidate = "invalidate" // Cache.Invalidate of one key or of a whole prefix
	opIOW        = "iow"        // cache.InvalidateOnWrite: source write, then the prefix is invalidated
	opFault      = "fault"      // an injected fault (Proc -1: the server; else that process's network)
)

// Event is one entry of the history. Times are mono() nanoseconds.
type Event struct {
	Proc int    `json:"p"`
	Gor  int    `json:"g,omitempty"`
	Op   string `json:"op"`
	Key  string `json:"k,omitempty"`

	// Start and End enclose the whole call (for writes, the source write
	// too). CacheStart is when the cache call of a write or invalidation
	// began, after the source was written and the floors were read.
	Start      int64 `json:"s"`
	End        int64 `json:"e"`
	CacheStart int64 `json:"cs,omitempty"`
	// SrcStart is when the source write that produced Wrote began.
	SrcStart int64 `json:"ss,omitempty"`

	// Ver is the version a read returned (get with Found, getorload, load).
	Ver   int64 `json:"v,omitempty"`
	Found bool  `json:"f,omitempty"`
	// OwnLoad reports that this GetOrLoad ran its own loader (its result
	// was read from the source by this call).
	OwnLoad bool `json:"ol,omitempty"`
	// Wrote is the version this call committed to the source (0: none).
	Wrote int64 `json:"w,omitempty"`
	// Floors are, for a write or invalidation, the versions its keys had in
	// the source when its cache call began: once it has completed, a read
	// of such a key must return at least that version.
	Floors map[string]int64 `json:"fl,omitempty"`
	// Pattern is what an Invalidate was given, or InvalidateOnWrite's prefix.
	Pattern string `json:"pat,omitempty"`

	// Err is the call's error; Corrupt says why a read's result cannot be a
	// version of its key at all (a decode error, another key's value).
	Err     string `json:"err,omitempty"`
	Corrupt string `json:"bad,omitempty"`
	// Fault is the kind of an opFault event.
	Fault string `json:"fault,omitempty"`
}

// isOp reports whether e is a call of the API (loads and faults are not).
func (e *Event) isOp() bool { return e.Op != opLoad && e.Op != opFault }

// recorder collects the history of one run.
type recorder struct {
	mu     sync.Mutex
	events []Event
	ops    atomic.Int64 // API calls recorded so far
}

func (r *recorder) add(e Event) {
	if e.isOp() {
		r.ops.Add(1)
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) history() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}
