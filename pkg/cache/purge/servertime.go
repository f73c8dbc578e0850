package purge

import (
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// serverClock measures what the purge's round trips cost the Redis server
// itself, from INFO commandstats: the microseconds Redis spent running the
// purge's SCANs and deletes, which is how long it kept its other clients
// waiting. The client's round trip would also count the network, the
// client's own work and, on a machine whose cores are shared, the time the
// client waited for a core; read as a busy server, that shrinks the pages
// for nothing. The round trip remains the measure when the server refuses
// INFO (an ACL without it) or when the counts show that other clients ran
// the same commands meanwhile, which would be charged to the purge.
type serverClock struct {
	off bool // INFO commandstats refused: the round trip is the measure
	// del is the commandstats line of the purge's delete command:
	// "cmdstat_unlink", or "cmdstat_eval" with Options.Keep (the script's
	// own UNLINKs run inside the EVAL, whose time includes them).
	del string
	// delInRound means deletes share the SCAN's round trip (no limiter), so
	// their time counts towards it; a limited purge sends them apart.
	delInRound bool

	have       bool     // last is a sample
	last       cmdStats // at the previous sample
	scans      int64    // SCANs sent since then
	dels       int64    // delete commands sent since then (in rounds)
	rounds     int64    // round trips carrying a SCAN since then
	sinceCheck int      // pages since the last INFO
}

// cmdStats are the calls and microseconds of the SCAN and delete lines.
type cmdStats struct {
	scanCalls, scanUsec int64
	delCalls, delUsec   int64
}

// sampleEvery is how many pages share one INFO commandstats (the first page
// always has one); COUNT moves only on a sample, by the average server time
// of the pages since the previous one. INFO costs the server some tens of
// microseconds and the client the parse of two lines (BenchmarkInfoCost):
// on every page, that measured as a purge about a tenth slower than a plain
// SCAN COUNT 1000 loop on one server (make bench); every fourth page keeps
// the engine ahead of it, at the price of reacting to a dense region up to
// three pages later.
const sampleEvery = 4

func newServerClock(opt Options, limited bool) *serverClock {
	s := &serverClock{del: "cmdstat_unlink", delInRound: !limited}
	if opt.Keep != nil {
		s.del = "cmdstat_eval"
	}
	return s
}

// wantInfo says whether this round trip's pipeline ends with an INFO.
func (s *serverClock) wantInfo() bool {
	return !s.off && (!s.have || s.sinceCheck+1 >= sampleEvery)
}

// sent records a round trip carrying a SCAN and dels delete commands.
func (s *serverClock) sent(dels int) {
	s.scans++
	s.rounds++
	if s.delInRound {
		s.dels += int64(dels)
	}
	s.sinceCheck++
}

// sample takes the INFO text that ended a round trip and returns the server
// time per round trip since the previous sample; ok is false when there is
// none to trust (the first sample, a text without the counts, other clients'
// SCANs or deletes mixed in, statistics reset meanwhile).
func (s *serverClock) sample(info string) (perRound time.Duration, ok bool) {
	cur := parseCmdStats(info, s.del)
	prev, had := s.last, s.have
	scans, dels, rounds := s.scans, s.dels, s.rounds
	s.last, s.have = cur, true
	s.scans, s.dels, s.rounds, s.sinceCheck = 0, 0, 0, 0
	if !had || rounds == 0 {
		return 0, false
	}
	if cur.scanCalls-prev.scanCalls != scans {
		return 0, false
	}
	usec := cur.scanUsec - prev.scanUsec
	if s.delInRound {
		if cur.delCalls-prev.delCalls != dels {
			return 0, false
		}
		usec += cur.delUsec - prev.delUsec
	}
	if usec < 0 {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond / time.Duration(rounds), true
}

// parseCmdStats reads the calls and usec fields of cmdstat_scan and of del
// out of INFO commandstats; a command never run has no line, so zero.
func parseCmdStats(info, del string) cmdStats {
	var st cmdStats
	st.scanCalls, st.scanUsec = cmdStat(info, "cmdstat_scan")
	st.delCalls, st.delUsec = cmdStat(info, del)
	return st
}

// cmdStat finds "name:calls=N,usec=M,..." and returns N and M.
func cmdStat(info, name string) (calls, usec int64) {
	i := strings.Index(info, name+":")
	if i < 0 || (i > 0 && info[i-1] != '\n') {
		return 0, 0
	}
	line := info[i+len(name)+1:]
	if j := strings.IndexByte(line, '\r'); j >= 0 {
		line = line[:j]
	} else if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	for line != "" {
		var field string
		field, line, _ = strings.Cut(line, ",")
		k, v, _ := strings.Cut(field, "=")
		switch k {
		case "calls":
			calls, _ = strconv.ParseInt(v, 10, 64)
		case "usec":
			usec, _ = strconv.ParseInt(v, 10, 64)
			return calls, usec // calls comes first
		}
	}
	return calls, usec
}

// steer returns the COUNT after a round trip that carried a SCAN and dels
// delete commands and took rtt on the client: steered by the server's time
// when an INFO (after) gives a trustworthy one, by rtt when it cannot, and
// left alone on the pages between samples.
func (s *serverClock) steer(count int64, rtt, budget time.Duration, before, after *redis.StringCmd, dels int) int64 {
	if s.off {
		return nextCount(count, rtt, budget)
	}
	if before != nil {
		s.sample(before.Val())
	}
	s.sent(dels)
	if after == nil {
		return count
	}
	if t, ok := s.sample(after.Val()); ok {
		return nextCount(count, t, budget)
	}
	return nextCount(count, rtt, budget)
}

// infoOnly says whether err, a pipeline's first failure, is one of the INFO
// commands' (the server refusing it) while every other command succeeded:
// go-redis reports a pipeline's commands in order, so if an INFO failed and
// err is its error, nothing before it failed; the commands after the leading
// INFO are checked by the caller as usual.
func infoOnly(err error, infos ...*redis.StringCmd) bool {
	for _, c := range infos {
		if c != nil && c.Err() != nil && c.Err() == err {
			return true
		}
	}
	return false
}
