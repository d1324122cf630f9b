package plot

import (
	"bytes"
	"image"
	"image/png"
	"math"
	"testing"
)

// TestLossCurveIsWhereTheValuesAre checks that a falling loss is drawn high on the left and low on the right, on
// the log axis, and that bad values are left out rather than failing.
func TestLossCurveIsWhereTheValuesAre(t *testing.T) {
	steps := []int{0, 100, 200, 300, 400}
	loss := []float64{1, math.NaN(), 0.1, math.Inf(1), 0.01}
	var b bytes.Buffer
	if err := Loss(&b, steps, loss, 400, 300); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 400 || img.Bounds().Dy() != 300 {
		t.Fatalf("bounds %v", img.Bounds())
	}
	// Decades 0.01 … 1: loss 1 is at the top of the plot area, 0.01 at the bottom, 0.1 exactly half-way.
	ph := 300 - top - bottom
	isBlue := func(x, y int) bool {
		r, g, b, _ := img.At(x, y).RGBA()
		return r>>8 == uint32(blue.R) && g>>8 == uint32(blue.G) && b>>8 == uint32(blue.B)
	}
	pw := 400 - left - right
	if !isBlue(left, top) {
		t.Error("first point (step 0, loss 1) not at top-left")
	}
	if !isBlue(left+pw-1, top+ph-1) {
		t.Error("last point (step 400, loss 0.01) not at bottom-right")
	}
	xm := left + int(math.Round(0.5*float64(pw-1)))
	ym := top + int(math.Round(0.5*float64(ph-1)))
	near := false // ±1 pixel: the half-way position falls on a pixel boundary
	for dx := -1; dx <= 1; dx++ {
		for dy := -1; dy <= 1; dy++ {
			near = near || isBlue(xm+dx, ym+dy)
		}
	}
	if !near {
		t.Error("middle point (step 200, loss 0.1) not at the centre")
	}
	// Points around the NaN are not joined: nothing blue at step 50's column between the two first points.
	if isBlue(left+int(0.125*float64(pw-1)), top+ph/4) {
		t.Error("segment drawn across a NaN")
	}
}

func TestLossErrors(t *testing.T) {
	if err := Loss(&bytes.Buffer{}, []int{1}, nil, 400, 300); err == nil {
		t.Error("length mismatch accepted")
	}
	if err := Loss(&bytes.Buffer{}, nil, nil, 10, 10); err == nil {
		t.Error("tiny image accepted")
	}
	if err := Loss(&bytes.Buffer{}, nil, nil, 400, 300); err != nil {
		t.Errorf("empty series: %v", err)
	}
}

func TestNiceStep(t *testing.T) {
	for in, want := range map[float64]float64{0.3: 1, 3: 5, 12: 20, 600: 1000, 100: 100} {
		if got := niceStep(in); got != want {
			t.Errorf("niceStep(%v) = %v want %v", in, got, want)
		}
	}
}

// TestLineReachesItsEnd draws segments in every direction and slope: each must terminate, start and end on its
// endpoints and step by at most one pixel in each axis (checked by counting pixels against max(|dx|, |dy|) + 1).
func TestLineReachesItsEnd(t *testing.T) {
	for _, d := range [][2]int{{0, 0}, {7, 0}, {0, -7}, {7, 3}, {-3, 7}, {5, -13}, {-13, -5}, {13, 13}, {1, 40}, {40, -1}} {
		img := image.NewRGBA(image.Rect(-50, -50, 50, 50))
		line(img, 0, 0, d[0], d[1], blue)
		n := 0
		for y := -50; y < 50; y++ {
			for x := -50; x < 50; x++ {
				if img.RGBAAt(x, y) == blue {
					n++
				}
			}
		}
		// The line is two pixels thick (y and y+1); overlaps make the count at most 2·(steps + 1).
		steps := max(abs(d[0]), abs(d[1]))
		if img.RGBAAt(0, 0) != blue || img.RGBAAt(d[0], d[1]) != blue || n < steps+1 || n > 2*(steps+1) {
			t.Errorf("segment to %v: %d pixels, want %d…%d with both ends set", d, n, steps+1, 2*(steps+1))
		}
	}
}
