package e2e_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// TestMeasureInvalidationVisibility measures, for 10k, 100k and 1M keys, how
// long after a token edit (and after the controller starts the run) a reader
// stops seeing old values, against how long the SCAN takes to delete the
// keys. It runs only with -e2e.measure or CACHEPLANE_MEASURE=1: the million
// keys take a while to write and delete.
//
// The manager runs with its production RunSlice (5s) and no
// maxKeysPerSecond, so the SCAN time is the fastest a run can go.
func TestMeasureInvalidationVisibility(t *testing.T) {
	if !measuring() {
		t.Skip("set -e2e.measure or CACHEPLANE_MEASURE=1 to measure (writes and deletes 1M keys)")
	}
	dumpLogsOnFailure(t)
	ns := namespace(t)
	const kp, db = "e2e-measure", 2
	applySample(t, ns, kp, db, nil)
	writer := newCache(t, kp, db, func(c *cache.Config) { c.StatsFlushInterval = -1 })
	reader := newCache(t, kp, db, func(c *cache.Config) { c.StatsFlushInterval = -1 })

	header := []string{"keys", "kubectl patch", "edit -> run start", "run start -> miss", "edit -> miss", "SCAN (run start -> 0 keys)", "controller's run time"}
	table := [][]string{header}
	for i, n := range []int{10_000, 100_000, 1_000_000} {
		r := invalidate(t, ns, kp, db, writer, reader, n, fmt.Sprintf("m%d", i+2))
		if r.existingAtMiss == 0 && r.scan > time.Second {
			t.Errorf("%d keys: no sentinel left in Redis at the first miss of a %v SCAN", n, r.scan)
		}
		if r.foundAtMiss != 0 {
			t.Errorf("%d keys: %d old values still served after the first miss", n, r.foundAtMiss)
		}
		if r.bumpToMiss > 100*time.Millisecond {
			t.Errorf("%d keys: reader saw the invalidation %v after the run started, want < 100ms", n, r.bumpToMiss)
		}
		// The message ends with the run's duration: "deleted N keys in 1.234s".
		took := r.message[strings.LastIndex(r.message, " ")+1:]
		table = append(table, []string{strconv.Itoa(n + sentinels), ms(r.kubectlRun), ms(r.editToBump), ms(r.bumpToMiss), ms(r.editToMiss), ms(r.scan), took})
	}
	width := make([]int, len(header))
	for _, row := range table {
		for j, cell := range row {
			width[j] = max(width[j], len(cell))
		}
	}
	var b strings.Builder
	for i, row := range table {
		b.WriteString("|")
		for j, cell := range row {
			fmt.Fprintf(&b, " %*s |", width[j], cell)
		}
		b.WriteString("\n")
		if i == 0 {
			b.WriteString("|")
			for _, w := range width {
				b.WriteString(strings.Repeat("-", w+1) + ":|")
			}
			b.WriteString("\n")
		}
	}
	t.Logf("invalidation visibility vs SCAN; a reader polls one old key every ~1ms; \"edit\" is the start of `kubectl patch`, \"run start\" the generation bump the controller publishes:\n%s", b.String())
}

func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}
