package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// report collects one run's measurements and renders them.
type report struct {
	rounds       int
	benchtime    time.Duration
	took         time.Duration
	redisVersion string

	ops       map[string]map[int]map[string]measurement // op -> callers -> library
	local     map[int]map[string]measurement            // callers -> tier
	purge     map[string]purgeResult
	latency   []latency
	rateLimit int64
	purgeKeys int64
	batch     *batchResult // batch.go
	// clusterPurge is the detail section of the cluster purge (purge_cluster.go).
	clusterPurge string

	rows []row
}

// row is one line of the table of ratios.
type row struct {
	what    string
	callers string
	ours    string
	peer    string
	ratio   float64 // ours / peer for times; ours / peer for keys/s too
	target  string
	met     string  // "yes", "no" or "" (no target)
	speedup float64 // for the chart: > 1 means pkg/cache is faster; 0: not charted
}

func newRawClient(s *server) *redis.Client { return redis.NewClient(&redis.Options{Addr: s.addr()}) }

func (r *report) opRows() []row {
	var rows []row
	peers := []struct{ lib, label string }{
		{"go-redis", "raw go-redis"},
		{"go-redis/cache", "go-redis/cache"},
		{"rueidis", "rueidis"},
	}
	for _, op := range opNames {
		for _, n := range callerCounts {
			m := r.ops[op][n]
			for _, ours := range []string{pkgDefaults, pkgPrevious} {
				for _, p := range peers {
					if ours != pkgDefaults && p.lib == "go-redis/cache" && op != "GetOrLoad hit" {
						continue // same client underneath as raw go-redis
					}
					o, theirs := m[ours].nsPerOp, m[p.lib].nsPerOp
					subject := "remote " + op
					if ours != pkgDefaults {
						subject += " (no coalescing, no autopipeline)"
					}
					rw := row{
						what:    fmt.Sprintf("%s vs %s", subject, p.label),
						callers: fmt.Sprint(n),
						ours:    fmtNs(o), peer: fmtNs(theirs),
						ratio: o / theirs, speedup: theirs / o,
					}
					if op == "hit" && p.lib == "go-redis" {
						rw.what = subject + " vs raw go-redis GET + decode"
					}
					// The defaults' targets (issue 13).
					if ours == pkgDefaults {
						switch {
						case op == "hit" && p.lib == "go-redis":
							rw.target, rw.met = "≤ 1.10x", yesNo(rw.ratio <= 1.10)
						case n > 1 && (op == "hit" && p.lib == "rueidis" || op == "GetOrLoad hit" && p.lib == "go-redis/cache"):
							rw.target, rw.met = "≤ 1.00x", yesNo(rw.ratio <= 1.00)
						}
					}
					rows = append(rows, rw)
				}
			}
		}
	}
	for _, n := range callerCounts {
		m := r.local[n]
		ours := m["pkg/cache near-cache"].nsPerOp
		for _, p := range []struct{ name, label, target string }{
			{"pkg/cache remote", "pkg/cache remote hit", ""},
			{"rueidis client-side cache", "rueidis client-side cache hit", "≤ 1.00x"},
			{"go-redis/cache TinyLFU", "go-redis/cache TinyLFU hit", "≤ 1.00x"},
		} {
			theirs := m[p.name].nsPerOp
			rw := row{
				what: "near-cache hit vs " + p.label, callers: fmt.Sprint(n),
				ours: fmtNs(ours), peer: fmtNs(theirs),
				ratio: ours / theirs, speedup: theirs / ours, target: p.target,
			}
			if p.target != "" {
				rw.met = yesNo(rw.ratio <= 1.0)
			}
			rows = append(rows, rw)
		}
	}
	return rows
}

func (r *report) purgeRows() []row {
	engine := r.purge["project engine"]
	var rows []row
	for _, p := range []struct {
		name   string
		target float64
	}{
		{"SCAN COUNT 1000 + UNLINK loop", 1.0},
		{"redis-cli --scan | redis-cli --pipe", 7.0},
	} {
		theirs := r.purge[p.name]
		ratio := engine.keysPerSec() / theirs.keysPerSec()
		rows = append(rows, row{
			what:    fmt.Sprintf("purge %s of %s keys, keys/s: engine vs %s", fmtCount(r.purgeKeys/2), fmtCount(r.purgeKeys), p.name),
			callers: "—",
			ours:    fmtRate(engine.keysPerSec()), peer: fmtRate(theirs.keysPerSec()),
			ratio: ratio, speedup: ratio,
			target: fmt.Sprintf("≥ %.0fx", p.target), met: yesNo(ratio >= p.target),
		})
	}
	idle := r.latency[0]
	for _, l := range r.latency[1:] {
		rw := row{
			what:    "GET p99 of a concurrent reader during " + l.name + " vs idle",
			callers: "1",
			ours:    fmtDur(l.p99), peer: fmtDur(idle.p99),
			ratio: float64(l.p99) / float64(idle.p99),
		}
		if l.name == "project engine, unthrottled" {
			rw.target = "< 2 ms"
			rw.met = yesNo(l.p99 < 2*time.Millisecond)
		}
		rows = append(rows, rw)
	}
	return rows
}

// cell escapes the pipes of a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// table is the one table the command prints, in Markdown.
func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| comparison | callers | pkg/cache | peer | ratio | target | met |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, rw := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2fx | %s | %s |\n", cell(rw.what), rw.callers, rw.ours, rw.peer, rw.ratio, rw.target, rw.met)
	}
	return b.String()
}

// generated is the part of docs/benchmarks.md that each run rewrites.
func (r *report) generated() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s, %v in all, on %s; Redis %s. ", time.Now().UTC().Format("2006-01-02 15:04 MST"), r.took.Round(time.Second), machine(), r.redisVersion)
	fmt.Fprintf(&b, "Each series: %d measurements of %v, interleaved with the other contenders', median kept. ", r.rounds, r.benchtime)
	b.WriteString("The redis-servers run on the same cores as the clients.\n\n")
	b.WriteString("Ratios are pkg/cache ÷ peer: for times lower is better, for keys/s higher is better. ")
	b.WriteString("At 1 caller a time is the median latency of calls alternated between the contenders; ")
	b.WriteString("at 64 callers it is wall time ÷ operations (RunParallel), the median of the rounds.\n\n")
	b.WriteString(r.table())
	b.WriteString("\n![Speed of pkg/cache relative to each peer, log scale](benchmarks.png)\n")
	if r.ops != nil {
		b.WriteString("\n### Time per operation (median)\n\n| operation | callers |")
		for _, l := range libs {
			fmt.Fprintf(&b, " %s |", l)
		}
		b.WriteString("\n| --- | ---: |" + strings.Repeat(" ---: |", len(libs)) + "\n")
		for _, op := range opNames {
			for _, n := range callerCounts {
				fmt.Fprintf(&b, "| remote %s | %d |", op, n)
				for _, l := range libs {
					fmt.Fprintf(&b, " %s |", fmtNs(r.ops[op][n][l].nsPerOp))
				}
				b.WriteString("\n")
			}
		}
		b.WriteString("\n| hit | callers | time |\n| --- | ---: | ---: |\n")
		for _, n := range callerCounts {
			for _, name := range localNames {
				fmt.Fprintf(&b, "| %s | %d | %s |\n", name, n, fmtNs(r.local[n][name].nsPerOp))
			}
		}
	}
	b.WriteString(r.batch.details())
	if r.purge != nil {
		fmt.Fprintf(&b, "\n### Purge of %s of %s keys (pattern `%s`)\n\n| method | time | keys/s | redis-server CPU meanwhile |\n| --- | ---: | ---: | ---: |\n",
			fmtCount(r.purgeKeys/2), fmtCount(r.purgeKeys), purgePattern)
		for _, name := range []string{"project engine", "SCAN COUNT 1000 + UNLINK loop", "redis-cli --scan | redis-cli --pipe"} {
			p := r.purge[name]
			fmt.Fprintf(&b, "| %s | %v | %s | %v (%.0f%%) |\n", cell(name), p.elapsed.Round(time.Millisecond), fmtRate(p.keysPerSec()),
				p.serverCPU.Round(time.Millisecond), 100*p.serverCPU.Seconds()/p.elapsed.Seconds())
		}
		b.WriteString("\n### GET latency of a concurrent reader during a purge\n\n| during | reads | p50 | p99 | max | purge took |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
		for _, l := range r.latency {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %v |\n", l.name, l.reads, fmtDur(l.p50), fmtDur(l.p99), fmtDur(l.max), l.purgeTime.Round(time.Millisecond))
		}
	}
	b.WriteString(r.clusterPurge)
	return b.String()
}

const (
	beginMark = "<!-- bench:begin (generated by make bench; edit outside these marks) -->"
	endMark   = "<!-- bench:end -->"
)

// writeDoc replaces the generated part of the document, keeping what was
// written around it by hand.
func writeDoc(path, generated string) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		old = []byte("# Benchmarks\n\n" + beginMark + "\n" + endMark + "\n")
	} else if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("%s lacks the markers %q and %q", path, beginMark, endMark)
	}
	s = s[:i+len(beginMark)] + "\n" + generated + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func fmtNs(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}

func fmtDur(d time.Duration) string { return fmtNs(float64(d.Nanoseconds())) }

func fmtRate(perSec float64) string {
	if perSec >= 1e6 {
		return fmt.Sprintf("%.2fM/s", perSec/1e6)
	}
	return fmt.Sprintf("%.0fk/s", perSec/1e3)
}

func fmtCount(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
