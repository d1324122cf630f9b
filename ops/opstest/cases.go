package opstest

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Tolerances, for a float32 backend against a float64 (or float32) reference. Each
// case names one; the reason travels with it into failure messages.
const (
	// tolRound: one float32 rounding per element, on both sides.
	tolRound = 1e-7
	whyRound = "one float32 rounding per element on both sides (2^-24 ≈ 6e-8)"
	// tolExact: copies and sums of at most four terms; float32 rounding alone is 2^-24 ≈ 6e-8.
	tolExact = 1e-6
	whyExact = "a few float32 roundings per element (2^-24 ≈ 6e-8 each); FMA contraction on a GPU"
	// tolExp: one exp per element.
	tolExp = 1e-6
	whyExp = "one float32 exp per element: expf is within 2 ulp of the float64 exp (on a GPU too)"
	// tolMath: a chain of a few roundings and square roots, amplified by cancellation (each
	// case gives the amplification).
	tolMath = 1e-5
	// tolGEMM: dot products of up to a few thousand float32 terms, summed in any order.
	tolGEMM = 3e-5
	whyGEMM = "float32 sums of up to a few thousand products in an order of the backend's choosing (error ~√n·2^-24)"
	// tolSum64: one long reduction accumulated in float64, rounded to float32 once.
	tolSum64 = 1e-6
	whySum64 = "sums accumulated in float64 in an order of the backend's choosing, rounded to float32 once"
	// tolReduce: one long reduction accumulated in float32.
	tolReduce = 1e-5
	whyReduce = "a float32 reduction over up to ~10^4 terms in the backend's order: ~log2(n)·2^-24"
	// tolEmb: cos/sin of t·f with t up to 999 in float32.
	tolEmb = 2e-4
	whyEmb = "cos/sin of t·f_i for t < 1000: rounding the float32 argument alone costs up to 1000·2^-24 ≈ 6e-5 rad"
	// tolAdam: √v̂ and a division per element, on values after one step.
	tolAdam = 2e-6
	whyAdam = "a float32 chain of ~10 operations per element, a sqrt and a division among them; bias corrections rounded to float32"
)

// Sizes of the elementwise and reduction cases: one element; one GPU block (256
// threads) ± 1; several blocks; both sides of the CPU backend's 64k parallel threshold
// (odd); past the GPU reductions' grid cap (1024 blocks × 256 threads).
var (
	elementwiseSizes = []int{1, 255, 257, 5000, 70001, 300000}
	reduceSizes      = []int{1, 255, 257, 999, 5000, 100003, 300000}
)

// Cases returns every conformance case.
func Cases() []Case {
	cs := []Case{memoryCase()}
	cs = append(cs, elementwiseCases()...)
	cs = append(cs, convCases()...)
	cs = append(cs, normCases()...)
	cs = append(cs, linearCases()...)
	cs = append(cs, layoutCases()...)
	cs = append(cs, attentionCases()...)
	cs = append(cs, lossCases()...)
	cs = append(cs, optimCases()...)
	cs = append(cs, diffusionCases()...)
	cs = append(cs, capabilityCases()...)
	return cs
}

func memoryCase() Case {
	return Case{
		Name:    "memory",
		Methods: []string{"Name", "Alloc", "Slice", "Free", "Upload", "Download", "Fill", "Copy", "Sync"},
		Tol:     0, Why: "memory moves are exact",
		Run: func(e *Env) {
			if e.B.Name() == "" {
				e.Errorf("Name is empty")
			}
			a := e.B.Alloc(37)
			if a.Len() != 37 {
				e.Errorf("Alloc(37).Len() = %d", a.Len())
			}
			z := e.download(a)
			for i, v := range z {
				if v != 0 {
					e.Errorf("Alloc is not zero-filled: [%d] = %g", i, v)
					break
				}
			}
			src := e.Randn(37, 1)
			e.B.Upload(a, src)
			e.Record("upload/download", e.download(a))
			s := e.B.Slice(a, 5, 20) // a view shares storage
			e.B.Fill(s, 2.5)
			e.Record("fill through a slice", e.download(a))
			b := e.Out("copy dst", 20)
			e.B.Copy(b, s)
			c := e.Acc("fill", e.Randn(11, 1))
			e.B.Fill(c, -0.75)
			d := e.B.Alloc(8)
			e.B.Free(d)
			e.B.Free(a)
			if err := e.B.Sync(); err != nil {
				e.Errorf("Sync: %v", err)
			}
		},
	}
}

func elementwiseCases() []Case {
	var cs []Case
	for _, n := range elementwiseSizes {
		cs = append(cs,
			Case{Name: fmt.Sprintf("Add/%d", n), Methods: []string{"Add"}, Tol: tolRound, Why: whyRound,
				Run: func(e *Env) {
					e.B.Add(e.In("a", e.Randn(n, 1)), e.In("b", e.Randn(n, 1)), e.Out("y", n))
					y := e.Acc("y aliasing a", e.Randn(n, 1)) // y = y + b
					e.B.Add(y, e.In("b2", e.Randn(n, 1)), y)
					y = e.Acc("y aliasing b", e.Randn(n, 1)) // y = a + y
					e.B.Add(e.In("a3", e.Randn(n, 1)), y, y)
				}},
			Case{Name: fmt.Sprintf("Axpy/%d", n), Methods: []string{"Axpy", "Scale"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) {
					e.B.Axpy(-0.37, e.In("x", e.Randn(n, 1)), e.Acc("y", e.Randn(n, 1)))
					y := e.Acc("y, then scaled", e.Randn(n, 1))
					e.B.Axpy(-0.7, e.In("x2", e.Randn(n, 1)), y)
					e.B.Scale(1.3, y)
				}},
			Case{Name: fmt.Sprintf("Scale/%d", n), Methods: []string{"Scale"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) { e.B.Scale(1.7, e.Acc("x", e.Randn(n, 1))) }},
			Case{Name: fmt.Sprintf("SiLU/%d", n), Methods: []string{"SiLU", "SiLUBackward"}, Tol: tolExp, Why: whyExp,
				Run: func(e *Env) {
					for _, x := range []struct {
						name string
						x    []float32
					}{{"normal", e.Randn(n, 3)}, {"wide", e.Uniform(n, -12, 12)}} { // wide: σ saturates
						xb := e.In("x "+x.name, x.x)
						e.B.SiLU(xb, e.Out("y "+x.name, n))
						e.B.SiLUBackward(xb, e.In("dy "+x.name, e.Randn(n, 1)), e.Acc("dx "+x.name, e.Randn(n, 1)))
					}
				}},
			Case{Name: fmt.Sprintf("Dropout/%d", n), Methods: []string{"Dropout", "DropoutBackward"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) {
					for _, rate := range []float32{0, 0.1, 0.5} {
						e.B.Dropout(rate, 77, 1001, e.In("x", e.Randn(n, 1)), e.Out(fmt.Sprintf("y rate %g", rate), n))
						e.B.DropoutBackward(rate, 77, 1001, e.In("dy", e.Randn(n, 1)), e.Acc(fmt.Sprintf("dx rate %g", rate), e.Randn(n, 1)))
					}
				}},
			Case{Name: fmt.Sprintf("EMA/%d", n), Methods: []string{"EMA"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) { e.B.EMA(0.999, e.Acc("e", e.Randn(n, 1)), e.In("p", e.Randn(n, 1))) }},
			Case{Name: fmt.Sprintf("Normal/%d", n), Methods: []string{"Normal"}, Tol: 0, Why: "counter-based RNG (Philox, Box-Muller pinned to float32): the same bits by design",
				Run: func(e *Env) {
					e.B.Normal(12345, 3, 0, e.Out("y offset 0", n))
					e.B.Normal(12345, 3, 4*uint64(n)+3, e.Out("y offset 4n+3", n)) // offset not a multiple of 4
					e.B.Normal(42, 1, 1<<33+3, e.Out("y offset 2^33+3", n))        // the counter's high word in use
				}},
		)
	}
	return cs
}

var convShapes = []struct {
	s    ops.ConvShape
	bias bool
}{
	{ops.ConvShape{N: 3, Cin: 5, H: 9, W: 9, Cout: 6, K: 3, Stride: 1, Pad: 1}, true},
	{ops.ConvShape{N: 1, Cin: 4, H: 5, W: 7, Cout: 3, K: 3, Stride: 2, Pad: 1}, true},
	{ops.ConvShape{N: 2, Cin: 3, H: 6, W: 5, Cout: 4, K: 3, Stride: 1, Pad: 0}, false},
	{ops.ConvShape{N: 2, Cin: 6, H: 7, W: 5, Cout: 4, K: 1, Stride: 1, Pad: 0}, false},
	{ops.ConvShape{N: 3, Cin: 3, H: 9, W: 9, Cout: 5, K: 1, Stride: 2, Pad: 0}, true},
	{ops.ConvShape{N: 2, Cin: 3, H: 1, W: 1, Cout: 2, K: 3, Stride: 1, Pad: 1}, true},
	{ops.ConvShape{N: 6, Cin: 16, H: 8, W: 8, Cout: 12, K: 3, Stride: 2, Pad: 1}, true},
	{ops.ConvShape{N: 9, Cin: 32, H: 16, W: 16, Cout: 32, K: 3, Stride: 1, Pad: 1}, true},
	// fashion32's 32 and 96 channels, small enough for the emulator's tensor-core runs (which leave the shape above
	// out): at bf16, kernel rows of 1.5 and 4.5 k-steps (forward, backward-data), so k-steps that change kernel rows
	// and a last k-step that ends halfway; Cout > 64, the 128-row tile.
	{ops.ConvShape{N: 2, Cin: 32, H: 5, W: 6, Cout: 96, K: 3, Stride: 1, Pad: 1}, true},
	// Cout = 65: the GPU's 128-row tile (Cout > 64) with 63 rows past the end; one image of 5x7 (odd, not square).
	{ops.ConvShape{N: 1, Cin: 3, H: 5, W: 7, Cout: 65, K: 3, Stride: 1, Pad: 1}, true},
	// Stride 2 on odd 9x9 with 3 images: 3·25 = 75 output pixels; 9·8 = 72 reduction terms, 2.25 tensor-core k-steps.
	{ops.ConvShape{N: 3, Cin: 8, H: 9, W: 9, Cout: 4, K: 3, Stride: 2, Pad: 1}, true},
	// 1x1 stride 2 on 7x5.
	{ops.ConvShape{N: 2, Cin: 5, H: 7, W: 5, Cout: 3, K: 1, Stride: 2, Pad: 0}, false},
	// Weight gradient split along its 3·15·13 = 585 pixels on the GPU: 2 chunks of 320 and 265.
	{ops.ConvShape{N: 3, Cin: 4, H: 15, W: 13, Cout: 6, K: 3, Stride: 1, Pad: 1}, true},
	// Padding after x only: diffusers' Downsample2D with padding 0 (pad (0, 1, 0, 1), then a stride-2 3×3 conv), on
	// even and odd sizes, and a stride-1 case that takes no fast path.
	{ops.ConvShape{N: 3, Cin: 8, H: 8, W: 8, Cout: 8, K: 3, Stride: 2, Pad: 0, PadEnd: 1}, true},
	{ops.ConvShape{N: 2, Cin: 3, H: 7, W: 5, Cout: 4, K: 3, Stride: 2, Pad: 0, PadEnd: 1}, false},
	{ops.ConvShape{N: 2, Cin: 3, H: 5, W: 6, Cout: 2, K: 3, Stride: 1, Pad: 1, PadEnd: 2}, true},
	// Forward split along k on the GPU: 9·64 = 576 terms in 2 chunks; Cin a multiple of 32.
	{ops.ConvShape{N: 2, Cin: 64, H: 6, W: 6, Cout: 8, K: 3, Stride: 1, Pad: 1}, true},
	// Backward-data split along k on the GPU (9·64 terms), of a stride-2 convolution (dy spread with zeros), with more
	// than 64 input channels (the 128-row tiles) and a channel count that is not a multiple of 32 (forward).
	{ops.ConvShape{N: 1, Cin: 72, H: 5, W: 5, Cout: 64, K: 3, Stride: 2, Pad: 1}, false},
	// 1x1 with more than 64 channels on both sides: the 128-row tiles of all three passes.
	{ops.ConvShape{N: 2, Cin: 72, H: 5, W: 5, Cout: 70, K: 1, Stride: 1, Pad: 0}, false},
	// Two row tiles of 128 and two column tiles of 128 in each pass (200 pixels; 9·16 = 144 weight columns).
	{ops.ConvShape{N: 2, Cin: 16, H: 10, W: 10, Cout: 130, K: 3, Stride: 1, Pad: 1}, true},
	// Kernel sizes other than 1 and 3 (the GPU's generic-K kernels): 2x2 with Cout > 64, 5x5 at stride 2.
	{ops.ConvShape{N: 1, Cin: 4, H: 7, W: 6, Cout: 66, K: 2, Stride: 1, Pad: 1}, true},
	{ops.ConvShape{N: 2, Cin: 3, H: 11, W: 9, Cout: 5, K: 5, Stride: 2, Pad: 2}, true},
	// Padding wider than the kernel reaches (P > K − 1): outputs of padding only.
	{ops.ConvShape{N: 2, Cin: 3, H: 4, W: 5, Cout: 4, K: 1, Stride: 1, Pad: 1}, true},
	// Padding after x on the GPU's larger paths: 128-row tiles (70 and 72 channels), forward and backward-data split
	// along k (9·72 = 648 terms in 2 chunks), the padded grid 9x9 for an 8x8 input, and dy rows past the end that
	// backward-data's packing drops (outputs that read the padding only).
	{ops.ConvShape{N: 1, Cin: 72, H: 8, W: 8, Cout: 70, K: 3, Stride: 2, Pad: 0, PadEnd: 1}, true},
	// 1x1 with padding after x only: a row and a column of outputs that are the bias alone.
	{ops.ConvShape{N: 2, Cin: 3, H: 4, W: 5, Cout: 4, K: 1, Stride: 1, Pad: 0, PadEnd: 1}, true},
}

func convCases() []Case {
	var cs []Case
	for _, cv := range convShapes {
		s, bias := cv.s, cv.bias
		name := fmt.Sprintf("Conv2D/%dx%dx%dx%d->%d/k%ds%dp%d/bias=%v", s.N, s.Cin, s.H, s.W, s.Cout, s.K, s.Stride, s.Pad, bias)
		if s.PadEnd != 0 {
			name = fmt.Sprintf("Conv2D/%dx%dx%dx%d->%d/k%ds%dp%d+%d/bias=%v", s.N, s.Cin, s.H, s.W, s.Cout, s.K, s.Stride, s.Pad, s.PadEnd, bias)
		}
		xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
		// The longest reduction: y over Cin·K·K, dx over Cout·K·K, dw and db over N·OH·OW.
		kmax := max(s.Cin*s.K*s.K, s.Cout*s.K*s.K, s.N*s.OutH()*s.OutW())
		cs = append(cs, Case{Name: name, Methods: []string{"Conv2D", "Conv2DBackward"}, Tol: tolGEMM, Why: whyGEMM,
			BF16: &BF16Band{K: kmax, Stages: 1, Amp: 1, Why: "db sums the float32 dy"},
			Conv: &s,
			Run: func(e *Env) {
				x := e.In("x", e.Randn(xn, 1))
				w := e.In("w", e.Randn(wn, 0.3))
				var b, db ops.Buf
				if bias {
					b = e.In("b", e.Randn(s.Cout, 1))
				}
				e.B.Conv2D(s, x, w, b, e.Out("y", yn))
				dy := e.In("dy", e.Randn(yn, 1))
				if bias {
					db = e.Acc("db", e.Randn(s.Cout, 1))
				}
				e.B.Conv2DBackward(s, x, w, dy, e.Acc("dx", e.Randn(xn, 1)), e.Acc("dw", e.Randn(wn, 1)), db)
				// Each gradient alone (the others nil).
				e.B.Conv2DBackward(s, x, w, dy, e.Acc("dx only", e.Randn(xn, 1)), nil, nil)
				e.B.Conv2DBackward(s, x, w, dy, nil, e.Acc("dw only", e.Randn(wn, 1)), nil)
				e.B.Conv2DBackward(s, x, w, dy, nil, nil, e.Acc("db only", e.Randn(s.Cout, 1)))
			}})
	}
	return cs
}

func normCases() []Case {
	var cs []Case
	for _, s := range []ops.NormShape{
		{N: 3, C: 6, HW: 35, G: 2, Eps: 1e-5},   // 3 channels per group
		{N: 1, C: 12, HW: 1, G: 4, Eps: 1e-6},   // 1×1 spatial
		{N: 2, C: 8, HW: 81, G: 8, Eps: 1e-5},   // one channel per group, 9×9
		{N: 4, C: 64, HW: 64, G: 32, Eps: 1e-5}, // a U-Net block
		{N: 3, C: 10, HW: 35, G: 2, Eps: 1e-5},  // 5 channels per group, 5x7
		{N: 1, C: 6, HW: 300, G: 3, Eps: 1e-5},  // groups of 600 elements: each GPU thread strides over several
		{N: 2, C: 3, HW: 1, G: 3, Eps: 1e-3},    // one element per group: x̂ = 0, y = beta
	} {
		n := s.N * s.C * s.HW
		cs = append(cs, Case{Name: fmt.Sprintf("GroupNorm/%+v", s), Methods: []string{"GroupNorm", "GroupNormBackward"},
			Tol: tolGEMM, Why: "means and variances over up to 2048 terms, then a 1/√ per group; " + whyGEMM,
			Run: func(e *Env) {
				x := e.In("x", e.shifted(n, 2, 0.5)) // non-zero mean: catches a one-pass variance
				gamma, beta := e.In("gamma", e.Randn(s.C, 1)), e.In("beta", e.Randn(s.C, 1))
				stats := e.Out("stats", 2*s.N*s.G)
				e.B.GroupNorm(s, x, gamma, beta, e.Out("y", n), stats)
				dy := e.In("dy", e.Randn(n, 1))
				e.B.GroupNormBackward(s, x, gamma, stats, dy, e.Acc("dx", e.Randn(n, 1)), e.Acc("dgamma", e.Randn(s.C, 1)), e.Acc("dbeta", e.Randn(s.C, 1)))
				e.B.GroupNormBackward(s, x, gamma, stats, dy, nil, e.Acc("dgamma only", e.Randn(s.C, 1)), nil)
				e.B.GroupNormBackward(s, x, gamma, stats, dy, e.Acc("dx only", e.Randn(n, 1)), nil, nil)
				e.B.GroupNormBackward(s, x, gamma, stats, dy, nil, nil, e.Acc("dbeta only", e.Randn(s.C, 1)))
			}})
		cs = append(cs, Case{Name: fmt.Sprintf("GroupNormSiLU/%+v", s), Methods: []string{"GroupNormSiLU", "GroupNormSiLUBackward"},
			Tol: tolGEMM, Why: "GroupNorm's sums, then exp per element; " + whyGEMM,
			Run: func(e *Env) { groupNormSiLU(e, s) }})
	}
	return cs
}

// groupNormSiLU runs the fused op and, on the same backend, the unfused composition it replaces
// (GroupNorm → SiLU; SiLUBackward into zeros → GroupNormBackward), which it must match within tolGEMM.
func groupNormSiLU(e *Env, s ops.NormShape) {
	n := s.N * s.C * s.HW
	x := e.In("x", e.shifted(n, 2, 0.5))
	// beta shifted so that the SiLU sees both signs well away from 0
	gamma, beta := e.In("gamma", e.Randn(s.C, 1.5)), e.In("beta", e.shifted(s.C, -0.5, 1))
	stats, y := e.Out("stats", 2*s.N*s.G), e.Out("y", n)
	e.B.GroupNormSiLU(s, x, gamma, beta, y, stats)
	dy := e.In("dy", e.Randn(n, 1))
	dx0, dg0, db0 := e.Randn(n, 1), e.Randn(s.C, 1), e.Randn(s.C, 1)
	dx, dg, db := e.Acc("dx", dx0), e.Acc("dgamma", dg0), e.Acc("dbeta", db0)
	e.B.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, dx, dg, db)
	e.B.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, nil, e.Acc("dgamma only", e.Randn(s.C, 1)), nil)
	e.B.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, e.Acc("dx only", e.Randn(n, 1)), nil, nil)
	e.B.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, nil, nil, e.Acc("dbeta only", e.Randn(s.C, 1)))

	// The unfused composition on the same backend.
	nu, su, yu := e.Out("unfused norm", n), e.Out("unfused stats", 2*s.N*s.G), e.Out("unfused y", n)
	e.B.GroupNorm(s, x, gamma, beta, nu, su)
	e.B.SiLU(nu, yu)
	gn := e.Acc("unfused norm grad", make([]float32, n))
	e.B.SiLUBackward(nu, dy, gn)
	dxu, dgu, dbu := e.Acc("unfused dx", dx0), e.Acc("unfused dgamma", dg0), e.Acc("unfused dbeta", db0)
	e.B.GroupNormBackward(s, x, gamma, su, gn, dxu, dgu, dbu)
	for _, p := range [][3]any{{"y", y, yu}, {"stats", stats, su}, {"dx", dx, dxu}, {"dgamma", dg, dgu}, {"dbeta", db, dbu}} {
		got, ref := e.download(p[1].(ops.Buf)), e.download(p[2].(ops.Buf))
		if err, bad := Compare(got, ref); bad != nil || err > tolGEMM {
			e.Errorf("GroupNormSiLU %+v: %s differs from the unfused GroupNorm → SiLU: normalized error %.3g (%v)", s, p[0], err, bad)
		}
	}
}

// shifted is Randn(n, scale) + shift.
func (e *Env) shifted(n int, shift, scale float32) []float32 {
	d := e.Randn(n, scale)
	for i := range d {
		d[i] += shift
	}
	return d
}

func linearCases() []Case {
	var cs []Case
	// n, in, out: across the GPU's 64-tiles on each side, a long reduction (in = 1000), and many rows (the GPU's
	// bias gradient cuts more than 256 rows into splits: 1100 rows are 5 splits of 220).
	for _, sh := range [][3]int{{1, 1, 1}, {3, 7, 5}, {64, 128, 512}, {65, 17, 70}, {2, 1000, 3}, {1, 3, 129}, {1100, 3, 70}} {
		n, in, out := sh[0], sh[1], sh[2]
		cs = append(cs, Case{Name: fmt.Sprintf("Linear/%dx%d->%d", n, in, out), Methods: []string{"Linear", "LinearBackward"},
			Tol: tolGEMM, Why: whyGEMM, BF16: &BF16Band{K: max(n, in, out), Stages: 1, Amp: 1, Why: "db sums the float32 dy"},
			Run: func(e *Env) {
				x, w := e.In("x", e.Randn(n*in, 1)), e.In("w", e.Randn(out*in, 0.2))
				e.B.Linear(n, in, out, x, w, e.In("b", e.Randn(out, 1)), e.Out("y", n*out))
				dy := e.In("dy", e.Randn(n*out, 1))
				e.B.LinearBackward(n, in, out, x, w, dy, e.Acc("dx", e.Randn(n*in, 1)), e.Acc("dw", e.Randn(out*in, 1)), e.Acc("db", e.Randn(out, 1)))
				e.B.LinearBackward(n, in, out, x, w, dy, nil, e.Acc("dw only", e.Randn(out*in, 1)), nil)
				e.B.LinearBackward(n, in, out, x, w, dy, e.Acc("dx only", e.Randn(n*in, 1)), nil, nil)
			}})
	}
	cs = append(cs, Case{Name: "TimestepEmbedding", Methods: []string{"TimestepEmbedding"}, Tol: tolEmb, Why: whyEmb,
		Run: func(e *Env) {
			// flip_sin_to_cos and downscale_freq_shift as diffusers' UNet2DModel takes them: (true, 0) is this
			// trainer's default, (false, 1) the original DDPM checkpoints' (google/ddpm-*), 0.5 a fractional shift.
			for _, v := range []struct {
				flip  bool
				shift float64
			}{{true, 0}, {false, 1}, {true, 1}, {false, 0.5}} {
				for _, dim := range []int{2, 7, 128} {
					n := 5
					t := []float32{0, 1, 17, 500, 999}
					s := ops.EmbedShape{N: n, Dim: dim, FlipSinToCos: v.flip, FreqShift: v.shift}
					if dim == 2 && v.shift >= 1 {
						continue // half − shift must be > 0
					}
					e.B.TimestepEmbedding(s, e.In("t", t), e.Out(fmt.Sprintf("y dim %d flip %v shift %g", dim, v.flip, v.shift), n*dim))
				}
			}
		}})
	return cs
}

func layoutCases() []Case {
	var cs []Case
	for _, sh := range [][3]int{{1, 1, 1}, {6, 5, 7}, {128, 16, 16}} { // nc, h, w
		nc, h, w := sh[0], sh[1], sh[2]
		cs = append(cs, Case{Name: fmt.Sprintf("Upsample2x/%dx%dx%d", nc, h, w), Methods: []string{"Upsample2x", "Upsample2xBackward"},
			Tol: tolExact, Why: whyExact,
			Run: func(e *Env) {
				e.B.Upsample2x(nc, h, w, e.In("x", e.Randn(nc*h*w, 1)), e.Out("y", 4*nc*h*w))
				e.B.Upsample2xBackward(nc, h, w, e.In("dy", e.Randn(4*nc*h*w, 1)), e.Acc("dx", e.Randn(nc*h*w, 1)))
			}})
	}
	for _, sh := range [][4]int{{1, 1, 1, 1}, {3, 2, 5, 35}, {8, 64, 128, 256}, {2, 0, 3, 5}} { // n, ca, cb, hw; ca = 0: a is empty
		n, ca, cb, hw := sh[0], sh[1], sh[2], sh[3]
		cs = append(cs, Case{Name: fmt.Sprintf("Concat/%dx(%d+%d)x%d", n, ca, cb, hw), Methods: []string{"Concat", "ConcatBackward"},
			Tol: tolExact, Why: whyExact,
			Run: func(e *Env) {
				e.B.Concat(n, ca, cb, hw, e.In("a", e.Randn(n*ca*hw, 1)), e.In("b", e.Randn(n*cb*hw, 1)), e.Out("y", n*(ca+cb)*hw))
				dy := e.In("dy", e.Randn(n*(ca+cb)*hw, 1))
				e.B.ConcatBackward(n, ca, cb, hw, dy, e.Acc("da", e.Randn(n*ca*hw, 1)), e.Acc("db", e.Randn(n*cb*hw, 1)))
				e.B.ConcatBackward(n, ca, cb, hw, dy, nil, e.Acc("db only", e.Randn(n*cb*hw, 1)))
				e.B.ConcatBackward(n, ca, cb, hw, dy, e.Acc("da only", e.Randn(n*ca*hw, 1)), nil)
			}})
	}
	// n, c, hw, ld: p's rows ld apart (ld > c: one resnet's columns of the U-Net's stacked time projections; the
	// accumulated dp's elements between the rows must stay as they were).
	for _, sh := range [][4]int{{1, 1, 1, 1}, {3, 6, 35, 6}, {3, 6, 35, 11}, {16, 64, 256, 64}, {4, 5, 9, 23}, {2, 3, 1000, 3}} {
		n, c, hw, ld := sh[0], sh[1], sh[2], sh[3]
		tol, why := tolExact, "AddChannel is one rounding; ChannelSum sums HW ≤ 256 terms: "+whyReduce
		if hw > 256 {
			tol, why = tolReduce, fmt.Sprintf("AddChannel is one rounding; ChannelSum sums %d terms per row (in a 32-lane order on a GPU): %s", hw, whyReduce)
		}
		pn := ops.RowsLen(n, c, ld)
		cs = append(cs, Case{Name: fmt.Sprintf("AddChannel/%dx%dx%d/ld=%d", n, c, hw, ld), Methods: []string{"AddChannel", "ChannelSum"},
			Tol: tol, Why: why,
			Run: func(e *Env) {
				x, p := e.In("x", e.Randn(n*c*hw, 1)), e.In("p", e.Randn(pn, 1))
				e.B.AddChannel(n, c, hw, ld, x, p, e.Out("y", n*c*hw))
				y := e.Acc("y aliasing x", e.Randn(n*c*hw, 1))
				e.B.AddChannel(n, c, hw, ld, y, p, y)
				e.B.ChannelSum(n, c, hw, ld, e.In("dy", e.Randn(n*c*hw, 1)), e.Acc("dp", e.Randn(pn, 1)))
			}})
	}
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {4, 33, 70}, {2, 128, 256}, {2, 65, 33}} { // n, r, c
		n, r, c := sh[0], sh[1], sh[2]
		cs = append(cs, Case{Name: fmt.Sprintf("Transpose/%dx%dx%d", n, r, c), Methods: []string{"Transpose", "TransposeBackward"},
			Tol: tolExact, Why: whyExact,
			Run: func(e *Env) {
				e.B.Transpose(n, r, c, e.In("x", e.Randn(n*r*c, 1)), e.Out("y", n*r*c))
				e.B.TransposeBackward(n, r, c, e.In("dy", e.Randn(n*r*c, 1)), e.Acc("dx", e.Randn(n*r*c, 1)))
			}})
	}
	return cs
}

func attentionCases() []Case {
	var cs []Case
	for _, a := range []struct {
		s     ops.AttnShape
		scale float32 // of q and k
	}{
		{ops.AttnShape{N: 1, L: 1, Heads: 1, D: 1}, 1},
		{ops.AttnShape{N: 1, L: 5, Heads: 1, D: 8}, 1},
		{ops.AttnShape{N: 3, L: 9, Heads: 2, D: 4}, 1},
		{ops.AttnShape{N: 2, L: 64, Heads: 2, D: 32}, 1},
		{ops.AttnShape{N: 1, L: 70, Heads: 3, D: 5}, 2}, // L across a GPU 64-tile, D odd, three interleaved heads
		{ops.AttnShape{N: 3, L: 2, Heads: 1, D: 65}, 2}, // D across a 64-tile
	} {
		s := a.s
		n := s.N * s.L * s.Heads * s.D
		cs = append(cs, Case{Name: fmt.Sprintf("Attention/%+v", s), Methods: []string{"Attention", "AttentionBackward"},
			Tol: tolGEMM, Why: "softmax (float32 exp) between two GEMMs; " + whyGEMM,
			// The logits S = q·kᵀ/√D have standard deviation scale² (q, k of standard deviation scale).
			BF16: &BF16Band{K: max(s.L, s.D), Stages: 2, Amp: 1 + float64(a.scale*a.scale),
				Why: "bf16(q)·bf16(k)ᵀ, softmax in float32, bf16(P)·bf16(v); backward through bf16(dS)"},
			Run: func(e *Env) {
				q, k, v := e.In("q", e.Randn(n, a.scale)), e.In("k", e.Randn(n, a.scale)), e.In("v", e.Randn(n, 1))
				p := e.Out("p", s.N*s.Heads*s.L*s.L)
				e.B.Attention(s, q, k, v, e.Out("o", n), p)
				do := e.In("do", e.Randn(n, 1))
				e.B.AttentionBackward(s, q, k, v, p, do, e.Acc("dq", e.Randn(n, 1)), e.Acc("dk", e.Randn(n, 1)), e.Acc("dv", e.Randn(n, 1)))
				e.B.AttentionBackward(s, q, k, v, p, do, nil, nil, e.Acc("dv only", e.Randn(n, 1)))
				e.B.AttentionBackward(s, q, k, v, p, do, nil, e.Acc("dk only", e.Randn(n, 1)), nil)
				e.B.AttentionBackward(s, q, k, v, p, do, e.Acc("dq only", e.Randn(n, 1)), nil, nil)
			}})
	}
	return append(cs, Case{Name: "Attention/large logits", Methods: []string{"Attention"}, Tol: tolGEMM,
		BF16: &BF16Band{K: 9, Stages: 2, Amp: 2, Why: "logits of standard deviation ~400 saturate the softmax (P nearly one-hot), " +
			"so a logit's error moves P little: amplification 2, not 1 + 400"},
		Why: "rows of logits near ±400: without the max subtraction exp overflows to Inf and P is NaN; " + whyGEMM,
		Run: func(e *Env) {
			s := ops.AttnShape{N: 2, L: 9, Heads: 2, D: 4}
			n := s.N * s.L * s.Heads * s.D
			e.B.Attention(s, e.In("q", e.Randn(n, 20)), e.In("k", e.Randn(n, 20)), e.In("v", e.Randn(n, 1)),
				e.Out("o", n), e.Out("p", s.N*s.Heads*s.L*s.L))
		}})
}

func lossCases() []Case {
	var cs []Case
	for _, n := range reduceSizes {
		cs = append(cs,
			Case{Name: fmt.Sprintf("MSE/%d", n), Methods: []string{"MSE", "MSEBackward"}, Tol: tolSum64, Why: whySum64,
				Run: func(e *Env) {
					a, b := e.In("a", e.Randn(n, 1)), e.In("b", e.Randn(n, 1))
					e.B.MSE(a, b, e.Out("loss", 1))
					e.B.MSEBackward(0.25, a, b, e.Acc("da", e.Randn(n, 1e-3)))
					e.B.MSEBackward(0.5, a, b, e.Acc("da, scale 0.5", e.Uniform(n, -1, 1)))
				}},
			Case{Name: fmt.Sprintf("SumSquares/%d", n), Methods: []string{"SumSquares"}, Tol: tolSum64, Why: whySum64,
				Run: func(e *Env) { e.B.SumSquares(e.In("x", e.Randn(n, 1)), e.Out("out", 1)) }},
		)
	}
	return cs
}

func optimCases() []Case {
	var cs []Case
	adam := func(step, n int) Case {
		return Case{Name: fmt.Sprintf("AdamWStep/step%d/%d", step, n), Methods: []string{"AdamWStep"}, Tol: tolAdam, Why: whyAdam,
			Run: func(e *Env) {
				rc1, rc2 := 1/(1-math.Pow(0.9, float64(step))), 1/(1-math.Pow(0.999, float64(step)))
				h := ops.AdamW{LR: 1e-3, Decay: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, RC1: float32(rc1), RC2: float32(rc2), GradScale: 0.5}
				v := e.Uniform(n, 0, 1e-2) // second moments are non-negative
				e.B.AdamWStep(h, e.Acc("p", e.Randn(n, 1)), e.In("g", e.Randn(n, 0.1)), e.Acc("m", e.Randn(n, 0.01)), e.Acc("v", v))
			}}
	}
	for _, step := range []int{1, 10, 1000} {
		for _, n := range []int{5, 70001} {
			cs = append(cs, adam(step, n))
		}
	}
	for _, n := range elementwiseSizes {
		cs = append(cs, adam(7, n))
	}
	return cs
}

// schedule builds a linear-β DDPM schedule of T steps (float64 on the host, as package
// diffusion does) and uploads it as inputs; σ_t is √β̃_t (the posterior's) if
// sigmaTilde, √β_t otherwise.
func (e *Env) schedule(T int, sigmaTilde bool) *ops.Schedule {
	tabs := make([][]float32, 8)
	for i := range tabs {
		tabs[i] = make([]float32, T)
	}
	abPrev := 1.0
	ab := 1.0
	for t := 0; t < T; t++ {
		beta := 1e-4 + (0.02-1e-4)*float64(t)/float64(T-1)
		abPrev = ab
		ab *= 1 - beta
		sigma := math.Sqrt(beta)
		if sigmaTilde {
			sigma = math.Sqrt(beta * (1 - abPrev) / (1 - ab))
		}
		vals := []float64{math.Sqrt(ab), math.Sqrt(1 - ab), math.Sqrt(1 / ab), math.Sqrt(1/ab - 1),
			math.Sqrt(abPrev) * beta / (1 - ab), math.Sqrt(1-beta) * (1 - abPrev) / (1 - ab), sigma, ab}
		for i, v := range vals {
			tabs[i][t] = float32(v)
		}
	}
	return &ops.Schedule{T: T,
		SqrtAlphaBar: e.In("sqrtAlphaBar", tabs[0]), SqrtOneMinusAlphaBar: e.In("sqrtOneMinusAlphaBar", tabs[1]),
		SqrtRecipAlphaBar: e.In("sqrtRecipAlphaBar", tabs[2]), SqrtRecipM1AlphaBar: e.In("sqrtRecipM1AlphaBar", tabs[3]),
		PosteriorCoef1: e.In("posteriorCoef1", tabs[4]), PosteriorCoef2: e.In("posteriorCoef2", tabs[5]),
		Sigma: e.In("sigma", tabs[6]), AlphaBar: e.In("alphaBar", tabs[7])}
}

// timesteps returns n random timesteps in [0, T), the first 0 and the last T−1 when n ≥ 2.
func (e *Env) timesteps(n, T int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(e.rnd.Intn(T))
	}
	if n >= 2 {
		v[0], v[n-1] = 0, float32(T-1)
	}
	return v
}

func diffusionCases() []Case {
	var cs []Case
	for _, sh := range []struct {
		T, n, d int
		ts      []float32 // nil: random, with 0 and T−1
	}{
		{50, 5, 3 * 7 * 7, []float32{0, 1, 17, 48, 49}}, // t = 0 drops the noise term of the posterior
		{1000, 1, 1, nil},
		{1000, 3, 257, nil},
		{1000, 8, 3072, nil},
	} {
		T, n, d := sh.T, sh.n, sh.d
		ts := func(e *Env) ops.Buf {
			if sh.ts != nil {
				return e.In("t", sh.ts)
			}
			return e.In("t", e.timesteps(n, T))
		}
		name := fmt.Sprintf("T%d/%dx%d", T, n, d)
		cs = append(cs,
			Case{Name: "QSample/" + name, Methods: []string{"QSample"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) {
					// eps takes the sign of x0: the two terms never cancel, so the bound holds element by element
					// (a one-element output included) whatever the draw.
					x0, eps := e.Uniform(n*d, -1, 1), e.Randn(n*d, 1)
					for i := range eps {
						eps[i] = float32(math.Copysign(float64(eps[i]), float64(x0[i])))
					}
					sch := e.schedule(T, false)
					e.B.QSample(sch, n, d, ts(e), e.In("x0", x0), e.In("eps", eps), e.Out("xt", n*d))
				}},
			Case{Name: "Posterior/" + name, Methods: []string{"Posterior"}, Tol: tolMath,
				Why: "x̂0 = √(1/ᾱ)·x_t − √(1/ᾱ−1)·ε̂ cancels: up to 1/√ᾱ_t times the rounding of each term",
				Run: func(e *Env) {
					t, xt, eps, z := ts(e), e.In("xt", e.Randn(n*d, 1)), e.In("epsHat", e.Randn(n*d, 1)), e.In("z", e.Randn(n*d, 1))
					for _, tilde := range []bool{true, false} {
						sch := e.schedule(T, tilde)
						e.B.Posterior(sch, n, d, false, t, xt, eps, z, e.Out(fmt.Sprintf("out σ̃=%v", tilde), n*d))
						e.B.Posterior(sch, n, d, true, t, xt, eps, z, e.Out(fmt.Sprintf("out clipped σ̃=%v", tilde), n*d))
					}
				}},
			Case{Name: fmt.Sprintf("DDIMStep/%d", n*d), Methods: []string{"DDIMStep"}, Tol: tolMath, Why: "x̂0 and ε̂ recomputed from it cancel: a few roundings amplified by 1/√(1−ᾱ)",
				Run: func(e *Env) {
					m := n * d
					xt, eps, z := e.In("xt", e.Randn(m, 1)), e.In("epsHat", e.Randn(m, 1)), e.In("z", e.Randn(m, 1))
					for _, c := range []struct {
						ab, abp, eta float32
						clip         bool
					}{{0.5, 0.7, 0, false}, {0.5, 0.7, 1, true}, {0.05, 0.2, 0.5, true}, {0.9, 1, 1, false}, {0.9, 1, 0, true},
						{0.3, 0.45, 0.5, false}, {0.3, 0.45, 0.5, true}} {
						e.B.DDIMStep(c.ab, c.abp, c.eta, c.clip, xt, eps, z, e.Out(fmt.Sprintf("out %+v", c), m))
					}
					for _, clip := range []bool{false, true} { // to t = −1 (ᾱ_prev = 1), η = 0, out = z
						zz := e.Acc(fmt.Sprintf("z overwritten in place, clip %v", clip), e.Randn(m, 1))
						e.B.DDIMStep(0.95, 1, 0, clip, xt, eps, zz, zz)
					}
				}},
			Case{Name: fmt.Sprintf("SamplerStep/%d", n*d), Methods: []string{"SamplerStep"}, Tol: tolMath,
				Why: "five float32 products summed; x̂0 = RA·x − RM·e cancels terms up to ~3·|x| (RA ≤ √10 here)",
				Run: func(e *Env) {
					m := n * d
					x, eps, z, p := e.In("x", e.Randn(m, 1.5)), e.In("e", e.Randn(m, 1)), e.In("z", e.Randn(m, 1)), e.In("p", e.Randn(m, 1))
					for _, c := range []ops.StepCoef{
						{RA: 1.4, RM: 0.98, Clip: true, C0: 0.8, CE: 0.55, CZ: 0.2},             // DDIM, ε̂ kept, clipped x̂0
						{RA: 3.1623, RM: 3, CX: 0.41, C0: 0.7, CP: -0.12},                       // DPM-Solver++(2M), m1 in p
						{RA: 1, RM: 3, Clip: true, CX: 0.6, C0: 0.4},                            // Euler in the VE state
						{RA: 1, RM: 2.5, CX: -0.3, C0: 0.3, CP: 1},                              // Heun corrector
						{RA: 1, RM: 0.7, CX: 0.25, C0: 0.75, CZ: 1.1},                           // Euler–Maruyama
						{RA: 2, RM: 1, CX: 1, C0: -1, CE: 0.5, CZ: 0.25, CP: 0.125, Clip: true}, // every term
					} {
						e.B.SamplerStep(c, x, eps, z, p, e.Out(fmt.Sprintf("out %+v", c), m))
					}
					// Operands whose coefficient is 0 are not read: nil buffers.
					e.B.SamplerStep(ops.StepCoef{CX: 0.3}, x, nil, nil, nil, e.Out("scale only", m))
					e.B.SamplerStep(ops.StepCoef{CX: 1, CZ: 0.5}, x, nil, z, nil, e.Out("noise only", m))
					// In place: out aliases x.
					a := e.Acc("in place", e.Randn(m, 1))
					e.B.SamplerStep(ops.StepCoef{RA: 1.2, RM: 0.6, CX: 0.5, C0: 0.5, CE: 0.1}, a, eps, nil, nil, a)
				}},
		)
	}
	return cs
}
