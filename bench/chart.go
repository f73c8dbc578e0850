package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
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
	black, grey := color.Black, color.RGBA{200, 200, 200, 255}
	green, red := color.RGBA{46, 139, 87, 255}, color.RGBA{205, 92, 92, 255}
	text(margin, 20, "pkg/cache speed relative to each peer (log scale; right of 1x = faster)", black)
	// Grid lines with their labels.
	for v := minX; v <= maxX; v *= 2 {
		x := xOf(v)
		c := grey
		if v == 1 {
			c = color.RGBA{80, 80, 80, 255}
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
