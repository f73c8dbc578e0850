package main

// The -dashboard-png mode: docs/ cannot hold a screenshot of Grafana (there
// is no Grafana here), so it runs the dashboard's own queries against a
// Prometheus (the demo's: make dashboard-png) and draws their data with the
// chart code of the benchmarks.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

var (
	dashboardPNG      = flag.Bool("dashboard-png", false, "instead of benchmarking, draw panels of the Grafana dashboard from a Prometheus into -out")
	dashPrometheus    = flag.String("prometheus", "", "-dashboard-png: the Prometheus to query, such as http://127.0.0.1:9090")
	dashFile          = flag.String("dashboard", "../config/grafana/cacheplane-dashboard.json", "-dashboard-png: the Grafana dashboard whose queries are run")
	dashPanelTitles   = flag.String("panels", "Hit ratio per policy,Invalidation runs", "-dashboard-png: comma-separated titles of the panels to draw")
	dashStart         = flag.String("start", "", "-dashboard-png: start of the time range (RFC 3339); empty: 10 minutes before -end")
	dashEnd           = flag.String("end", "", "-dashboard-png: end of the time range (RFC 3339); empty: now")
	dashStep          = flag.Duration("step", 5*time.Second, "-dashboard-png: query resolution")
	dashRateInterval  = flag.Duration("rate-interval", 20*time.Second, "-dashboard-png: what $__rate_interval stands for (Grafana's is 4 scrape intervals: 20s at the demo's 5s)")
	dashOut           = flag.String("out", "../docs/dashboard.png", "-dashboard-png: the PNG to write")
	dashTitle         = flag.String("title", "cacheplane dashboard panels, from the demo's Prometheus (make dashboard-png)", "-dashboard-png: the picture's title")
	errNoDashboardURL = errors.New("-dashboard-png needs -prometheus URL")
)

// runDashboardPNG is the -dashboard-png mode.
func runDashboardPNG(ctx context.Context) error {
	if *dashPrometheus == "" {
		return errNoDashboardURL
	}
	end := time.Now()
	if *dashEnd != "" {
		t, err := time.Parse(time.RFC3339, *dashEnd)
		if err != nil {
			return fmt.Errorf("-end: %w", err)
		}
		end = t
	}
	start := end.Add(-10 * time.Minute)
	if *dashStart != "" {
		t, err := time.Parse(time.RFC3339, *dashStart)
		if err != nil {
			return fmt.Errorf("-start: %w", err)
		}
		start = t
	}
	if !start.Before(end) {
		return fmt.Errorf("-start %s is not before -end %s", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	panels, err := dashboardPanels(*dashFile, strings.Split(*dashPanelTitles, ","))
	if err != nil {
		return err
	}
	vars := strings.NewReplacer(
		"$__rate_interval", promDuration(*dashRateInterval),
		"$__interval", promDuration(*dashStep),
		"$__range", promDuration(end.Sub(start)),
		"${namespace}", ".*",
		"$namespace", ".*",
	)
	var drawn []timePanel
	for _, p := range panels {
		d := p.FieldConfig.Defaults
		tp := timePanel{title: p.Title, percent: d.Unit == "percentunit", step: d.Custom.LineInterpolation == "stepAfter"}
		for _, t := range p.Targets {
			got, err := queryRange(ctx, *dashPrometheus, vars.Replace(t.Expr), start, end, *dashStep)
			if err != nil {
				return fmt.Errorf("panel %q: %w", p.Title, err)
			}
			for _, s := range got {
				s.name = legend(t.LegendFormat, s.labels)
				tp.series = append(tp.series, s)
			}
		}
		sort.SliceStable(tp.series, func(i, j int) bool { return tp.series[i].name < tp.series[j].name })
		tp.series = dropZeros(tp.series)
		if len(tp.series) == 0 {
			return fmt.Errorf("panel %q: no data between %s and %s", p.Title, start.Format(time.RFC3339), end.Format(time.RFC3339))
		}
		drawn = append(drawn, tp)
	}
	if err := writeTimeChart(*dashOut, *dashTitle, start, end, drawn); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d panels, %s to %s\n", *dashOut, len(drawn), start.Format(time.RFC3339), end.Format(time.RFC3339))
	return nil
}

// dashPanel is what -dashboard-png reads of a Grafana panel.
type dashPanel struct {
	Title       string `json:"title"`
	Type        string `json:"type"`
	FieldConfig struct {
		Defaults struct {
			Unit   string `json:"unit"`
			Custom struct {
				// stepAfter draws steps, as Grafana does; otherwise lines.
				LineInterpolation string `json:"lineInterpolation"`
			} `json:"custom"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a collapsed row's panels
}

// dashboardPanels returns the panels of a dashboard JSON file with the given
// titles, in that order; a title the dashboard lacks is an error, so that a
// renamed panel cannot silently drop out of the picture.
func dashboardPanels(path string, titles []string) ([]dashPanel, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var dash struct {
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	byTitle := map[string]dashPanel{}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			byTitle[p.Title] = p
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	var out []dashPanel
	for _, t := range titles {
		p, ok := byTitle[strings.TrimSpace(t)]
		if !ok || len(p.Targets) == 0 {
			return nil, fmt.Errorf("%s: no panel %q with queries", path, t)
		}
		out = append(out, p)
	}
	return out, nil
}

// point is one sample; v is NaN where the expression had no value (such as
// a hit ratio over no lookups), which the chart leaves as a gap.
type point struct {
	t time.Time
	v float64
}

// timeSeries is one series of a range query.
type timeSeries struct {
	name   string
	labels map[string]string
	points []point
}

// queryRange runs a range query through Prometheus' HTTP API.
func queryRange(ctx context.Context, base, expr string, start, end time.Time, step time.Duration) ([]timeSeries, error) {
	q := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/api/v1/query_range?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return parseMatrix(body)
}

// parseMatrix reads a query_range answer.
func parseMatrix(body []byte) ([]timeSeries, error) {
	var env struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string    `json:"metric"`
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("not a Prometheus API answer: %w: %.200s", err, body)
	}
	if env.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s", env.Error)
	}
	if env.Data.ResultType != "matrix" {
		return nil, fmt.Errorf("prometheus: result type %q, want matrix", env.Data.ResultType)
	}
	var out []timeSeries
	for _, r := range env.Data.Result {
		s := timeSeries{labels: r.Metric}
		for _, v := range r.Values {
			var ts float64
			var val string
			if err := json.Unmarshal(v[0], &ts); err != nil {
				return nil, fmt.Errorf("sample time %s: %w", v[0], err)
			}
			if err := json.Unmarshal(v[1], &val); err != nil {
				return nil, fmt.Errorf("sample value %s: %w", v[1], err)
			}
			f, err := strconv.ParseFloat(val, 64) // accepts NaN and ±Inf as Prometheus writes them
			if err != nil {
				return nil, fmt.Errorf("sample value %q: %w", val, err)
			}
			if math.IsInf(f, 0) {
				f = math.NaN()
			}
			sec, frac := math.Modf(ts)
			s.points = append(s.points, point{t: time.Unix(int64(sec), int64(frac*1e9)), v: f})
		}
		out = append(out, s)
	}
	return out, nil
}

// legend fills a Grafana legend format such as "{{namespace}}/{{policy}}".
func legend(format string, labels map[string]string) string {
	if format == "" {
		var parts []string
		for k, v := range labels {
			parts = append(parts, k+"="+v)
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	var b strings.Builder
	for {
		i := strings.Index(format, "{{")
		j := strings.Index(format, "}}")
		if i < 0 || j < i {
			b.WriteString(format)
			return b.String()
		}
		b.WriteString(format[:i])
		b.WriteString(labels[strings.TrimSpace(format[i+2:j])])
		format = format[j+2:]
	}
}

// promDuration writes d as a PromQL duration (whole seconds suffice here).
func promDuration(d time.Duration) string {
	return strconv.FormatInt(int64(math.Max(1, math.Round(d.Seconds()))), 10) + "s"
}

// dropZeros leaves out the series that stay at 0 (or have no value), as
// Grafana's legend option "hide series with only zeros" does: the run
// counters exist at 0 for every trigger and result, and ten flat lines would
// hide the one that moves. If every series is zero, it keeps them all.
func dropZeros(series []timeSeries) []timeSeries {
	var out []timeSeries
	for _, s := range series {
		for _, p := range s.points {
			if p.v != 0 && !math.IsNaN(p.v) {
				out = append(out, s)
				break
			}
		}
	}
	if len(out) == 0 {
		return series
	}
	return out
}
