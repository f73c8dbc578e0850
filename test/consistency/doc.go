// Package consistency holds pkg/cache's consistency checker: several cache
// processes (Cache instances in the test binary and at least one re-executed
// copy of it) run random Get, Set, Delete, GetOrLoad, Invalidate and
// InvalidateOnWrite calls on a small key set with versioned values, while
// faults are injected (tracking connections killed, pool connections killed,
// one process's network stalled, redis-server restarted with its data lost or
// kept). Every call is recorded in a history; the checker then asserts that
// no read returned a version older than one whose write or invalidation had
// completed before the read began (beyond a stated staleness bound), and that
// no read returned a version nobody wrote. There is no non-test code here.
//
// Run it with the rest of the tests (make test), or alone, and reproduce a
// failure with the seed it prints:
//
//	go test -race -run TestConsistency ./test/consistency/
//	go test -race -run 'TestConsistency/processes/plain' ./test/consistency/ -args -seed=42
//
// The soak runs only when asked for, and reports what it survived:
//
//	CACHEPLANE_SOAK=5m go test -race -v -timeout 30m -run TestConsistencySoak ./test/consistency/
//	go test -race -v -timeout 30m -run TestConsistencySoak ./test/consistency/ -args -soak=5m
package consistency
