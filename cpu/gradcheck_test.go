package cpu

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// Gradient checks on the float64 backend: for every op with a backward pass, the
// analytic gradient of L = ⟨f(inputs), g⟩ (g a random upstream gradient) is compared
// with central finite differences (L(x+h·d) − L(x−h·d))/(2h):
//   - per element (d = e_i) for inputs of up to perElementMax elements,
//   - along random directions d otherwise, against ⟨∇L, d⟩.
//
// With h = 1e-5 in float64 the truncation error is O(h²·f”') ≈ 1e-10 and the rounding
// error O(2^-53·|L|/h) ≈ 1e-11·|L|, so gradTol = 1e-6 (relative) leaves a wide margin
// while any wrong term, index or factor shows up as an O(1) error. The relative error of
// a per-element check is taken against max(|num|, |ana|, 1e-3·max_i|ana_i|), so that an
// element whose true gradient is tiny does not turn rounding noise into a failure.
const (
	gradStep      = 1e-5
	gradTol       = 1e-6
	perElementMax = 500
	directions    = 6
)

// param is one differentiable input: its buffer and the gradient buffer its op
// accumulates into.
type param struct {
	name  string
	x, dx ops.Buf
}

// gradCase builds inputs on be and returns the parameters, the forward output, the
// forward and the backward (which accumulates the parameters' gradients from dy).
type gradCase struct {
	name  string
	build func(be *Backend[float64], r *rand.Rand) (ps []param, y ops.Buf, fwd func(), bwd func(dy ops.Buf))
}

func randBuf(be *Backend[float64], r *rand.Rand, n int, scale float64) ops.Buf {
	b := be.Alloc(n)
	for i, d := 0, Data[float64](b); i < n; i++ {
		d[i] = r.NormFloat64() * scale
	}
	return b
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func runGradCase(t *testing.T, gc gradCase) {
	be := New64()
	r := rand.New(rand.NewSource(int64(len(gc.name)) * 7919))
	ps, y, fwd, bwd := gc.build(be, r)
	g := randBuf(be, r, y.Len(), 1)
	loss := func() float64 { fwd(); return dot(Data[float64](y), Data[float64](g)) }

	// Analytic gradients from zeroed buffers.
	for _, p := range ps {
		be.Fill(p.dx, 0)
	}
	fwd()
	bwd(g)
	ana := make([][]float64, len(ps))
	for i, p := range ps {
		ana[i] = append([]float64(nil), Data[float64](p.dx)...)
	}

	for pi, p := range ps {
		x, a := Data[float64](p.x), ana[pi]
		scale := 0.0
		for _, v := range a {
			scale = max(scale, math.Abs(v))
		}
		if scale == 0 {
			t.Errorf("%s: gradient is identically zero: the check would be vacuous", p.name)
			continue
		}
		if len(x) <= perElementMax {
			worst, at := 0.0, -1
			for i := range x {
				x0 := x[i]
				x[i] = x0 + gradStep
				lp := loss()
				x[i] = x0 - gradStep
				lm := loss()
				x[i] = x0
				num := (lp - lm) / (2 * gradStep)
				if e := math.Abs(num-a[i]) / max(math.Abs(num), math.Abs(a[i]), 1e-3*scale); e > worst {
					worst, at = e, i
				}
				if e := math.Abs(num-a[i]) / max(math.Abs(num), math.Abs(a[i]), 1e-3*scale); e > gradTol {
					t.Errorf("%s[%d]: analytic %.10g, numeric %.10g (relative error %.2g > %g)", p.name, i, a[i], num, e, gradTol)
				}
			}
			t.Logf("%s: %d elements, worst relative error %.2g at %d", p.name, len(x), worst, at)
			continue
		}
		x0 := append([]float64(nil), x...)
		for k := 0; k < directions; k++ {
			d := make([]float64, len(x))
			for i := range d {
				d[i] = r.NormFloat64()
			}
			for i := range x {
				x[i] = x0[i] + gradStep*d[i]
			}
			lp := loss()
			for i := range x {
				x[i] = x0[i] - gradStep*d[i]
			}
			lm := loss()
			copy(x, x0)
			num, an := (lp-lm)/(2*gradStep), dot(a, d)
			if e := math.Abs(num-an) / max(math.Abs(num), math.Abs(an), 1e-12); e > gradTol {
				t.Errorf("%s along direction %d: analytic %.10g, numeric %.10g (relative error %.2g > %g)", p.name, k, an, num, e, gradTol)
			}
		}
	}

	// The += convention: backward into non-zero gradient buffers adds to them.
	fwd()
	init := make([][]float64, len(ps))
	for i, p := range ps {
		init[i] = Data[float64](randBuf(be, r, p.dx.Len(), 1))
		copy(Data[float64](p.dx), init[i])
	}
	bwd(g)
	for i, p := range ps {
		for j, v := range Data[float64](p.dx) {
			want := init[i][j] + ana[i][j]
			if math.Abs(v-want) > 1e-12*(math.Abs(init[i][j])+math.Abs(ana[i][j])+1e-300) {
				t.Errorf("%s[%d]: backward into %.6g gave %.12g, want %.12g (+= convention)", p.name, j, init[i][j], v, want)
				break
			}
		}
	}
}

func TestGradients(t *testing.T) {
	for _, gc := range gradCases() {
		t.Run(gc.name, func(t *testing.T) { runGradCase(t, gc) })
	}
	// The convolutions again with one output row per im2col block, and with panels of
	// two samples of the 3×5×7 3×3 shapes (27·35 float64 columns each; the default
	// budget puts a whole backward chunk in one panel); then on the shifted-GEMM path
	// (convshift.go) with groups as large as the batch or chunk, of one sample, and of
	// two samples of the 5×7 shapes (4 channels of a 6×8 grid).
	for _, v := range []struct {
		name     string
		budget   int
		shiftMin int
	}{
		{"rowblocks", 1, shiftMinHW}, {"panels2", 2 * 27 * 35 * 8, shiftMinHW},
		{"shifted", colBlockBytes, 1}, {"shifted/groups1", 1, 1}, {"shifted/groups2", 2 * 4 * 6 * 8 * 8, 1},
	} {
		withShiftMin(v.shiftMin, func() {
			withColBlock(v.budget, func() {
				for _, gc := range gradCases() {
					if strings.HasPrefix(gc.name, "Conv2D/") {
						t.Run(v.name+"/"+gc.name, func(t *testing.T) { runGradCase(t, gc) })
					}
				}
			})
		})
	}
}

func gradCases() []gradCase {
	var cs []gradCase
	// Conv2D: K ∈ {1, 3} × stride ∈ {1, 2} × pad ∈ {0, 1} × bias, odd spatial sizes, batch 1 and 3.
	i := 0
	for _, k := range []int{1, 3} {
		for _, stride := range []int{1, 2} {
			for _, pad := range []int{0, 1} {
				for _, bias := range []bool{true, false} {
					s := ops.ConvShape{N: 1 + 2*(i%2), Cin: 3, H: 5, W: 7, Cout: 4, K: k, Stride: stride, Pad: pad}
					if i%4 == 3 {
						s.H, s.W = 9, 9
					}
					i++
					cs = append(cs, gradCase{
						name: fmt.Sprintf("Conv2D/%dx%dx%dx%d->%d/k%ds%dp%d/bias=%v", s.N, s.Cin, s.H, s.W, s.Cout, k, stride, pad, bias),
						build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
							x := randBuf(be, r, s.N*s.Cin*s.H*s.W, 1)
							w := randBuf(be, r, s.Cout*s.Cin*s.K*s.K, 0.5)
							ps := []param{{"x", x, be.Alloc(x.Len())}, {"w", w, be.Alloc(w.Len())}}
							var b, db ops.Buf
							if bias {
								b, db = randBuf(be, r, s.Cout, 1), be.Alloc(s.Cout)
								ps = append(ps, param{"b", b, db})
							}
							y := be.Alloc(s.N * s.Cout * s.OutH() * s.OutW())
							return ps, y, func() { be.Conv2D(s, x, w, b, y) },
								func(dy ops.Buf) { be.Conv2DBackward(s, x, w, dy, ps[0].dx, ps[1].dx, db) }
						}})
				}
			}
		}
	}
	for _, s := range []ops.ConvShape{
		// Batch 9: backward chunks of 2, 2, 2 and 3 samples, so that multi-sample panels
		// (see TestGradients' panel pass) include a partial one.
		{N: 9, Cin: 3, H: 5, W: 7, Cout: 4, K: 3, Stride: 1, Pad: 1},
		{N: 3, Cin: 2, H: 1, W: 1, Cout: 3, K: 3, Stride: 1, Pad: 1}, // 1×1 spatial: only the kernel centre sees x
		{N: 2, Cin: 6, H: 4, W: 6, Cout: 5, K: 3, Stride: 2, Pad: 0}, // even sizes, stride 2, the last row/column unused
		// Zeros after x only (diffusers' Downsample2D with padding 0): even and odd sizes, and stride 1.
		{N: 2, Cin: 3, H: 6, W: 8, Cout: 4, K: 3, Stride: 2, Pad: 0, PadEnd: 1},
		{N: 1, Cin: 2, H: 5, W: 7, Cout: 3, K: 3, Stride: 2, Pad: 0, PadEnd: 1},
		{N: 2, Cin: 2, H: 4, W: 5, Cout: 3, K: 3, Stride: 1, Pad: 1, PadEnd: 2},
	} {
		cs = append(cs, gradCase{
			name: fmt.Sprintf("Conv2D/%dx%dx%dx%d->%d/k%ds%dp%d+%d/bias=true", s.N, s.Cin, s.H, s.W, s.Cout, s.K, s.Stride, s.Pad, s.PadEnd),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				x, w, b := randBuf(be, r, s.N*s.Cin*s.H*s.W, 1), randBuf(be, r, s.Cout*s.Cin*s.K*s.K, 0.5), randBuf(be, r, s.Cout, 1)
				ps := []param{{"x", x, be.Alloc(x.Len())}, {"w", w, be.Alloc(w.Len())}, {"b", b, be.Alloc(s.Cout)}}
				y := be.Alloc(s.N * s.Cout * s.OutH() * s.OutW())
				return ps, y, func() { be.Conv2D(s, x, w, b, y) },
					func(dy ops.Buf) { be.Conv2DBackward(s, x, w, dy, ps[0].dx, ps[1].dx, ps[2].dx) }
			}})
	}
	for _, s := range []ops.NormShape{
		{N: 3, C: 6, HW: 35, G: 2, Eps: 1e-5},  // 3 channels per group, 5×7
		{N: 1, C: 12, HW: 81, G: 4, Eps: 1e-5}, // 3 per group, 9×9
		{N: 3, C: 12, HW: 1, G: 4, Eps: 1e-5},  // 1×1
		{N: 1, C: 6, HW: 9, G: 6, Eps: 1e-5},   // 1 per group
	} {
		cs = append(cs, gradCase{name: fmt.Sprintf("GroupNorm/%+v", s),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				n := s.N * s.C * s.HW
				x, gamma, beta := randBuf(be, r, n, 1), randBuf(be, r, s.C, 1), randBuf(be, r, s.C, 1)
				y, stats := be.Alloc(n), be.Alloc(2*s.N*s.G)
				ps := []param{{"x", x, be.Alloc(n)}, {"gamma", gamma, be.Alloc(s.C)}, {"beta", beta, be.Alloc(s.C)}}
				return ps, y, func() { be.GroupNorm(s, x, gamma, beta, y, stats) },
					func(dy ops.Buf) { be.GroupNormBackward(s, x, gamma, stats, dy, ps[0].dx, ps[1].dx, ps[2].dx) }
			}})
		cs = append(cs, gradCase{name: fmt.Sprintf("GroupNormSiLU/%+v", s),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				n := s.N * s.C * s.HW
				x, gamma, beta := randBuf(be, r, n, 1), randBuf(be, r, s.C, 1.5), randBuf(be, r, s.C, 1)
				y, stats := be.Alloc(n), be.Alloc(2*s.N*s.G)
				ps := []param{{"x", x, be.Alloc(n)}, {"gamma", gamma, be.Alloc(s.C)}, {"beta", beta, be.Alloc(s.C)}}
				return ps, y, func() { be.GroupNormSiLU(s, x, gamma, beta, y, stats) },
					func(dy ops.Buf) {
						be.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, ps[0].dx, ps[1].dx, ps[2].dx)
					}
			}})
	}
	cs = append(cs, gradCase{name: "SiLU/3x5x7",
		build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
			x := randBuf(be, r, 105, 3)
			y := be.Alloc(105)
			ps := []param{{"x", x, be.Alloc(105)}}
			return ps, y, func() { be.SiLU(x, y) }, func(dy ops.Buf) { be.SiLUBackward(x, dy, ps[0].dx) }
		}})
	for _, sh := range [][3]int{{1, 1, 1}, {3, 7, 5}, {2, 33, 65}} {
		n, in, out := sh[0], sh[1], sh[2]
		cs = append(cs, gradCase{name: fmt.Sprintf("Linear/%dx%d->%d", n, in, out),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				x, w, b := randBuf(be, r, n*in, 1), randBuf(be, r, out*in, 0.3), randBuf(be, r, out, 1)
				y := be.Alloc(n * out)
				ps := []param{{"x", x, be.Alloc(n * in)}, {"w", w, be.Alloc(out * in)}, {"b", b, be.Alloc(out)}}
				return ps, y, func() { be.Linear(n, in, out, x, w, b, y) },
					func(dy ops.Buf) { be.LinearBackward(n, in, out, x, w, dy, ps[0].dx, ps[1].dx, ps[2].dx) }
			}})
	}
	for _, sh := range [][3]int{{1, 1, 1}, {6, 5, 7}} {
		nc, h, w := sh[0], sh[1], sh[2]
		cs = append(cs, gradCase{name: fmt.Sprintf("Upsample2x/%dx%dx%d", nc, h, w),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				x, y := randBuf(be, r, nc*h*w, 1), be.Alloc(4*nc*h*w)
				ps := []param{{"x", x, be.Alloc(nc * h * w)}}
				return ps, y, func() { be.Upsample2x(nc, h, w, x, y) }, func(dy ops.Buf) { be.Upsample2xBackward(nc, h, w, dy, ps[0].dx) }
			}})
	}
	for _, sh := range [][4]int{{1, 1, 1, 1}, {3, 2, 5, 35}} {
		n, ca, cb, hw := sh[0], sh[1], sh[2], sh[3]
		cs = append(cs, gradCase{name: fmt.Sprintf("Concat/%dx(%d+%d)x%d", n, ca, cb, hw),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				a, b, y := randBuf(be, r, n*ca*hw, 1), randBuf(be, r, n*cb*hw, 1), be.Alloc(n*(ca+cb)*hw)
				ps := []param{{"a", a, be.Alloc(a.Len())}, {"b", b, be.Alloc(b.Len())}}
				return ps, y, func() { be.Concat(n, ca, cb, hw, a, b, y) },
					func(dy ops.Buf) { be.ConcatBackward(n, ca, cb, hw, dy, ps[0].dx, ps[1].dx) }
			}})
	}
	for _, sh := range [][4]int{{1, 1, 1, 1}, {3, 6, 35, 6}, {3, 4, 5, 9}} { // n, c, hw, ld
		n, c, hw, ld := sh[0], sh[1], sh[2], sh[3]
		cs = append(cs, gradCase{name: fmt.Sprintf("AddChannel/%dx%dx%d/ld=%d", n, c, hw, ld),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				pn := ops.RowsLen(n, c, ld)
				x, p, y := randBuf(be, r, n*c*hw, 1), randBuf(be, r, pn, 1), be.Alloc(n*c*hw)
				ps := []param{{"p", p, be.Alloc(pn)}} // ∂y/∂x is the identity: nothing to check
				return ps, y, func() { be.AddChannel(n, c, hw, ld, x, p, y) },
					func(dy ops.Buf) { be.ChannelSum(n, c, hw, ld, dy, ps[0].dx) }
			}})
	}
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {2, 40, 33}} {
		n, rr, c := sh[0], sh[1], sh[2]
		cs = append(cs, gradCase{name: fmt.Sprintf("Transpose/%dx%dx%d", n, rr, c),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				x, y := randBuf(be, r, n*rr*c, 1), be.Alloc(n*rr*c)
				ps := []param{{"x", x, be.Alloc(n * rr * c)}}
				return ps, y, func() { be.Transpose(n, rr, c, x, y) }, func(dy ops.Buf) { be.TransposeBackward(n, rr, c, dy, ps[0].dx) }
			}})
	}
	for _, s := range []ops.AttnShape{{N: 1, L: 2, Heads: 1, D: 1}, {N: 1, L: 5, Heads: 1, D: 4}, {N: 3, L: 7, Heads: 2, D: 3}, {N: 2, L: 16, Heads: 2, D: 8}} {
		cs = append(cs, gradCase{name: fmt.Sprintf("Attention/%+v", s),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				n := s.N * s.L * s.Heads * s.D
				q, k, v := randBuf(be, r, n, 1), randBuf(be, r, n, 1), randBuf(be, r, n, 1)
				o, p := be.Alloc(n), be.Alloc(s.N*s.Heads*s.L*s.L)
				ps := []param{{"q", q, be.Alloc(n)}, {"k", k, be.Alloc(n)}, {"v", v, be.Alloc(n)}}
				return ps, o, func() { be.Attention(s, q, k, v, o, p) },
					func(do ops.Buf) { be.AttentionBackward(s, q, k, v, p, do, ps[0].dx, ps[1].dx, ps[2].dx) }
			}})
	}
	for _, n := range []int{1, 105, 70001} { // 70001 crosses the parallel threshold
		cs = append(cs, gradCase{name: fmt.Sprintf("Dropout/%d", n),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				x, y := randBuf(be, r, n, 1), be.Alloc(n)
				ps := []param{{"x", x, be.Alloc(n)}}
				return ps, y, func() { be.Dropout(0.3, 5, 17, x, y) }, func(dy ops.Buf) { be.DropoutBackward(0.3, 5, 17, dy, ps[0].dx) }
			}})
	}
	for _, n := range []int{1, 105} {
		cs = append(cs, gradCase{name: fmt.Sprintf("MSE/%d", n),
			build: func(be *Backend[float64], r *rand.Rand) ([]param, ops.Buf, func(), func(ops.Buf)) {
				a, b, loss := randBuf(be, r, n, 1), randBuf(be, r, n, 1), be.Alloc(1)
				ps := []param{{"a", a, be.Alloc(n)}}
				// dL/dloss = dy[0]: MSEBackward takes it as its scale.
				return ps, loss, func() { be.MSE(a, b, loss) },
					func(dy ops.Buf) { be.MSEBackward(float32(Data[float64](dy)[0]), a, b, ps[0].dx) }
			}})
	}
	return cs
}
