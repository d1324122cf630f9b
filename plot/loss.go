// Package plot draws the training loss curve as a PNG with the standard library only (no fonts, no plotting
// dependency): log-scale loss against step, gridlines at powers of ten, and axis labels in a tiny bitmap font.
package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"
)

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{0, 0, 0, 255}
	grid  = color.RGBA{225, 225, 225, 255}
	minor = color.RGBA{242, 242, 242, 255}
	blue  = color.RGBA{31, 119, 180, 255}
)

// Margins of the plot area.
const (
	left, right, top, bottom = 64, 16, 24, 40
	scale                    = 2 // font pixel size
)

// Loss draws loss[i] at step[i] (ascending steps, at least one point) into a width×height PNG written to w. The
// y axis is logarithmic, spanning the decades that hold the finite positive values; non-finite and non-positive
// values are left out. The x axis runs from 0 to the last step.
func Loss(w io.Writer, step []int, loss []float64, width, height int) error {
	img, err := LossImage(step, loss, width, height)
	if err != nil {
		return err
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("plot: png: %w", err)
	}
	return nil
}

// LossImage is Loss without the encoding.
func LossImage(step []int, loss []float64, width, height int) (*image.RGBA, error) {
	if len(step) != len(loss) {
		return nil, fmt.Errorf("plot: %d steps but %d losses", len(step), len(loss))
	}
	if width < left+right+50 || height < top+bottom+50 {
		return nil, fmt.Errorf("plot: %dx%d is too small", width, height)
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = white.R, white.G, white.B, white.A
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	maxStep := 1
	for i, l := range loss {
		if l > 0 && !math.IsInf(l, 0) {
			lo, hi = min(lo, l), max(hi, l)
		}
		maxStep = max(maxStep, step[i])
	}
	if math.IsInf(lo, 1) { // nothing to draw: an empty frame
		lo, hi = 0.1, 1
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	pw, ph := width-left-right, height-top-bottom
	px := func(s float64) int { return left + int(math.Round(s/float64(maxStep)*float64(pw-1))) }
	py := func(l float64) int {
		return top + int(math.Round((dhi-math.Log10(l))/(dhi-dlo)*float64(ph-1)))
	}

	// Gridlines: every decade (labelled) and the 2…9 multiples between them.
	for d := dlo; d <= dhi; d++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow(10, d)
			if math.Log10(v) > dhi+1e-9 {
				break
			}
			c := minor
			if m == 1 {
				c = grid
			}
			hline(img, left, left+pw-1, py(v), c)
		}
		y := py(math.Pow(10, d))
		label := strconv.FormatFloat(math.Pow(10, d), 'g', -1, 64)
		drawText(img, left-6-textWidth(label, scale), y-5*scale/2, label, scale, black)
	}
	// x ticks at a round interval giving about five labels.
	tick := niceStep(float64(maxStep) / 5)
	for s := 0.0; s <= float64(maxStep)+1e-9; s += tick {
		x := px(s)
		vline(img, x, top, top+ph-1, grid)
		label := strconv.FormatFloat(s, 'f', -1, 64)
		drawText(img, x-textWidth(label, scale)/2, top+ph+6, label, scale, black)
	}
	// Frame and titles.
	hline(img, left, left+pw-1, top, black)
	hline(img, left, left+pw-1, top+ph-1, black)
	vline(img, left, top, top+ph-1, black)
	vline(img, left+pw-1, top, top+ph-1, black)
	drawText(img, left, 6, "loss (log) vs step", scale, black)

	// The curve: line segments between consecutive drawable points.
	prevOK := false
	var x0, y0 int
	for i, l := range loss {
		if !(l > 0) || math.IsInf(l, 0) {
			prevOK = false
			continue
		}
		x1, y1 := px(float64(step[i])), py(l)
		if prevOK {
			line(img, x0, y0, x1, y1, blue)
		} else {
			img.SetRGBA(x1, y1, blue)
		}
		x0, y0, prevOK = x1, y1, true
	}
	return img, nil
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

// line draws a segment with Bresenham's algorithm, two pixels thick.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e // both tests use the error before this step's updates
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

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}

func sign(a int) int {
	switch {
	case a > 0:
		return 1
	case a < 0:
		return -1
	}
	return 0
}
