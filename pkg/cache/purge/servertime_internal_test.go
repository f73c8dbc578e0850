package purge

import (
	"strconv"
	"testing"
	"time"
)

func stats(scanCalls, scanUsec, delCalls, delUsec int) string {
	return "# Commandstats\r\n" +
		"cmdstat_hscan:calls=9,usec=999,usec_per_call=111.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_scan:calls=" + itoa(scanCalls) + ",usec=" + itoa(scanUsec) + ",usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_unlink:calls=" + itoa(delCalls) + ",usec=" + itoa(delUsec) + ",usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
}

func itoa(n int) string { return strconv.Itoa(n) }

// The server's clock charges the purge the SCAN and UNLINK time between two
// samples, per round trip, and distrusts a sample whose call counts show
// other clients' SCANs or UNLINKs (or a reset) in between.
func TestServerClockSample(t *testing.T) {
	s := newServerClock(Options{}, false)
	if _, ok := s.sample(stats(10, 100, 5, 50)); ok {
		t.Fatal("first sample, a baseline, gave a time")
	}
	s.sent(1)
	s.sent(1)
	got, ok := s.sample(stats(12, 1100, 7, 1050))
	if !ok || got != time.Millisecond {
		t.Fatalf("two round trips of 2000 µs in all = %v, %v; want 1ms a round trip", got, ok)
	}
	s.sent(1)
	if _, ok := s.sample(stats(14, 1200, 8, 1060)); ok {
		t.Error("a sample with another client's SCAN gave a time")
	}
	s.sent(1)
	if _, ok := s.sample(stats(15, 1300, 10, 1070)); ok {
		t.Error("a sample with another client's UNLINK gave a time")
	}
	s.sent(0)
	if _, ok := s.sample(stats(1, 10, 0, 0)); ok {
		t.Error("a sample after CONFIG RESETSTAT gave a time")
	}
	s.sent(0)
	if got, ok := s.sample(stats(2, 30, 0, 0)); !ok || got != 20*time.Microsecond {
		t.Errorf("SCAN alone = %v, %v; want 20µs", got, ok)
	}

	// A limited purge sends its UNLINKs apart: only the SCAN counts.
	l := newServerClock(Options{}, true)
	l.sample(stats(0, 0, 0, 0))
	l.sent(1)
	if got, ok := l.sample(stats(1, 300, 40, 9000)); !ok || got != 300*time.Microsecond {
		t.Errorf("limited purge = %v, %v; want 300µs, the SCAN's", got, ok)
	}
}

func TestCmdStat(t *testing.T) {
	info := stats(3, 40, 5, 60)
	if c, u := cmdStat(info, "cmdstat_scan"); c != 3 || u != 40 {
		t.Errorf("scan = %d, %d", c, u)
	}
	if c, u := cmdStat(info, "cmdstat_eval"); c != 0 || u != 0 {
		t.Errorf("absent eval = %d, %d", c, u)
	}
}
