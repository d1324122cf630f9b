package data

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"testing"
)

func cropResizeImage(img image.Image, side, size, c int) []uint8 {
	dst := make([]uint8, c*size*size)
	side0 := side
	if side0 == 0 {
		side0 = min(img.Bounds().Dx(), img.Bounds().Dy())
	}
	cropResize(dst, img, side0, size, c, &scratch{})
	return dst
}

func fillRGBA(w, h int, f func(x, y int) color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetNRGBA(x, y, f(x, y))
		}
	}
	return img
}

func TestResizeConstantStaysConstant(t *testing.T) {
	for _, tc := range []struct{ w, h, crop, size int }{
		{178, 218, 140, 32}, {178, 218, 0, 64}, {20, 30, 0, 32} /* upscaling */, {33, 33, 33, 32}, {64, 64, 64, 64},
	} {
		col := color.NRGBA{201, 99, 3, 255}
		img := fillRGBA(tc.w, tc.h, func(x, y int) color.NRGBA { return col })
		out := cropResizeImage(img, tc.crop, tc.size, 3)
		for i, v := range out {
			want := []uint8{col.R, col.G, col.B}[i/(tc.size*tc.size)]
			if v != want {
				t.Fatalf("%+v: pixel %d = %d, want %d", tc, i, v, want)
			}
		}
	}
}

// TestResizeSplitStaysSplit: a 178×218 image whose left half (x < 89) is one colour and right half another. The
// 140 crop starts at x = 19, so the edge sits at crop column 70 = 140/2. Resizing 140 → 32 (scale 4.375, tent
// radius 4.375): output column o reaches input columns [(o+0.5)·4.375 − 4.375, (o+0.5)·4.375 + 4.375], which lies
// left of 70 for o ≤ 14 and right of 70 for o ≥ 17. So columns 0..14 are exactly the left colour, 17..31 exactly the
// right one, and by the mirror symmetry of the setup columns 15 and 16 are blends with equal and opposite shares.
func TestResizeSplitStaysSplit(t *testing.T) {
	left, right := color.NRGBA{250, 10, 40, 255}, color.NRGBA{0, 200, 90, 255}
	img := fillRGBA(178, 218, func(x, y int) color.NRGBA {
		if x < 89 {
			return left
		}
		return right
	})
	const s = 32
	out := cropResizeImage(img, 140, s, 3)
	for c, pair := range [][2]uint8{{left.R, right.R}, {left.G, right.G}, {left.B, right.B}} {
		for y := 0; y < s; y++ {
			row := out[(c*s+y)*s : (c*s+y+1)*s]
			for x := 0; x < s; x++ {
				switch {
				case x <= 14 && row[x] != pair[0], x >= 17 && row[x] != pair[1]:
					t.Fatalf("channel %d row %d col %d = %d, want left %d / right %d", c, y, x, row[x], pair[0], pair[1])
				}
			}
			lo, hi := float64(min(pair[0], pair[1])), float64(max(pair[0], pair[1]))
			for _, x := range []int{15, 16} {
				if v := float64(row[x]); v <= lo || v >= hi {
					t.Fatalf("channel %d row %d col %d = %v, want strictly between %v and %v", c, y, x, v, lo, hi)
				}
			}
			// share of the left colour in column 15 = share of the right colour in column 16.
			if a, b := float64(row[15])+float64(row[16]), float64(pair[0])+float64(pair[1]); math.Abs(a-b) > 1 {
				t.Fatalf("channel %d row %d: cols 15+16 = %v, want %v (symmetric blend)", c, y, a, b)
			}
		}
	}
}

// referenceResize is the filter of resize.go written directly as a 2-D sum in float64, sharing no code with it:
// out(o,p) = Σ_i Σ_j t_o(i)·t_p(j)·in(i,j) / Σ_i Σ_j t_o(i)·t_p(j), t_o(i) = tri((i+0.5−(o+0.5)·s)/max(s,1)).
func referenceResize(src []float64, n, size int) []float64 {
	s := float64(n) / float64(size)
	fs := math.Max(s, 1)
	tri := func(o, i int) float64 {
		x := math.Abs((float64(i) + 0.5 - (float64(o)+0.5)*s) / fs)
		return math.Max(0, 1-x)
	}
	out := make([]float64, size*size)
	for oy := 0; oy < size; oy++ {
		for ox := 0; ox < size; ox++ {
			var num, den float64
			for y := 0; y < n; y++ {
				for x := 0; x < n; x++ {
					w := tri(oy, y) * tri(ox, x)
					num += w * src[y*n+x]
					den += w
				}
			}
			out[oy*size+ox] = num / den
		}
	}
	return out
}

func TestResizeMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ n, size int }{{140, 32}, {64, 32}, {50, 7}, {16, 40}, {31, 32}} {
		gray := image.NewGray(image.Rect(0, 0, tc.n, tc.n))
		src := make([]float64, tc.n*tc.n)
		for i := range gray.Pix {
			gray.Pix[i] = uint8(r.IntN(256))
			src[i] = float64(gray.Pix[i])
		}
		got := cropResizeImage(gray, tc.n, tc.size, 1)
		want := referenceResize(src, tc.n, tc.size)
		for i := range want {
			if d := math.Abs(float64(got[i]) - want[i]); d > 0.5+1e-3 {
				t.Fatalf("%d→%d: pixel %d = %d, reference %.4f", tc.n, tc.size, i, got[i], want[i])
			}
		}
	}
}

// TestResizeIsAntialiased: white noise shrunk 140 → 32 must lose most of its variance, as an average over ~4.4×4.4
// pixels does (the tent's Σw² is about (2/3)/4.375 per axis, so the standard deviation drops to about 0.15 of the
// input's). Point sampling, or a 2-tap bilinear that reads 2 of every 4.4 pixels, keeps half or more of it.
func TestResizeIsAntialiased(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	gray := image.NewGray(image.Rect(0, 0, 140, 140))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(r.IntN(256))
	}
	std := func(p []uint8) float64 {
		var s, s2 float64
		for _, v := range p {
			s += float64(v)
			s2 += float64(v) * float64(v)
		}
		m := s / float64(len(p))
		return math.Sqrt(s2/float64(len(p)) - m*m)
	}
	in, out := std(gray.Pix), std(cropResizeImage(gray, 140, 32, 1))
	if out > 0.25*in {
		t.Fatalf("std %.2f → %.2f after 140→32: not low-pass filtered", in, out)
	}
}

func TestResizeMirrorSymmetric(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const n = 150
	a := image.NewGray(image.Rect(0, 0, n, n))
	b := image.NewGray(image.Rect(0, 0, n, n))
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			v := uint8(r.IntN(256))
			a.Pix[y*n+x] = v
			b.Pix[y*n+n-1-x] = v
		}
	}
	const s = 32
	ra, rb := cropResizeImage(a, 140, s, 1), cropResizeImage(b, 140, s, 1)
	for y := 0; y < s; y++ {
		for x := 0; x < s; x++ {
			if d := int(ra[y*s+x]) - int(rb[y*s+s-1-x]); d < -1 || d > 1 {
				t.Fatalf("(%d,%d): %d vs mirrored %d", y, x, ra[y*s+x], rb[y*s+s-1-x])
			}
		}
	}
}

// TestColourModels converts in-memory images of each colour model the decoders produce (CMYK included, which the
// test cannot write as a JPEG with the standard encoder) and checks the 8-bit RGB that comes out.
func TestColourModels(t *testing.T) {
	const n = 8
	rect := image.Rect(0, 0, n, n)
	cmyk := image.NewCMYK(rect)
	gray16 := image.NewGray16(rect)
	rgba64 := image.NewRGBA64(rect)
	nrgba := image.NewNRGBA(rect)
	transparent := image.NewNRGBA(rect)
	pal := image.NewPaletted(rect, color.Palette{color.Black, color.RGBA{10, 20, 30, 255}})
	ycc := image.NewYCbCr(rect, image.YCbCrSubsampleRatio420)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			cmyk.SetCMYK(x, y, color.CMYK{0, 255, 255, 0}) // pure red
			gray16.SetGray16(x, y, color.Gray16{0xAB77})
			rgba64.SetRGBA64(x, y, color.RGBA64{0x12FF, 0x3400, 0xFFFF, 0xFFFF})
			nrgba.SetNRGBA(x, y, color.NRGBA{255, 255, 255, 128})     // half-transparent white over black: 128
			transparent.SetNRGBA(x, y, color.NRGBA{255, 255, 255, 0}) // fully transparent: black
			pal.SetColorIndex(x, y, 1)
		}
	}
	for i := range ycc.Y {
		ycc.Y[i] = 128
	}
	for i := range ycc.Cb {
		ycc.Cb[i], ycc.Cr[i] = 128, 128
	}
	for _, tc := range []struct {
		name string
		img  image.Image
		want [3]uint8
	}{
		{"cmyk", cmyk, [3]uint8{255, 0, 0}},
		{"gray16", gray16, [3]uint8{0xAB, 0xAB, 0xAB}},
		{"rgba64", rgba64, [3]uint8{0x12, 0x34, 0xFF}},
		{"alpha-half", nrgba, [3]uint8{128, 128, 128}},
		{"alpha-zero", transparent, [3]uint8{0, 0, 0}},
		{"paletted", pal, [3]uint8{10, 20, 30}},
		{"ycbcr-gray", ycc, [3]uint8{128, 128, 128}},
	} {
		out := cropResizeImage(tc.img, 0, 4, 3)
		for c := 0; c < 3; c++ {
			for _, v := range out[c*16 : (c+1)*16] {
				if d := int(v) - int(tc.want[c]); d < -1 || d > 1 {
					t.Fatalf("%s: channel %d = %d, want %d ± 1", tc.name, c, v, tc.want[c])
				}
			}
		}
	}
	// Gray output: BT.601 luma of pure red is 0.299·255 = 76.2.
	out := cropResizeImage(cmyk, 0, 4, 1)
	for _, v := range out {
		if v != 76 {
			t.Fatalf("luma of red = %d, want 76", v)
		}
	}
}
