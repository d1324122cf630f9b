package vec

import (
	"math"
	"math/rand"
	"testing"
)

// inputs: a sweep over the range where SiLU changes, the extremes where exp
// overflows or underflows, and random normals; n is not a multiple of 16, so that the
// padded tail runs too.
func inputs() []float32 {
	var x []float32
	for v := -120.0; v <= 120; v += 0.37 {
		x = append(x, float32(v))
	}
	r := rand.New(rand.NewSource(1))
	for range 1000 {
		x = append(x, float32(3*r.NormFloat64()))
	}
	x = append(x, 0, float32(math.Copysign(0, -1)), 88.7, -88.7, 87.4, -87.4, 1e-8, -1e-8,
		float32(math.Inf(1)), float32(math.Inf(-1)))
	return x
}

// close reports whether got is within 4 float32 ulps (relative 4.8e-7) of want, or
// within 1e-35 absolutely: below x ≈ −88.7, exp(−x) overflows float32, so SiLU
// returns −0 where the true value is x·e^x, under 1e-35 in magnitude.
func close(got float32, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(float64(got))
	}
	if math.IsInf(want, 0) || math.IsInf(float64(got), 0) {
		return float64(got) == want
	}
	return math.Abs(float64(got)-want) <= 4.8e-7*math.Abs(want)+1e-35
}

func TestSiLU(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU: the kernels cannot run (package cpu uses its scalar loop)")
	}
	x := inputs()
	for _, n := range []int{len(x), 16, 15, 1} { // bulk + tail, exactly one block, tails only
		y := make([]float32, n)
		SiLU(x[:n], y)
		for i, v := range x[:n] {
			want := float64(v) / (1 + math.Exp(-float64(v)))
			if math.IsInf(float64(v), -1) {
				want = 0 // −∞·σ(−∞) → −∞/∞; the limit is 0 (x·e^x → 0)
			}
			if math.IsInf(float64(v), 1) {
				want = math.Inf(1)
			}
			if !close(y[i], want) && !(math.IsInf(float64(v), -1) && (math.IsNaN(float64(y[i])) || y[i] == 0)) {
				t.Fatalf("n=%d: SiLU(%g) = %g, want %g", n, v, y[i], want)
			}
		}
	}
	// NaN stays NaN.
	y := make([]float32, 1)
	SiLU([]float32{float32(math.NaN())}, y)
	if y[0] == y[0] {
		t.Fatalf("SiLU(NaN) = %g", y[0])
	}
}

func TestSiLUBackward(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU: the kernels cannot run (package cpu uses its scalar loop)")
	}
	var x []float32
	for _, v := range inputs() {
		if !math.IsInf(float64(v), 0) {
			x = append(x, v)
		}
	}
	r := rand.New(rand.NewSource(2))
	for _, n := range []int{len(x), 16, 7} {
		dy, dx, dx0 := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range dy {
			dy[i], dx0[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
		}
		copy(dx, dx0)
		SiLUBackward(x[:n], dy, dx)
		for i, v := range x[:n] {
			s := 1 / (1 + math.Exp(-float64(v)))
			g := float64(dy[i]) * s * (1 + float64(v)*(1-s))
			want := float64(dx0[i]) + g
			// The sum's rounding: a few ulps of the larger of its terms.
			tol := 6e-7*(math.Abs(float64(dx0[i]))+math.Abs(g)) + 1e-37
			if math.Abs(float64(dx[i])-want) > tol {
				t.Fatalf("n=%d: SiLUBackward at x=%g dy=%g: dx %g, want %g", n, v, dy[i], dx[i], want)
			}
		}
	}
}

func TestAdd(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU: the kernels cannot run (package cpu uses its scalar loop)")
	}
	r := rand.New(rand.NewSource(3))
	for _, n := range []int{0, 1, 63, 64, 65, 200} {
		dst, src, want := make([]float32, n), make([]float32, n+3), make([]float32, n)
		for i := range dst {
			dst[i], src[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			want[i] = dst[i] + src[i]
		}
		Add(dst, src)
		for i := range dst {
			if dst[i] != want[i] {
				t.Fatalf("n=%d: dst[%d] = %g, want %g", n, i, dst[i], want[i])
			}
		}
	}
}
