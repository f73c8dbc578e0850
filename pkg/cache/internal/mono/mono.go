// Package mono is the clock the cache's engines share: monotonic nanoseconds
// since the process started. time.Since reads the monotonic clock, so a wall
// clock step can neither extend an entry's life nor a lease; and one int64 is
// cheap to store in atomics and compare on the read path.
package mono

import "time"

var base = time.Now()

// Now returns the nanoseconds elapsed since the process started.
func Now() int64 { return int64(time.Since(base)) }
