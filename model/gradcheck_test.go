package model

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
)

// gradCheckConfig is the tiny U-Net of the gradient check: 8×8 images of 2
// channels, widths (8, 16), 4 groups, attention in the middle block and at
// resolution 4 (down block 1, up block 0), 4-channel heads (4 heads at 16 channels),
// and dropout, which runs in train mode with a fixed mask.
func gradCheckConfig() (config.Model, int, int) {
	return config.Model{
		BlockChannels:        []int{8, 16},
		LayersPerBlock:       2,
		MidAttention:         true,
		AttentionResolutions: []int{4},
		AttentionHeadDim:     4,
		NormGroups:           4,
		NormEps:              1e-5,
		FlipSinToCos:         true,
		DownsamplePadding:    1,
		Dropout:              0.1,
	}, 2, 8
}

// TestGradCheck compares the U-Net's backward pass with central differences in
// float64. With a random upstream gradient r, the scalar f(θ, x) = Σ r·UNet(x, t; θ)
// has ∂f/∂θ = Backward(r); for two random entries of every parameter tensor (so
// every layer type: conv 3×3/1×1/stride 2, linear, group norm, attention
// projections, time embedding) and for 24 input entries,
//
//	numeric = (f(θ + h·e_j) − f(θ − h·e_j)) / 2h,   h = 1e-5,
//
// must match the analytic value within |Δ| ≤ 1e-6·|numeric| + 1e-8. The truncation
// error of the central difference is O(h²) ≈ 1e-10 relative for this smooth network;
// the cancellation error is the rounding of f (a sum of 256 products, ~1e-14) over
// 2h, ≈ 1e-9 absolute, which is what the zero gradients of to_k.bias show (softmax
// ignores a shift shared by all keys). Both are far inside the tolerance, which is
// far below any wrong term (gradients here are 1e-4…1e-1). Dropout is on (rate 0.1, fixed seed and step,
// so each forward applies the same mask) and the GroupNorm affine parameters are
// moved off 1 and 0 so that their gradients are generic.
//
// The same check runs on each model option a diffusers config.json can set (the
// subtests): freq_shift 1, flip_sin_to_cos false, downsample_padding 0, and attention
// in a down block only and in an up block only with one head (attention_head_dim null).
func TestGradCheck(t *testing.T) {
	base, in, size := gradCheckConfig()
	for _, v := range []struct {
		name string
		edit func(*config.Model)
	}{
		{"default", func(*config.Model) {}},
		{"freq_shift=1", func(m *config.Model) { m.FreqShift = 1 }},
		{"flip_sin_to_cos=false", func(m *config.Model) { m.FlipSinToCos = false }},
		{"downsample_padding=0", func(m *config.Model) { m.DownsamplePadding = 0 }},
		{"attention down/up only, one head", func(m *config.Model) {
			m.AttentionResolutions, m.DownAttentionResolutions, m.UpAttentionResolutions = nil, []int{8}, []int{4}
			m.AttentionHeadDim = 0
		}},
	} {
		t.Run(v.name, func(t *testing.T) {
			cfg := base
			v.edit(&cfg)
			gradCheck(t, cfg, in, size)
		})
	}
}

func gradCheck(t *testing.T, cfg config.Model, in, size int) {
	const batch = 2
	be := cpu.New64()
	u, err := New(be, cfg, in, size, batch)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(7)
	params := cpu.Data[float64](u.Params())
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range u.Table() {
		if strings.Contains(p.Name, "norm") {
			for i := p.Offset; i < p.Offset+p.Size; i++ {
				params[i] += 0.3 * r.NormFloat64()
			}
		}
	}
	u.SetTrain(true, 99, 3)

	n := batch * in * size * size
	x, up := be.Alloc(n), be.Alloc(n)
	xs, ups := cpu.Data[float64](x), cpu.Data[float64](up)
	for i := range xs {
		xs[i], ups[i] = r.NormFloat64(), r.NormFloat64()
	}
	ts := be.Alloc(batch)
	copy(cpu.Data[float64](ts), []float64{17, 840})

	f := func() float64 {
		out := cpu.Data[float64](u.Forward(x, ts, batch))
		var s float64
		for i, v := range out {
			s += ups[i] * v
		}
		return s
	}
	f()
	u.inputGrad = be.Alloc(n)
	u.ZeroGrads()
	u.Backward(up)
	grads := cpu.Data[float64](u.Grads())
	dx := cpu.Data[float64](u.inputGrad)

	const h = 1e-5
	numeric := func(v []float64, i int) float64 {
		old := v[i]
		v[i] = old + h
		fp := f()
		v[i] = old - h
		fm := f()
		v[i] = old
		return (fp - fm) / (2 * h)
	}
	worst := 0.0
	checks := 0
	check := func(what string, ana, num float64) {
		checks++
		tol := 1e-6*math.Abs(num) + 1e-8
		worst = max(worst, math.Abs(ana-num)/tol)
		if !(math.Abs(ana-num) <= tol) {
			t.Errorf("%s: analytic %.10g, numeric %.10g, |Δ| %.3g > %.3g", what, ana, num, math.Abs(ana-num), tol)
		}
	}
	nonzero := 0
	for _, p := range u.Table() {
		for k := 0; k < 2; k++ {
			j := p.Offset + r.IntN(p.Size)
			num := numeric(params, j)
			if math.Abs(num) > 1e-6 {
				nonzero++
			}
			check(p.Name, grads[j], num)
		}
	}
	for k := 0; k < 24; k++ {
		j := r.IntN(n)
		check("input", dx[j], numeric(xs, j))
	}
	// The check means little if the sampled gradients are all ~0 (e.g. a dead path).
	if nonzero < len(u.Table()) {
		t.Errorf("only %d of %d sampled parameter gradients are above 1e-6", nonzero, 2*len(u.Table()))
	}
	t.Logf("%d entries (%d parameter tensors × 2, 24 inputs); worst uses %.1f%% of the tolerance", checks, len(u.Table()), 100*worst)
}
