//go:build cgo

package cpu

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestLinearBF16Matmul checks the float32 backend's linear layer at bf16 (oneDNN's bf16 matmul) against the plain
// loops on bf16-rounded inputs in float64: every element within the float32 accumulation bound
// K·2^-23·Σ|a·b| (+ the accumulated value's own ulp), on shapes around the GEMM kernels' blockings (1 row, odd sizes,
// K above and below the 32-wide bf16 pairs), forward and both backward products with accumulation into non-zero
// buffers; the implementation is a native bf16 kernel; and a second run is bit-identical.
func TestLinearBF16Matmul(t *testing.T) {
	be := New()
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Skipf("no bf16 here: %v", err)
	}
	rng := rand.New(rand.NewSource(7))
	randv := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	in := func(d []float32) ops.Buf { b := be.Alloc(len(d)); be.Upload(b, d); return b }
	out := func(b ops.Buf, n int) []float32 { d := make([]float32, n); be.Download(d, b); return d }
	r := func(v []float32) []float32 { w := make([]float32, len(v)); roundBF16To(w, v); return w }
	for _, s := range []linearShape{{1, 7, 5}, {3, 33, 17}, {64, 256, 1024}, {257, 64, 64}, {130, 96, 31}} {
		x, w, b, dy := randv(s.N*s.In), randv(s.Out*s.In), randv(s.Out), randv(s.N*s.Out)
		dx0, dw0 := randv(s.N*s.In), randv(s.Out*s.In)
		run := func() (y, dx, dw []float32) {
			xb, wb, yb, dyb, dxb, dwb := in(x), in(w), be.Alloc(s.N*s.Out), in(dy), in(dx0), in(dw0)
			be.Linear(s.N, s.In, s.Out, xb, wb, in(b), yb)
			be.LinearBackward(s.N, s.In, s.Out, xb, wb, dyb, dxb, dwb, nil)
			return out(yb, s.N*s.Out), out(dxb, s.N*s.In), out(dwb, s.Out*s.In)
		}
		y, dx, dw := run()
		xr, wr, dyr := r(x), r(w), r(dy)
		// check compares got[i·cols+j] with init + Σ_l a(i,l)·b(l,j) in float64.
		check := func(name string, got []float32, rows, cols, k int, init func(i, j int) float64, a, bm func(i, l, j int) float64) {
			t.Helper()
			for i := 0; i < rows; i++ {
				for j := 0; j < cols; j++ {
					var sum, abs float64
					for l := 0; l < k; l++ {
						p := a(i, l, j) * bm(i, l, j)
						sum += p
						abs += math.Abs(p)
					}
					want := init(i, j) + sum
					tol := float64(k+1)*0x1p-23*(abs+math.Abs(init(i, j))) + 0x1p-23*math.Abs(want)
					if d := math.Abs(float64(got[i*cols+j]) - want); d > tol {
						t.Fatalf("%+v %s[%d,%d] = %v, want %v (|diff| %.3g > %.3g)", s, name, i, j, got[i*cols+j], want, d, tol)
					}
				}
			}
		}
		check("y", y, s.N, s.Out, s.In, func(_, o int) float64 { return float64(b[o]) },
			func(n, i, _ int) float64 { return float64(xr[n*s.In+i]) }, func(_, i, o int) float64 { return float64(wr[o*s.In+i]) })
		check("dx", dx, s.N, s.In, s.Out, func(n, i int) float64 { return float64(dx0[n*s.In+i]) },
			func(n, o, _ int) float64 { return float64(dyr[n*s.Out+o]) }, func(_, o, i int) float64 { return float64(wr[o*s.In+i]) })
		check("dw", dw, s.Out, s.In, s.N, func(o, i int) float64 { return float64(dw0[o*s.In+i]) },
			func(o, n, _ int) float64 { return float64(dyr[n*s.Out+o]) }, func(_, n, i int) float64 { return float64(xr[n*s.In+i]) })
		y2, dx2, dw2 := run()
		for _, p := range [][2][]float32{{y, y2}, {dx, dx2}, {dw, dw2}} {
			for i := range p[0] {
				if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
					t.Fatalf("%+v: second run differs at %d: %v, %v", s, i, p[0][i], p[1][i])
				}
			}
		}
	}
	for k := range be.dn.mms {
		impl := be.dn.mmImpl(k)
		if !bf16Kernel(impl) {
			t.Errorf("matmul %+v: oneDNN chose %q, not a native bf16 kernel", k, impl)
		}
	}
}
