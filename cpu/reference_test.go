package cpu

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// The forward passes against plain loops written from the formulas in ops.go, on the
// float64 backend. (The gradient checks tie each backward to its forward and the
// conformance suite ties float32 to float64; this ties the forwards to the spec.)

const refTol = 1e-12

func randF64(r *rand.Rand, n int) []float64 {
	d := make([]float64, n)
	for i := range d {
		d[i] = r.NormFloat64()
	}
	return d
}

func up(be *Backend[float64], d []float64) ops.Buf {
	b := be.Alloc(len(d))
	copy(Data[float64](b), d)
	return b
}

func expectClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(got[i] - want[i]); !(d <= tol*max(1, math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %.15g, want %.15g", what, i, got[i], want[i])
		}
	}
}

// withColBlock runs f with the im2col block budget set to bytes (1: one output row
// per block, so that multi-block paths run on small shapes).
func withColBlock(bytes int, f func()) {
	old := colBlockBytes
	colBlockBytes = bytes
	defer func() { colBlockBytes = old }()
	f()
}

// withShiftMin runs f with shiftMinHW set to hw (1: every stride-1 "same" 3×3
// convolution takes the shifted-GEMM path of convshift.go).
func withShiftMin(hw int, f func()) {
	old := shiftMinHW
	shiftMinHW = hw
	defer func() { shiftMinHW = old }()
	f()
}

func TestConv2DMatchesLoops(t *testing.T) {
	for _, budget := range []int{colBlockBytes, 1, 500, 2 * 27 * 35 * 8} { // default, rows, mixed, 2 samples of 3×5×7
		t.Run(fmt.Sprintf("colBlockBytes=%d", budget), func(t *testing.T) {
			withColBlock(budget, func() { testConv2DMatchesLoops(t) })
		})
	}
	// The shifted-GEMM path (convshift.go): groups of all samples, one sample, and two
	// samples (4 channels of the 6×8 grid of a 5×7 image, float64).
	for _, budget := range []int{colBlockBytes, 1, 2 * 4 * 6 * 8 * 8} {
		t.Run(fmt.Sprintf("shifted/colBlockBytes=%d", budget), func(t *testing.T) {
			withShiftMin(1, func() { withColBlock(budget, func() { testConv2DMatchesLoops(t) }) })
		})
	}
}

func testConv2DMatchesLoops(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	be := New64()
	for _, s := range []ops.ConvShape{
		{N: 3, Cin: 3, H: 5, W: 7, Cout: 4, K: 3, Stride: 1, Pad: 1},
		{N: 1, Cin: 2, H: 9, W: 9, Cout: 3, K: 3, Stride: 2, Pad: 1},
		{N: 2, Cin: 2, H: 6, W: 5, Cout: 3, K: 3, Stride: 2, Pad: 0},
		{N: 2, Cin: 5, H: 4, W: 3, Cout: 2, K: 1, Stride: 1, Pad: 0},
		{N: 2, Cin: 2, H: 5, W: 5, Cout: 2, K: 1, Stride: 2, Pad: 1},
		{N: 1, Cin: 1, H: 2, W: 2, Cout: 1, K: 3, Stride: 1, Pad: 1},
		// Zeros after x only (diffusers' Downsample2D with padding 0), even and odd sizes, and stride 1.
		{N: 2, Cin: 2, H: 6, W: 8, Cout: 3, K: 3, Stride: 2, Pad: 0, PadEnd: 1},
		{N: 1, Cin: 3, H: 7, W: 5, Cout: 2, K: 3, Stride: 2, Pad: 0, PadEnd: 1},
		{N: 2, Cin: 2, H: 4, W: 5, Cout: 2, K: 3, Stride: 1, Pad: 1, PadEnd: 2},
	} {
		x, w, b := randF64(r, s.N*s.Cin*s.H*s.W), randF64(r, s.Cout*s.Cin*s.K*s.K), randF64(r, s.Cout)
		oh, ow := s.OutH(), s.OutW()
		want := make([]float64, s.N*s.Cout*oh*ow)
		for n := 0; n < s.N; n++ {
			for o := 0; o < s.Cout; o++ {
				for i := 0; i < oh; i++ {
					for j := 0; j < ow; j++ {
						v := b[o]
						for c := 0; c < s.Cin; c++ {
							for p := 0; p < s.K; p++ {
								for q := 0; q < s.K; q++ {
									ih, iw := i*s.Stride+p-s.Pad, j*s.Stride+q-s.Pad
									if ih >= 0 && ih < s.H && iw >= 0 && iw < s.W {
										v += w[((o*s.Cin+c)*s.K+p)*s.K+q] * x[((n*s.Cin+c)*s.H+ih)*s.W+iw]
									}
								}
							}
						}
						want[((n*s.Cout+o)*oh+i)*ow+j] = v
					}
				}
			}
		}
		y := be.Alloc(len(want))
		be.Conv2D(s, up(be, x), up(be, w), up(be, b), y)
		expectClose(t, "conv", Data[float64](y), want, refTol)
		// And without bias: y − b.
		be.Conv2D(s, up(be, x), up(be, w), nil, y)
		for k := range want {
			want[k] -= b[(k/(oh*ow))%s.Cout]
		}
		expectClose(t, "conv no bias", Data[float64](y), want, refTol)
	}
}

func TestGroupNormMatchesLoops(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	be := New64()
	s := ops.NormShape{N: 2, C: 6, HW: 5, G: 2, Eps: 1e-5}
	x, g, b := randF64(r, 60), randF64(r, 6), randF64(r, 6)
	want := make([]float64, 60)
	wantStats := make([]float64, 8)
	for n := 0; n < 2; n++ {
		for gr := 0; gr < 2; gr++ {
			var sum, sq float64
			for c := gr * 3; c < gr*3+3; c++ {
				for i := 0; i < 5; i++ {
					sum += x[(n*6+c)*5+i]
				}
			}
			mu := sum / 15
			for c := gr * 3; c < gr*3+3; c++ {
				for i := 0; i < 5; i++ {
					sq += (x[(n*6+c)*5+i] - mu) * (x[(n*6+c)*5+i] - mu)
				}
			}
			rstd := 1 / math.Sqrt(sq/15+float64(float32(1e-5)))
			wantStats[2*(n*2+gr)], wantStats[2*(n*2+gr)+1] = mu, rstd
			for c := gr * 3; c < gr*3+3; c++ {
				for i := 0; i < 5; i++ {
					want[(n*6+c)*5+i] = (x[(n*6+c)*5+i]-mu)*rstd*g[c] + b[c]
				}
			}
		}
	}
	y, st := be.Alloc(60), be.Alloc(8)
	be.GroupNorm(s, up(be, x), up(be, g), up(be, b), y, st)
	expectClose(t, "groupnorm y", Data[float64](y), want, refTol)
	expectClose(t, "groupnorm stats", Data[float64](st), wantStats, refTol)
}

func TestLinearAttentionMatchLoops(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	be := New64()
	n, in, out := 3, 4, 5
	x, w, b := randF64(r, n*in), randF64(r, out*in), randF64(r, out)
	want := make([]float64, n*out)
	for i := 0; i < n; i++ {
		for o := 0; o < out; o++ {
			want[i*out+o] = b[o]
			for k := 0; k < in; k++ {
				want[i*out+o] += x[i*in+k] * w[o*in+k]
			}
		}
	}
	y := be.Alloc(n * out)
	be.Linear(n, in, out, up(be, x), up(be, w), up(be, b), y)
	expectClose(t, "linear", Data[float64](y), want, refTol)

	s := ops.AttnShape{N: 2, L: 5, Heads: 2, D: 3}
	hd := s.Heads * s.D
	q, k, v := randF64(r, s.N*s.L*hd), randF64(r, s.N*s.L*hd), randF64(r, s.N*s.L*hd)
	wantO := make([]float64, len(q))
	wantP := make([]float64, s.N*s.Heads*s.L*s.L)
	for nn := 0; nn < s.N; nn++ {
		for h := 0; h < s.Heads; h++ {
			for i := 0; i < s.L; i++ {
				sc := make([]float64, s.L)
				var z float64
				for j := range sc {
					for d := 0; d < s.D; d++ {
						sc[j] += q[(nn*s.L+i)*hd+h*s.D+d] * k[(nn*s.L+j)*hd+h*s.D+d]
					}
					sc[j] = math.Exp(sc[j] / math.Sqrt(float64(s.D)))
					z += sc[j]
				}
				for j := range sc {
					p := sc[j] / z
					wantP[((nn*s.Heads+h)*s.L+i)*s.L+j] = p
					for d := 0; d < s.D; d++ {
						wantO[(nn*s.L+i)*hd+h*s.D+d] += p * v[(nn*s.L+j)*hd+h*s.D+d]
					}
				}
			}
		}
	}
	o, p := be.Alloc(len(q)), be.Alloc(len(wantP))
	be.Attention(s, up(be, q), up(be, k), up(be, v), o, p)
	expectClose(t, "attention o", Data[float64](o), wantO, 1e-10)
	expectClose(t, "attention p", Data[float64](p), wantP, 1e-10)
}

func TestLayoutOpsMatchLoops(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	be := New64()
	// Upsample2x, x [2, 3, 5] → y [2, 6, 10].
	x := randF64(r, 30)
	y := be.Alloc(120)
	be.Upsample2x(2, 3, 5, up(be, x), y)
	for c := 0; c < 2; c++ {
		for i := 0; i < 6; i++ {
			for j := 0; j < 10; j++ {
				if got, want := Data[float64](y)[(c*6+i)*10+j], x[(c*3+i/2)*5+j/2]; got != want {
					t.Fatalf("upsample y[%d,%d,%d] = %g, want %g", c, i, j, got, want)
				}
			}
		}
	}
	// Concat a [2, 2, 3], b [2, 1, 3].
	a, b := randF64(r, 12), randF64(r, 6)
	cy := be.Alloc(18)
	be.Concat(2, 2, 1, 3, up(be, a), up(be, b), cy)
	want := append(append(append(append([]float64{}, a[:6]...), b[:3]...), a[6:]...), b[3:]...)
	expectClose(t, "concat", Data[float64](cy), want, 0)
	// AddChannel and Transpose.
	xc, pc := randF64(r, 2*3*4), randF64(r, 8) // p: 2 rows of 3, 5 apart
	ya := be.Alloc(24)
	be.AddChannel(2, 3, 4, 5, up(be, xc), up(be, pc), ya)
	for i := range xc {
		want := xc[i] + pc[i/12*5+i/4%3]
		if Data[float64](ya)[i] != want {
			t.Fatalf("addchannel[%d] = %g, want %g", i, Data[float64](ya)[i], want)
		}
	}
	yt := be.Alloc(24)
	be.Transpose(2, 3, 4, up(be, xc), yt)
	for n := 0; n < 2; n++ {
		for i := 0; i < 3; i++ {
			for j := 0; j < 4; j++ {
				if got, want := Data[float64](yt)[(n*4+j)*3+i], xc[(n*3+i)*4+j]; got != want {
					t.Fatalf("transpose y[%d,%d,%d] = %g, want %g", n, j, i, got, want)
				}
			}
		}
	}
	// TimestepEmbedding, dim 6: half = 3, f_i = 10000^(−i/(3 − shift)); cos first with flip_sin_to_cos, sin first
	// without (diffusers' get_timestep_embedding).
	ts := []float64{0, 3, 250}
	for _, v := range []struct {
		flip  bool
		shift float64
	}{{true, 0}, {false, 1}, {false, 0}, {true, 0.5}} {
		e := be.Alloc(18)
		be.TimestepEmbedding(ops.EmbedShape{N: 3, Dim: 6, FlipSinToCos: v.flip, FreqShift: v.shift}, up(be, ts), e)
		for n, tv := range ts {
			for i := 0; i < 3; i++ {
				f := math.Pow(10000, -float64(i)/(3-v.shift))
				first, second := math.Cos(tv*f), math.Sin(tv*f)
				if !v.flip {
					first, second = second, first
				}
				what := fmt.Sprintf("embedding flip=%v shift=%g", v.flip, v.shift)
				expectClose(t, what, Data[float64](e)[n*6+i:n*6+i+1], []float64{first}, 1e-12)
				expectClose(t, what, Data[float64](e)[n*6+3+i:n*6+4+i], []float64{second}, 1e-12)
			}
		}
	}
}

func TestElementwiseMatchLoops(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	be := New64()
	n := 1003
	a, b := randF64(r, n), randF64(r, n)
	// MSE, SumSquares.
	var mse, ss float64
	for i := range a {
		mse += (a[i] - b[i]) * (a[i] - b[i])
		ss += a[i] * a[i]
	}
	loss := be.Alloc(1)
	be.MSE(up(be, a), up(be, b), loss)
	expectClose(t, "mse", Data[float64](loss), []float64{mse / float64(n)}, 1e-13)
	be.SumSquares(up(be, a), loss)
	expectClose(t, "sumsquares", Data[float64](loss), []float64{ss}, 1e-13)
	// SiLU.
	y := be.Alloc(n)
	be.SiLU(up(be, a), y)
	for i, v := range a {
		expectClose(t, "silu", Data[float64](y)[i:i+1], []float64{v / (1 + math.Exp(-v))}, 1e-15)
	}
	// Dropout mask from rng.Uniform, and Normal from rng.Normal.
	be.Dropout(0.25, 9, 40, up(be, a), y)
	kept := 0
	for i, v := range a {
		want := 0.0
		if rng.Uniform(9, rng.StreamDropout, 40+uint64(i)) >= 0.25 {
			want = v / 0.75
			kept++
		}
		expectClose(t, "dropout", Data[float64](y)[i:i+1], []float64{want}, 1e-15)
	}
	if kept == 0 || kept == n {
		t.Fatalf("dropout kept %d of %d", kept, n)
	}
	be.Normal(11, rng.StreamNoise, 6, y)
	for i := range a {
		if got, want := Data[float64](y)[i], float64(rng.Normal(11, rng.StreamNoise, 6+uint64(i))); got != want {
			t.Fatalf("normal[%d] = %g, want %g", i, got, want)
		}
	}
	// AdamW step 3 and EMA.
	h := ops.AdamW{LR: 1e-2, Decay: 1e-3, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, GradScale: 0.5,
		RC1: float32(1 / (1 - math.Pow(0.9, 3))), RC2: float32(1 / (1 - math.Pow(0.99, 3)))}
	p, m, v := randF64(r, n), randF64(r, n), randF64(r, n)
	for i := range v {
		v[i] = v[i] * v[i]
	}
	pb, mb, vb := up(be, p), up(be, m), up(be, v)
	be.AdamWStep(h, pb, up(be, b), mb, vb)
	f := func(x float32) float64 { return float64(x) }
	for i := range p {
		g := f(h.GradScale) * b[i]
		mm := f(h.Beta1)*m[i] + (1-f(h.Beta1))*g
		vv := f(h.Beta2)*v[i] + (1-f(h.Beta2))*g*g
		mh, vh := mm*f(h.RC1), vv*f(h.RC2)
		pp := p[i] - f(h.Decay)*p[i] - f(h.LR)*mh/(math.Sqrt(vh)+f(h.Eps))
		expectClose(t, "adamw m", Data[float64](mb)[i:i+1], []float64{mm}, 1e-14)
		expectClose(t, "adamw v", Data[float64](vb)[i:i+1], []float64{vv}, 1e-14)
		expectClose(t, "adamw p", Data[float64](pb)[i:i+1], []float64{pp}, 1e-12)
	}
	eb := up(be, a)
	be.EMA(0.9, eb, up(be, b))
	for i := range a {
		expectClose(t, "ema", Data[float64](eb)[i:i+1], []float64{f(0.9)*a[i] + (1-f(0.9))*b[i]}, 1e-15)
	}
}

func TestDiffusionOpsMatchFormulas(t *testing.T) {
	r := rand.New(rand.NewSource(6))
	be := New64()
	const T, n, d = 10, 3, 4
	tab := func() []float64 {
		v := make([]float64, T)
		for i := range v {
			v[i] = 0.1 + r.Float64()
		}
		return v
	}
	sa, sb, ra, rm, c1, c2, sg, ab := tab(), tab(), tab(), tab(), tab(), tab(), tab(), tab()
	sch := &ops.Schedule{T: T, SqrtAlphaBar: up(be, sa), SqrtOneMinusAlphaBar: up(be, sb), SqrtRecipAlphaBar: up(be, ra),
		SqrtRecipM1AlphaBar: up(be, rm), PosteriorCoef1: up(be, c1), PosteriorCoef2: up(be, c2), Sigma: up(be, sg), AlphaBar: up(be, ab)}
	ts := []float64{0, 9, 4}
	x0, eps, z := randF64(r, n*d), randF64(r, n*d), randF64(r, n*d)
	out := be.Alloc(n * d)
	be.QSample(sch, n, d, up(be, ts), up(be, x0), up(be, eps), out)
	for i := range x0 {
		tt := int(ts[i/d])
		expectClose(t, "qsample", Data[float64](out)[i:i+1], []float64{sa[tt]*x0[i] + sb[tt]*eps[i]}, 1e-15)
	}
	xt := randF64(r, n*d)
	for _, clip := range []bool{false, true} {
		be.Posterior(sch, n, d, clip, up(be, ts), up(be, xt), up(be, eps), up(be, z), out)
		clipped := 0
		for i := range xt {
			tt := int(ts[i/d])
			xh := ra[tt]*xt[i] - rm[tt]*eps[i]
			if clip && math.Abs(xh) > 1 {
				xh = math.Copysign(1, xh)
				clipped++
			}
			want := c1[tt]*xh + c2[tt]*xt[i]
			if tt > 0 {
				want += sg[tt] * z[i]
			}
			expectClose(t, "posterior", Data[float64](out)[i:i+1], []float64{want}, 1e-14)
		}
		if clip && clipped == 0 {
			t.Fatal("posterior: the clip branch was never taken")
		}
	}
	for _, c := range []struct {
		ab, abp, eta float32
		clip         bool
	}{{0.5, 0.7, 0, false}, {0.3, 0.6, 1, true}, {0.8, 1, 0.5, false}} {
		be.DDIMStep(c.ab, c.abp, c.eta, c.clip, up(be, xt), up(be, eps), up(be, z), out)
		a, ap, eta := float64(c.ab), float64(c.abp), float64(c.eta)
		for i := range xt {
			xh := xt[i]/math.Sqrt(a) - math.Sqrt(1/a-1)*eps[i]
			e := eps[i]
			if c.clip {
				xh = max(-1, min(1, xh))
				e = (xt[i] - math.Sqrt(a)*xh) / math.Sqrt(1-a)
			}
			sigma := eta * math.Sqrt((1-ap)/(1-a)*(1-a/ap))
			want := math.Sqrt(ap)*xh + math.Sqrt(max(0, 1-ap-sigma*sigma))*e + sigma*z[i]
			expectClose(t, "ddim", Data[float64](out)[i:i+1], []float64{want}, 1e-13)
		}
	}
}
