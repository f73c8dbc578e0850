package consistency_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	seedFlag = flag.Uint64("seed", 0, "Seed of the operations and faults (0: from the clock, or CACHEPLANE_SEED). A failure prints the seed that reproduces it.")
	soakFlag = flag.Duration("soak", 0, "Run TestConsistencySoak for this long (or set CACHEPLANE_SOAK, e.g. 5m); 0 skips it.")
	// nearBound is the staleness a near-cache may show for another
	// process's write: the silence lease after which a stalled tracking
	// channel stops serving from memory (issue 9: at most 1s at defaults),
	// plus room for scheduling on a loaded machine.
	nearBound = flag.Duration("near-bound", 1250*time.Millisecond, "Staleness allowed to a near-cache for other processes' writes and invalidations.")
	// remoteBound is the staleness allowed to reads from Redis for other
	// processes' generation bumps (InvalidateOnWrite, Invalidate "p:*"):
	// they reach other processes over the events channel, within its
	// delivery delay when healthy (well under a millisecond) and within
	// Config.EventsLease (1s at defaults) whatever the channel does
	// (docs/generations.md), plus room for scheduling on a loaded machine.
	// Sets, Deletes and single-key Invalidates change the key in Redis
	// itself and get no bound for reads from Redis; nor does any read of
	// the invalidating process.
	remoteBound = flag.Duration("remote-bound", 1250*time.Millisecond, "Staleness allowed to reads from Redis for other processes' generation bumps (InvalidateOnWrite, Invalidate of a whole prefix).")
	// deleteFences makes Delete fence loads like Invalidate does: a
	// write-back whose load began before another process's Delete of the
	// key never lands after it. pkg/cache's GetOrLoad promises it within a
	// process; issue 9 item 3 asks it across processes for "an
	// invalidation of that key".
	deleteFences = flag.Bool("delete-fences", true, "Treat Delete as fencing GetOrLoad write-backs of other processes, as Invalidate and InvalidateOnWrite do.")
)

func TestMain(m *testing.M) {
	// go-redis logs every refused dial; the faults cause them on purpose.
	redis.SetLogger(quietLogger{})
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// seed returns the run's seed: -seed, CACHEPLANE_SEED or the clock.
func seed(t *testing.T) uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if s := os.Getenv("CACHEPLANE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CACHEPLANE_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// soakDuration returns how long the soak runs: -soak or CACHEPLANE_SOAK.
func soakDuration(t *testing.T) time.Duration {
	if *soakFlag != 0 {
		return *soakFlag
	}
	if s := os.Getenv("CACHEPLANE_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CACHEPLANE_SOAK=%q: %v", s, err)
		}
		return d
	}
	return 0
}

// reproduce is the command that reruns test name with seed.
func reproduce(name string, seed uint64) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return fmt.Sprintf("go test -race -run '%s' ./test/consistency/ -args -seed=%d", strings.Join(parts, "/"), seed)
}
