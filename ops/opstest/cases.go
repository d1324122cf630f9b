package opstest

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Tolerances, for a float32 backend against a float64 (or float32) reference. Each
// case names one; the reason travels with it into failure messages.
const (
	// tolExact: copies and sums of at most four terms; float32 rounding alone is 2^-24 ≈ 6e-8.
	tolExact = 1e-6
	whyExact = "a few float32 roundings per element (2^-24 ≈ 6e-8 each)"
	// tolMath: one exp/tanh/sqrt per element; device maths is within a few ulp.
	tolMath = 1e-5
	whyMath = "float32 transcendental functions are within a few ulp"
	// tolGEMM: dot products of up to ~1000 float32 terms, summed in any order.
	tolGEMM = 3e-5
	whyGEMM = "float32 sums of up to ~1000 products in an order of the backend's choosing (error ~√n·2^-24)"
	// tolReduce: one long reduction (float32 or float64 accumulation).
	tolReduce = 1e-5
	whyReduce = "a reduction over ~10^4 terms: float32 tree order gives ~log2(n)·2^-24"
	// tolEmb: cos/sin of t·f with t up to 999 in float32.
	tolEmb = 2e-4
	whyEmb = "cos/sin of t·f_i for t < 1000: rounding the float32 argument alone costs up to 1000·2^-24 ≈ 6e-5 rad"
	// tolAdam: √v̂ and a division per element, on values after one step.
	tolAdam = 1e-5
	whyAdam = "a sqrt and a division per element in float32; bias corrections rounded to float32"
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
	for _, n := range []int{1, 1000, 70001} { // 70001: both sides of a 64k parallel threshold, odd
		cs = append(cs,
			Case{Name: fmt.Sprintf("Add/%d", n), Methods: []string{"Add"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) {
					e.B.Add(e.In("a", e.Randn(n, 1)), e.In("b", e.Randn(n, 1)), e.Out("y", n))
					y := e.Acc("y aliasing a", e.Randn(n, 1)) // y = y + b
					e.B.Add(y, e.In("b2", e.Randn(n, 1)), y)
				}},
			Case{Name: fmt.Sprintf("Axpy/%d", n), Methods: []string{"Axpy"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) { e.B.Axpy(-0.37, e.In("x", e.Randn(n, 1)), e.Acc("y", e.Randn(n, 1))) }},
			Case{Name: fmt.Sprintf("Scale/%d", n), Methods: []string{"Scale"}, Tol: tolExact, Why: whyExact,
				Run: func(e *Env) { e.B.Scale(1.7, e.Acc("x", e.Randn(n, 1))) }},
			Case{Name: fmt.Sprintf("SiLU/%d", n), Methods: []string{"SiLU", "SiLUBackward"}, Tol: tolMath, Why: whyMath,
				Run: func(e *Env) {
					x := e.In("x", e.Randn(n, 3))
					e.B.SiLU(x, e.Out("y", n))
					e.B.SiLUBackward(x, e.In("dy", e.Randn(n, 1)), e.Acc("dx", e.Randn(n, 1)))
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
			Case{Name: fmt.Sprintf("Normal/%d", n), Methods: []string{"Normal"}, Tol: tolMath, Why: "the same Philox bits; Box-Muller's log/sin/cos in float32 within a few ulp",
				Run: func(e *Env) {
					e.B.Normal(12345, 3, 0, e.Out("y offset 0", n))
					e.B.Normal(12345, 3, 4*uint64(n)+3, e.Out("y offset 4n+3", n)) // offset not a multiple of 4
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
	// Padding after x only: diffusers' Downsample2D with padding 0 (pad (0, 1, 0, 1), then a stride-2 3×3 conv), on
	// even and odd sizes, and a stride-1 case that takes no fast path.
	{ops.ConvShape{N: 3, Cin: 8, H: 8, W: 8, Cout: 8, K: 3, Stride: 2, Pad: 0, PadEnd: 1}, true},
	{ops.ConvShape{N: 2, Cin: 3, H: 7, W: 5, Cout: 4, K: 3, Stride: 2, Pad: 0, PadEnd: 1}, false},
	{ops.ConvShape{N: 2, Cin: 3, H: 5, W: 6, Cout: 2, K: 3, Stride: 1, Pad: 1, PadEnd: 2}, true},
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
		cs = append(cs, Case{Name: name, Methods: []string{"Conv2D", "Conv2DBackward"}, Tol: tolGEMM, Why: whyGEMM,
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
			}})
	}
	return cs
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
	for _, sh := range [][3]int{{1, 1, 1}, {3, 7, 5}, {64, 128, 512}} {
		n, in, out := sh[0], sh[1], sh[2]
		cs = append(cs, Case{Name: fmt.Sprintf("Linear/%dx%d->%d", n, in, out), Methods: []string{"Linear", "LinearBackward"},
			Tol: tolGEMM, Why: whyGEMM,
			Run: func(e *Env) {
				x, w := e.In("x", e.Randn(n*in, 1)), e.In("w", e.Randn(out*in, 0.2))
				e.B.Linear(n, in, out, x, w, e.In("b", e.Randn(out, 1)), e.Out("y", n*out))
				dy := e.In("dy", e.Randn(n*out, 1))
				e.B.LinearBackward(n, in, out, x, w, dy, e.Acc("dx", e.Randn(n*in, 1)), e.Acc("dw", e.Randn(out*in, 1)), e.Acc("db", e.Randn(out, 1)))
				e.B.LinearBackward(n, in, out, x, w, dy, nil, e.Acc("dw only", e.Randn(out*in, 1)), nil)
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
	for _, sh := range [][4]int{{1, 1, 1, 1}, {3, 2, 5, 35}, {8, 64, 128, 256}} { // n, ca, cb, hw
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
	for _, sh := range [][3]int{{1, 1, 1}, {3, 6, 35}, {16, 64, 256}} { // n, c, hw
		n, c, hw := sh[0], sh[1], sh[2]
		cs = append(cs, Case{Name: fmt.Sprintf("AddChannel/%dx%dx%d", n, c, hw), Methods: []string{"AddChannel", "ChannelSum"},
			Tol: tolExact, Why: "AddChannel is one rounding; ChannelSum sums HW ≤ 256 terms: " + whyReduce,
			Run: func(e *Env) {
				x, p := e.In("x", e.Randn(n*c*hw, 1)), e.In("p", e.Randn(n*c, 1))
				e.B.AddChannel(n, c, hw, x, p, e.Out("y", n*c*hw))
				y := e.Acc("y aliasing x", e.Randn(n*c*hw, 1))
				e.B.AddChannel(n, c, hw, y, p, y)
				e.B.ChannelSum(n, c, hw, e.In("dy", e.Randn(n*c*hw, 1)), e.Acc("dp", e.Randn(n*c, 1)))
			}})
	}
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {4, 33, 70}, {2, 128, 256}} { // n, r, c
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
	for _, s := range []ops.AttnShape{
		{N: 1, L: 1, Heads: 1, D: 1},
		{N: 1, L: 5, Heads: 1, D: 8},
		{N: 3, L: 9, Heads: 2, D: 4},
		{N: 2, L: 64, Heads: 2, D: 32},
	} {
		n := s.N * s.L * s.Heads * s.D
		cs = append(cs, Case{Name: fmt.Sprintf("Attention/%+v", s), Methods: []string{"Attention", "AttentionBackward"},
			Tol: tolGEMM, Why: "softmax (float32 exp) between two GEMMs; " + whyGEMM,
			Run: func(e *Env) {
				q, k, v := e.In("q", e.Randn(n, 1)), e.In("k", e.Randn(n, 1)), e.In("v", e.Randn(n, 1))
				p := e.Out("p", s.N*s.Heads*s.L*s.L)
				e.B.Attention(s, q, k, v, e.Out("o", n), p)
				do := e.In("do", e.Randn(n, 1))
				e.B.AttentionBackward(s, q, k, v, p, do, e.Acc("dq", e.Randn(n, 1)), e.Acc("dk", e.Randn(n, 1)), e.Acc("dv", e.Randn(n, 1)))
				e.B.AttentionBackward(s, q, k, v, p, do, nil, nil, e.Acc("dv only", e.Randn(n, 1)))
				e.B.AttentionBackward(s, q, k, v, p, do, e.Acc("dq only", e.Randn(n, 1)), nil, nil)
			}})
	}
	return cs
}

func lossCases() []Case {
	var cs []Case
	for _, n := range []int{1, 999, 100003} {
		cs = append(cs,
			Case{Name: fmt.Sprintf("MSE/%d", n), Methods: []string{"MSE", "MSEBackward"}, Tol: tolReduce, Why: whyReduce,
				Run: func(e *Env) {
					a, b := e.In("a", e.Randn(n, 1)), e.In("b", e.Randn(n, 1))
					e.B.MSE(a, b, e.Out("loss", 1))
					e.B.MSEBackward(0.25, a, b, e.Acc("da", e.Randn(n, 1e-3)))
				}},
			Case{Name: fmt.Sprintf("SumSquares/%d", n), Methods: []string{"SumSquares"}, Tol: tolReduce, Why: whyReduce,
				Run: func(e *Env) { e.B.SumSquares(e.In("x", e.Randn(n, 1)), e.Out("out", 1)) }},
		)
	}
	return cs
}

func optimCases() []Case {
	var cs []Case
	for _, step := range []int{1, 10, 1000} {
		for _, n := range []int{5, 70001} {
			cs = append(cs, Case{Name: fmt.Sprintf("AdamWStep/step%d/%d", step, n), Methods: []string{"AdamWStep"}, Tol: tolAdam, Why: whyAdam,
				Run: func(e *Env) {
					rc1, rc2 := 1/(1-math.Pow(0.9, float64(step))), 1/(1-math.Pow(0.999, float64(step)))
					h := ops.AdamW{LR: 1e-3, Decay: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, RC1: float32(rc1), RC2: float32(rc2), GradScale: 0.5}
					v := e.Uniform(n, 0, 1e-2) // second moments are non-negative
					e.B.AdamWStep(h, e.Acc("p", e.Randn(n, 1)), e.In("g", e.Randn(n, 0.1)), e.Acc("m", e.Randn(n, 0.01)), e.Acc("v", v))
				}})
		}
	}
	return cs
}

// schedule builds a linear-β DDPM schedule of T steps (float64 on the host, as package
// diffusion does) and uploads it as inputs.
func (e *Env) schedule(T int) *ops.Schedule {
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
		post := beta * (1 - abPrev) / (1 - ab)
		vals := []float64{math.Sqrt(ab), math.Sqrt(1 - ab), math.Sqrt(1 / ab), math.Sqrt(1/ab - 1),
			math.Sqrt(abPrev) * beta / (1 - ab), math.Sqrt(1-beta) * (1 - abPrev) / (1 - ab), math.Sqrt(post), ab}
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

func diffusionCases() []Case {
	const T = 50
	n, d := 5, 3*7*7
	ts := []float32{0, 1, 17, 48, 49} // t = 0 drops the noise term of the posterior
	return []Case{
		{Name: "QSample", Methods: []string{"QSample"}, Tol: tolExact, Why: whyExact,
			Run: func(e *Env) {
				sch := e.schedule(T)
				e.B.QSample(sch, n, d, e.In("t", ts), e.In("x0", e.Uniform(n*d, -1, 1)), e.In("eps", e.Randn(n*d, 1)), e.Out("xt", n*d))
			}},
		{Name: "Posterior", Methods: []string{"Posterior"}, Tol: tolMath,
			Why: "x̂0 = √(1/ᾱ)·x_t − √(1/ᾱ−1)·ε̂ cancels: up to 1/√ᾱ_49 ≈ 1.3 times the rounding of each term",
			Run: func(e *Env) {
				sch := e.schedule(T)
				t, xt, eps, z := e.In("t", ts), e.In("xt", e.Randn(n*d, 1)), e.In("epsHat", e.Randn(n*d, 1)), e.In("z", e.Randn(n*d, 1))
				e.B.Posterior(sch, n, d, false, t, xt, eps, z, e.Out("out", n*d))
				e.B.Posterior(sch, n, d, true, t, xt, eps, z, e.Out("out clipped", n*d))
			}},
		{Name: "DDIMStep", Methods: []string{"DDIMStep"}, Tol: tolMath, Why: "x̂0 and ε̂ recomputed from it cancel: a few roundings amplified by 1/√(1−ᾱ)",
			Run: func(e *Env) {
				m := 2*3*5*5 + 1
				xt, eps, z := e.In("xt", e.Randn(m, 1)), e.In("epsHat", e.Randn(m, 1)), e.In("z", e.Randn(m, 1))
				for _, c := range []struct {
					ab, abp, eta float32
					clip         bool
				}{{0.5, 0.7, 0, false}, {0.5, 0.7, 1, true}, {0.05, 0.2, 0.5, true}, {0.9, 1, 1, false}, {0.9, 1, 0, true}} {
					e.B.DDIMStep(c.ab, c.abp, c.eta, c.clip, xt, eps, z, e.Out(fmt.Sprintf("out %+v", c), m))
				}
			}},
	}
}
