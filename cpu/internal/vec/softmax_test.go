package vec

import (
	"math"
	"math/rand"
	"testing"
)

// TestSoftmax: each row is the float64 softmax within the exponential's 4 float32 ulps (as SiLU's), a few for the
// sum and the scaling and the rounding of r[i] − max, plus 1e-35; rows of every length class run: whole
// 16-lane blocks, a tail only, both; a row with its maximum in the tail; a NaN anywhere makes the row NaN; a row of
// equal values is uniform.
func TestSoftmax(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU: the kernels cannot run (package cpu uses its scalar loop)")
	}
	r := rand.New(rand.NewSource(3))
	for _, n := range []int{64, 16, 15, 1, 37, 256, 100} {
		for _, scale := range []float64{0.1, 3, 30} {
			row := make([]float32, n)
			for i := range row {
				row[i] = float32(scale * r.NormFloat64())
			}
			if n > 16 {
				row[n-1] = float32(4 * scale) // the maximum in the tail
			}
			want := make([]float64, n)
			mx := math.Inf(-1)
			for _, v := range row {
				mx = max(mx, float64(v))
			}
			var sum float64
			for i, v := range row {
				want[i] = math.Exp(float64(v) - mx)
				sum += want[i]
			}
			got := append([]float32(nil), row...)
			Softmax(got)
			for i := range got {
				// The exponential's 4 ulps, a few more for the sum and the scaling, and the rounding of r[i] − m to
				// float32 (half an ulp of it: a relative error of |r[i] − m|·2⁻²⁴ in the exponential).
				w := want[i] / sum
				if tol := (8+math.Abs(float64(row[i])-mx))*0x1p-24*w + 1e-35; !(math.Abs(float64(got[i])-w) <= tol) { // NaN fails
					t.Fatalf("n=%d scale %g: softmax[%d] = %g, want %g", n, scale, i, got[i], w)
				}
			}
		}
	}
	for _, n := range []int{20, 5} {
		for at := range n {
			row := make([]float32, n)
			row[at] = float32(math.NaN())
			Softmax(row)
			for i, v := range row {
				if v == v {
					t.Fatalf("n=%d, NaN at %d: softmax[%d] = %g, want NaN", n, at, i, v)
				}
			}
		}
	}
	row := []float32{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}
	Softmax(row)
	for i, v := range row {
		if !(math.Abs(float64(v)-1.0/20) <= 0x1p-24) {
			t.Fatalf("uniform row: softmax[%d] = %g", i, v)
		}
	}
}

// TestSoftmaxGrad: d is the scalar loop's, bit for bit, where dot is summed in Sum64's order (the products are exact,
// so a fused multiply-add adds the same number as a product then a sum): lengths with whole 32-element blocks, 8-lane
// blocks and tails.
func TestSoftmaxGrad(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU: the kernels cannot run (package cpu uses its scalar loop)")
	}
	r := rand.New(rand.NewSource(4))
	for _, n := range []int{64, 32, 40, 7, 1, 100} {
		p, d := make([]float32, n), make([]float32, n)
		for i := range p {
			p[i] = float32(r.Float64())
			d[i] = float32(math.Ldexp(r.NormFloat64(), r.Intn(40)-20))
		}
		var part [32]float64
		for i := range d {
			part[i%32] += float64(p[i]) * float64(d[i])
		}
		dot := refCombine(part[:])
		want := make([]float32, n)
		for i := range d {
			want[i] = float32(float64(p[i]) * (float64(d[i]) - dot))
		}
		SoftmaxGrad(p, d)
		for i := range d {
			if math.Float32bits(d[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d: d[%d] = %g, want %g", n, i, d[i], want[i])
			}
		}
	}
}

// TestRoundBF16: every element equals the scalar rounding (the upper half after adding 0x7fff and bit 16; a NaN
// quieted, its sign and upper payload kept), bit for bit, on ties both ways, values just below a carry into the
// exponent, the largest finite floats (→ ±Inf), subnormals, ±0, ±Inf, signalling and quiet NaNs and random bits; in
// place and into another slice; with a tail.
func TestRoundBF16(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU: the kernels cannot run (package cpu uses its scalar loop)")
	}
	bits := []uint32{0x3f808000, 0x3f818000, 0x3f80ffff, 0x7f7fffff, 0xff7fffff, 0x00000001, 0x807fffff, 0x00008000,
		0, 0x80000000, 0x7f800000, 0xff800000, 0x7f800001, 0xff800001, 0x7fc00000, 0x7fbfffff, 0x7f80ffff}
	r := rand.New(rand.NewSource(5))
	for range 1000 {
		bits = append(bits, r.Uint32())
	}
	ref := func(b uint32) uint32 {
		if b&0x7fffffff > 0x7f800000 {
			return (b | 0x00400000) &^ 0xffff
		}
		b += 0x7fff + (b>>16)&1
		return b &^ 0xffff
	}
	for _, n := range []int{len(bits), 16, 5} {
		src := make([]float32, n)
		for i := range src {
			src[i] = math.Float32frombits(bits[i])
		}
		dst := make([]float32, n+1)
		dst[n] = 7
		RoundBF16(dst, src)
		RoundBF16(src, src)
		for i := range n {
			want := ref(bits[i])
			if math.Float32bits(dst[i]) != want || math.Float32bits(src[i]) != want {
				t.Fatalf("n=%d: RoundBF16(%#08x) = %#08x (in place %#08x), want %#08x", n, bits[i],
					math.Float32bits(dst[i]), math.Float32bits(src[i]), want)
			}
		}
		if dst[n] != 7 {
			t.Fatalf("n=%d: RoundBF16 wrote past len(src)", n)
		}
	}
}
