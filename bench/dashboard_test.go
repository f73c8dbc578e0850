package main

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseMatrixKeepsLabelsAndNaNs(t *testing.T) {
	got, err := parseMatrix([]byte(`{"status":"success","data":{"resultType":"matrix","result":[
		{"metric":{"namespace":"default","policy":"demo"},"values":[[1700000000,"0.5"],[1700000005.5,"NaN"],[1700000010,"+Inf"],[1700000015,"0.75"]]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].labels["policy"] != "demo" || len(got[0].points) != 4 {
		t.Fatalf("parsed %+v", got)
	}
	p := got[0].points
	if p[0].v != 0.5 || !math.IsNaN(p[1].v) || !math.IsNaN(p[2].v) || p[3].v != 0.75 {
		t.Errorf("values %v", p)
	}
	if !p[1].t.Equal(time.Unix(1700000005, 5e8)) {
		t.Errorf("time %v", p[1].t)
	}
	if _, err := parseMatrix([]byte(`{"status":"error","error":"parse error at char 3"}`)); err == nil || !strings.Contains(err.Error(), "parse error") {
		t.Errorf("error answer: %v", err)
	}
	if _, err := parseMatrix([]byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`)); err == nil {
		t.Error("a vector was accepted as a matrix")
	}
}

func TestLegend(t *testing.T) {
	labels := map[string]string{"namespace": "default", "policy": "demo", "trigger": "Token"}
	for format, want := range map[string]string{
		"{{namespace}}/{{policy}}": "default/demo",
		"{{ trigger }} {{result}}": "Token ",
		"keys/s":                   "keys/s",
		"":                         "{namespace=default, policy=demo, trigger=Token}",
	} {
		if got := legend(format, labels); got != want {
			t.Errorf("legend(%q) = %q, want %q", format, got, want)
		}
	}
}

func TestDashboardPanelsReadsTheDashboard(t *testing.T) {
	ps, err := dashboardPanels(*dashFile, strings.Split(*dashPanelTitles, ","))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Title != "Hit ratio per policy" || ps[0].FieldConfig.Defaults.Unit != "percentunit" || ps[1].Title != "Invalidation runs" {
		t.Errorf("panels %+v", ps)
	}
	if _, err := dashboardPanels(*dashFile, []string{"No such panel"}); err == nil {
		t.Error("a missing panel was accepted")
	}
}

// samples is a demo's hit ratio: climbing, collapsing at the invalidation
// (t=120s), climbing again; a gap (NaN) before the first lookups.
func samples(start time.Time) (ratio, runs timeSeries) {
	ratio.name, runs.name = "default/demo", "Token success"
	for s := 0; s <= 240; s += 5 {
		t := start.Add(time.Duration(s) * time.Second)
		v := math.NaN()
		switch {
		case s >= 120:
			v = 0.9 * (1 - math.Exp(-float64(s-120)/20))
		case s >= 10:
			v = 0.9 * (1 - math.Exp(-float64(s-10)/20))
		}
		ratio.points = append(ratio.points, point{t, v})
		r := 0.0
		if s >= 120 {
			r = 1
		}
		runs.points = append(runs.points, point{t, r})
	}
	return ratio, runs
}

func TestWriteTimeChartWritesThePanels(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ratio, runs := samples(start)
	path := filepath.Join(t.TempDir(), "dashboard.png")
	err := writeTimeChart(path, "test", start, start.Add(240*time.Second), []timePanel{
		{title: "Hit ratio per policy", percent: true, series: []timeSeries{ratio}},
		{title: "Invalidation runs", step: true, series: []timeSeries{runs}},
	})
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, path)
	if b := img.Bounds(); b.Dx() != 1000 || b.Dy() != 34+2*(36+140+30)+6 {
		t.Errorf("size %v", b.Size())
	}
	// Each panel's first series is drawn in green: the hit ratio's line
	// covers the plot's width, less the gap before the first lookups.
	cols := map[int]bool{}
	for y := 0; y < img.Bounds().Dy(); y++ {
		for x := 0; x < img.Bounds().Dx(); x++ {
			if sameColour(img.At(x, y), chartGreen) {
				cols[x] = true
			}
		}
	}
	if len(cols) < 800 {
		t.Errorf("green in %d columns of 1000: the series are not drawn", len(cols))
	}
	if info, err := os.Stat(path); err != nil || info.Size() > 200<<10 {
		t.Errorf("size %v, %v", info.Size(), err)
	}
}

// TestRunDashboardPNGQueriesEachPanel runs the mode against a stand-in for
// Prometheus' query_range API that answers each of the two panels' queries,
// and checks what it was asked.
func TestRunDashboardPNGQueriesEachPanel(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ratio, runs := samples(start)
	matrix := func(labels string, s timeSeries) string {
		var vals []string
		for _, p := range s.points {
			vals = append(vals, fmt.Sprintf(`[%d,"%g"]`, p.t.Unix(), p.v))
		}
		return fmt.Sprintf(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":%s,"values":[%s]}]}}`, labels, strings.Join(vals, ","))
	}
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/api/v1/query_range" || q.Get("start") != fmt.Sprint(start.Unix()) || q.Get("step") != "5" {
			http.Error(w, r.URL.String(), http.StatusBadRequest)
			return
		}
		expr := q.Get("query")
		asked = append(asked, expr)
		if strings.Contains(expr, "cacheplane_invalidation_runs_total") {
			fmt.Fprint(w, matrix(`{"trigger":"Token","result":"success"}`, runs))
			return
		}
		fmt.Fprint(w, matrix(`{"namespace":"default","policy":"demo"}`, ratio))
	}))
	defer srv.Close()

	out := filepath.Join(t.TempDir(), "dashboard.png")
	for f, v := range map[*string]string{dashPrometheus: srv.URL, dashStart: start.Format(time.RFC3339), dashEnd: start.Add(4 * time.Minute).Format(time.RFC3339), dashOut: out} {
		old := *f
		*f = v
		t.Cleanup(func() { *f = old })
	}
	if err := runDashboardPNG(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 || strings.Contains(strings.Join(asked, ""), "$") || !strings.Contains(asked[0], "[20s]") {
		t.Errorf("queries with Grafana's variables left or the wrong window: %q", asked)
	}
	decodePNG(t, out)

	*dashPrometheus = ""
	if err := runDashboardPNG(context.Background()); err != errNoDashboardURL {
		t.Errorf("without -prometheus: %v", err)
	}
}

func TestDropZerosKeepsTheSeriesThatMove(t *testing.T) {
	zero := timeSeries{name: "Schedule error", points: []point{{v: 0}, {v: math.NaN()}}}
	moves := timeSeries{name: "Token success", points: []point{{v: 0}, {v: 1}}}
	if got := dropZeros([]timeSeries{zero, moves, zero}); len(got) != 1 || got[0].name != "Token success" {
		t.Errorf("dropZeros = %v", got)
	}
	if got := dropZeros([]timeSeries{zero, zero}); len(got) != 2 {
		t.Errorf("all-zero series dropped: %v", got)
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

func sameColour(a, b color.Color) bool {
	r1, g1, b1, _ := a.RGBA()
	r2, g2, b2, _ := b.RGBA()
	return r1 == r2 && g1 == g2 && b1 == b2
}
