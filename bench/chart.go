package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The charts' colours: the benchmark chart's bars and the dashboard picture's
// series share them.
var (
	chartGrey  = color.RGBA{200, 200, 200, 255}
	chartDark  = color.RGBA{80, 80, 80, 255}
	chartGreen = color.RGBA{46, 139, 87, 255}
	chartRed   = color.RGBA{205, 92, 92, 255}
	chartBlue  = color.RGBA{70, 110, 180, 255}
	chartAmber = color.RGBA{210, 140, 30, 255}
)

// writeChart draws the ratios as horizontal bars on a log scale: how many
// times faster pkg/cache is than each peer (right of 1x: faster, in green;
// left: slower, in red).
func writeChart(path string, rows []row) error {
	var bars []row
	for _, r := range rows {
		if r.speedup > 0 {
			bars = append(bars, r)
		}
	}
	const (
		labelW = 560
		plotW  = 420
		rowH   = 18
		top    = 40
		bottom = 40
		margin = 10
		minX   = 1.0 / 16
		maxX   = 64.0
	)
	w, h := labelW+plotW+2*margin+60, top+len(bars)*rowH+bottom
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	face := basicfont.Face7x13
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	textRight := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Face: face}
		text(x-d.MeasureString(s).Round(), y, s, c)
	}
	x0 := margin + labelW
	xOf := func(v float64) int {
		v = math.Min(math.Max(v, minX), maxX)
		return x0 + int(float64(plotW)*math.Log2(v/minX)/math.Log2(maxX/minX))
	}
	black, grey, green, red := color.Black, chartGrey, chartGreen, chartRed
	text(margin, 20, "pkg/cache speed relative to each peer (log scale; right of 1x = faster)", black)
	// Grid lines with their labels.
	for v := minX; v <= maxX; v *= 2 {
		x := xOf(v)
		c := grey
		if v == 1 {
			c = chartDark
		}
		fill(img, x, top-4, x+1, h-bottom+4, c)
		label := fmt.Sprintf("%gx", v)
		if v < 1 {
			label = fmt.Sprintf("1/%gx", 1/v)
		}
		text(x-len(label)*7/2, h-bottom+20, label, black)
	}
	for i, b := range bars {
		y := top + i*rowH
		label := b.what
		if b.callers != "—" {
			label = fmt.Sprintf("%s (%s)", b.what, b.callers)
		}
		if len(label) > labelW/7-1 {
			label = label[:labelW/7-4] + "..."
		}
		textRight(x0-6, y+13, label, black)
		one, x := xOf(1), xOf(b.speedup)
		c := color.Color(green)
		if b.speedup < 1 {
			c = red
			one, x = x, one
		}
		fill(img, one, y+3, max(x, one+1), y+rowH-3, c)
		text(max(xOf(b.speedup), xOf(1))+4, y+13, fmt.Sprintf("%.2fx", b.speedup), black)
	}
	return writePNG(path, img)
}

// writePNG encodes img into the file at path.
func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}

// timePanel is one panel of the dashboard picture: series over time.
type timePanel struct {
	title   string
	percent bool // values are ratios, drawn on a fixed 0-100% axis
	step    bool // hold each value until the next (Grafana's stepAfter)
	series  []timeSeries
}

// writeTimeChart draws panels one above the other on a shared time axis from
// start to end, labelled with the time since start, in the benchmark chart's
// font and colours.
func writeTimeChart(path, title string, start, end time.Time, panels []timePanel) error {
	const (
		w       = 1000
		left    = 60 // y labels
		right   = 20
		top     = 34 // the title
		headH   = 36 // a panel's title and legend
		plotH   = 140
		footH   = 30 // x labels
		ticksY  = 4
		maxTick = 12
	)
	h := top + len(panels)*(headH+plotH+footH) + 6
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	face := basicfont.Face7x13
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	width := func(s string) int { return font.MeasureString(face, s).Round() }
	text(10, 20, title, color.Black)

	span := end.Sub(start)
	plotW := w - left - right
	xOf := func(t time.Time) int {
		return left + int(float64(plotW)*float64(t.Sub(start))/float64(span))
	}
	tick := time.Second
	for _, d := range []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour} {
		tick = d
		if span/d <= maxTick {
			break
		}
	}
	palette := []color.Color{chartGreen, chartRed, chartBlue, chartAmber, chartDark}

	for i, p := range panels {
		y0 := top + i*(headH+plotH+footH)
		text(left, y0+14, p.title, color.Black)
		x := left
		for j, s := range p.series {
			c := palette[j%len(palette)]
			fill(img, x, y0+22, x+14, y0+25, c)
			text(x+18, y0+29, s.name, color.Black)
			x += 18 + width(s.name) + 16
		}
		py0, py1 := y0+headH, y0+headH+plotH // plot top and bottom
		lo, hi := 0.0, 1.0
		if !p.percent {
			for _, s := range p.series {
				for _, pt := range s.points {
					if !math.IsNaN(pt.v) {
						hi = math.Max(hi, pt.v)
					}
				}
			}
			hi = niceCeil(hi)
		}
		yOf := func(v float64) int {
			return py1 - int(math.Round(float64(plotH)*(v-lo)/(hi-lo)))
		}
		for k := 0; k <= ticksY; k++ {
			v := lo + (hi-lo)*float64(k)/ticksY
			y := yOf(v)
			fill(img, left, y, w-right, y+1, chartGrey)
			label := strconv.FormatFloat(v, 'g', 3, 64)
			if p.percent {
				label = fmt.Sprintf("%.0f%%", 100*v)
			}
			text(left-6-width(label), y+4, label, color.Black)
		}
		for t := start; !t.After(end); t = t.Add(tick) {
			x := xOf(t)
			fill(img, x, py0, x+1, py1, chartGrey)
			label := elapsed(t.Sub(start))
			text(x-width(label)/2, py1+16, label, color.Black)
		}
		fill(img, left, py1, w-right, py1+1, chartDark)
		fill(img, left, py0, left+1, py1, chartDark)
		for j, s := range p.series {
			c := palette[j%len(palette)]
			var prev *point
			for k := range s.points {
				pt := &s.points[k]
				if math.IsNaN(pt.v) {
					prev = nil
					continue
				}
				if prev != nil {
					x0, y0, x1, y1 := xOf(prev.t), yOf(prev.v), xOf(pt.t), yOf(pt.v)
					if p.step {
						line(img, x0, y0, x1, y0, c)
						line(img, x1, y0, x1, y1, c)
					} else {
						line(img, x0, y0, x1, y1, c)
					}
				}
				prev = pt
			}
		}
	}
	label := "time since " + start.UTC().Format("2006-01-02 15:04:05 UTC")
	text(w-right-width(label), h-4, label, chartDark)

	return writePNG(path, img)
}

// line draws a 2-pixel-wide line from (x0, y0) to (x1, y1) (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		fill(img, x0, y0-1, x0+2, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, for an axis.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// elapsed labels a time axis: 0, 30s, 1m, 1m30s.
func elapsed(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}
