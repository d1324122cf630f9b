package rng

import (
	"math"
	"testing"
)

func TestUniformFromBitsExactAndOpen(t *testing.T) {
	// Edge words and a sweep: the value must be exactly ((u>>8)|1)/2^24 (computed in float64, where it is exact),
	// strictly inside (0, 1).
	words := []uint32{0, 1, 0xff, 0x100, 0x1ff, 0x7fffffff, 0x80000000, 0xfffffeff, 0xffffff00, 0xffffffff}
	for u := uint64(0); u < 1<<32; u += 0x10001 {
		words = append(words, uint32(u))
	}
	for _, u := range words {
		got := UniformFromBits(u)
		want := float64((u>>8)|1) / (1 << 24)
		if float64(got) != want {
			t.Fatalf("UniformFromBits(%#x) = %v, want %v", u, got, want)
		}
		if !(got > 0 && got < 1) {
			t.Fatalf("UniformFromBits(%#x) = %v, not in (0, 1)", u, got)
		}
	}
	if got, want := UniformFromBits(0), float32(0x1p-24); got != want {
		t.Errorf("smallest uniform = %g, want 2^-24", got)
	}
	if got, want := UniformFromBits(0xffffffff), float32(1-0x1p-24); got != want {
		t.Errorf("largest uniform = %g, want 1-2^-24", got)
	}
}

// TestLogUnitExhaustive compares logUnit with math.Log over all 2^23 inputs, with a bound of one float32 ulp of the
// result (relative 2^-23 ~ 1.2e-7; Cephes states ~1e-7 for logf on its reduced range).
func TestLogUnitExhaustive(t *testing.T) {
	worst, worstK := 0.0, uint32(0)
	for k := uint32(1); k < 1<<24; k += 2 {
		got := float64(logUnit(k))
		want := math.Log(float64(k) / (1 << 24))
		ulp := math.Abs(want) * 0x1p-23
		if e := math.Abs(got-want) / ulp; e > worst {
			worst, worstK = e, k
		}
	}
	t.Logf("logUnit: worst error %.3f ulp at k=%d", worst, worstK)
	if worst > 1 {
		t.Errorf("logUnit(%d) error %.3f ulp, want <= 1", worstK, worst)
	}
}

// TestSinCos2PiExhaustive compares sinCos2Pi with math.Sincos(2 pi k/2^24) over all 2^23 inputs, with an absolute
// bound of 1.5e-7, about one float32 ulp at 1 (|sin|, |cos| <= 1; the polynomials are accurate to ~6e-8 and the
// rounding of x = r*pi/2 adds up to 5e-8).
func TestSinCos2PiExhaustive(t *testing.T) {
	worst, worstK := 0.0, uint32(0)
	for k := uint32(1); k < 1<<24; k += 2 {
		s, c := sinCos2Pi(k)
		ws, wc := math.Sincos(2 * math.Pi * float64(k) / (1 << 24))
		e := max(math.Abs(float64(s)-ws), math.Abs(float64(c)-wc))
		if e > worst {
			worst, worstK = e, k
		}
	}
	t.Logf("sinCos2Pi: worst absolute error %.3g at k=%d", worst, worstK)
	if worst > 1.5e-7 {
		t.Errorf("sinCos2Pi(%d) absolute error %.3g, want <= 1.5e-7", worstK, worst)
	}
}

// TestBoxMullerAccuracy checks BoxMuller against the float64 Box-Muller formula on the same uniforms, over a grid of
// words that covers the largest radius (u1 = 2^-24) and every angle octant. The bound, 5e-7 (1+|z|), allows the
// errors of ln (1 ulp), sqrt and the product (half an ulp each) and sin/cos (1.5e-7 absolute).
func TestBoxMullerAccuracy(t *testing.T) {
	worst := 0.0
	for a := uint64(0); a < 1<<32; a += 0x3fff01 {
		for b := uint64(0); b < 1<<32; b += 0x7ffd03 {
			for _, aw := range []uint32{uint32(a), uint32(a) | 0xff} {
				z0, z1 := BoxMuller(aw, uint32(b))
				u1 := float64(UniformFromBits(aw))
				u2 := float64(UniformFromBits(uint32(b)))
				r := math.Sqrt(-2 * math.Log(u1))
				w1, w0 := math.Sincos(2 * math.Pi * u2)
				w0, w1 = r*w0, r*w1
				for _, p := range [][2]float64{{float64(z0), w0}, {float64(z1), w1}} {
					if e := math.Abs(p[0]-p[1]) / (1 + math.Abs(p[1])); e > worst {
						worst = e
					}
				}
			}
		}
	}
	t.Logf("BoxMuller: worst error %.3g (1+|z|)", worst)
	if worst > 5e-7 {
		t.Errorf("BoxMuller error %.3g (1+|z|), want <= 5e-7", worst)
	}
	// The largest radius the uniforms allow: sqrt(-2 ln 2^-24).
	z0, _ := BoxMuller(0, 0)
	if want := math.Sqrt(48 * math.Ln2); math.Abs(float64(z0)-want) > 1e-6*want {
		t.Errorf("BoxMuller(0, 0) = %v, want r_max cos(2 pi 2^-24) ~ %v", z0, want)
	}
}
