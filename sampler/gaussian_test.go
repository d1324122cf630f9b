package sampler

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/rng"
)

// The data of the Gaussian tests: x0 ~ N(0.3, 0.4²) per element, with the linear schedule of T = 1000.
var gaussData = gaussian{mu: 0.3, v: 0.16}

// Tolerances of TestGaussianMoments: every sampler below, at the steps given, reproduces the data's mean to 0.002 and
// its variance to 5%. What remains is the samplers' discretisation error (measured in the test's log: e.g. ddim 200
// steps −3.4%, heun 50 steps +1.4%, dpmpp2m 50 steps −1.1%; at 20 steps these are −29%, +11% and −15%) and, for the
// deterministic ones, a mean bias of −8e-4 from x_T ~ N(0, I) instead of N(√ᾱ_T·mu, …): the ODE carries it to the
// data scaled by √(v/(v + σ_max²)) ≈ 0.4/157.
const (
	gaussTolMean = 0.002
	gaussTolVar  = 0.05
)

func gaussOptions() []Options {
	return []Options{
		{Sampler: DDPM},                          // all 1000 steps, σ² = β
		{Sampler: DDPM, Variance: "fixed_small"}, // σ² = β̃
		{Sampler: DDPM, Steps: 200},              // respaced, leading
		{Sampler: DDPM, Steps: 200, Spacing: "trailing"},
		{Sampler: DDIM, Steps: 200},
		{Sampler: DDIM, Steps: 200, Spacing: "linspace"},
		{Sampler: DDIM, Steps: 500, Eta: 1},
		{Sampler: Euler, Steps: 200},
		{Sampler: EulerMaruyama, Steps: 200},
		{Sampler: Heun, Steps: 50},
		{Sampler: Heun, Steps: 50, Churn: 10},
		{Sampler: Heun, Steps: 50, Spacing: "linspace"},
		{Sampler: DPMSolverPP2M, Steps: 50},
		{Sampler: DPMSolverPP2M, Steps: 50, Spacing: "karras"},
	}
}

// TestGaussianMoments: on Gaussian data with the exact ε̂, the exact output distribution of every sampler (its plan
// run in float64 on affine forms, so free of rounding and of Monte Carlo error) has the data's mean and variance
// within gaussTolMean and gaussTolVar.
func TestGaussianMoments(t *testing.T) {
	s := schedule(t, 1000)
	be := cpu.New()
	for _, opt := range gaussOptions() {
		sp, err := New(be, s, opt, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		m, v := exactRun(sp, gaussData)
		t.Logf("%-40s %4d evals: mean %+.5f, variance %+.2f%%", name(opt), sp.Evals(), m-gaussData.mu, 100*(v-gaussData.v)/gaussData.v)
		if math.Abs(m-gaussData.mu) > gaussTolMean || math.Abs(v-gaussData.v) > gaussTolVar*gaussData.v {
			t.Errorf("%s: mean %.5f, variance %.5f; want %g ± %g and %g ± %g%%", name(opt), m, v, gaussData.mu, gaussTolMean,
				gaussData.v, 100*gaussTolVar)
		}
	}
	// Coarse grids are measurably worse: the tolerances above separate a good sampler from a poor one.
	for _, opt := range []Options{{Sampler: DDIM, Steps: 20}, {Sampler: DPMSolverPP2M, Steps: 10}, {Sampler: Heun, Steps: 10}} {
		sp, _ := New(be, s, opt, 1, 1)
		if _, v := exactRun(sp, gaussData); math.Abs(v-gaussData.v) < 2*gaussTolVar*gaussData.v {
			t.Errorf("%s: variance %.5f is within 2× the tolerance: the test cannot tell coarse from fine", name(opt), v)
		}
	}
}

func name(o Options) string {
	s := fmt.Sprintf("%s steps=%d", o.Sampler, o.Steps)
	if o.Spacing != "" {
		s += " spacing=" + o.Spacing
	}
	if o.Eta != 0 {
		s += fmt.Sprintf(" eta=%g", o.Eta)
	}
	if o.Churn != 0 {
		s += fmt.Sprintf(" churn=%g", o.Churn)
	}
	if o.Variance != "" {
		s += " variance=" + o.Variance
	}
	if o.Clip {
		s += " clip"
		if o.UnclippedEps {
			s += " unclipped-eps"
		}
	}
	return s
}

// TestGaussianSamplesOnTheBackend runs every sampler of TestGaussianMoments over ops (the CPU backend, in batches of
// 5 images) with the exact ε̂ as its network, and checks
//   - that a sample of every 61st element equals the float64 replay of the plan with the same x_T and z draws (the
//     noise indices of the package doc), to 5e-5 (measured 4e-6): the backend computes what the plan says, float32 aside;
//   - that the 16 × 512 samples have the exact output distribution's mean and variance within 4.5 standard errors.
//
// With clipping (μ + 1.75σ = 1, so x̂0 is clipped in places) the replay must follow the clip too.
func TestGaussianSamplesOnTheBackend(t *testing.T) {
	s := schedule(t, 1000)
	const n, d, batch, seed = 16, 512, 5, 21
	opts := gaussOptions()
	opts = append(opts, Options{Sampler: DDIM, Steps: 50, Clip: true}, Options{Sampler: DDIM, Steps: 50, Clip: true, UnclippedEps: true},
		Options{Sampler: DDPM, Steps: 100, Clip: true}, Options{Sampler: Heun, Steps: 20, Churn: 5, Clip: true},
		Options{Sampler: DPMSolverPP2M, Steps: 20, Clip: true}, Options{Sampler: EulerMaruyama, Steps: 50, Clip: true})
	worst := 0.0
	for _, opt := range opts {
		opt.Seed = seed
		be := cpu.New()
		sp, err := New(be, s, opt, batch, d)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, n*d)
		if err := sp.Sample(context.Background(), &gaussNet{be: be, s: s, g: gaussData}, n, nil, out, nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n*d; i += 61 {
			j, e := i/d, i%d
			xT := float64(rng.Normal(seed, rng.StreamSampler, uint64(i)))
			z := func(k int) float64 { return float64(rng.Normal(seed, rng.StreamSampler, uint64((k*n+j)*d+e))) }
			want := valueRun(sp, xT, z, gaussData.eps)
			diff := math.Abs(float64(out[i]) - want)
			worst = max(worst, diff)
			if !(diff <= 5e-5) {
				t.Fatalf("%s: element %d = %.7g, float64 replay %.7g", name(opt), i, out[i], want)
			}
		}
		if opt.Clip {
			continue // not affine: no exact moments
		}
		em, ev := exactRun(sp, gaussData)
		var m, v float64
		for _, x := range out {
			m += float64(x)
		}
		m /= float64(len(out))
		for _, x := range out {
			v += (float64(x) - m) * (float64(x) - m)
		}
		v /= float64(len(out) - 1)
		N := float64(len(out))
		seM, seV := math.Sqrt(ev/N), ev*math.Sqrt(2/(N-1))
		if math.Abs(m-em) > 4.5*seM || math.Abs(v-ev) > 4.5*seV {
			t.Errorf("%s: sample mean %.5f, variance %.5f; exact %.5f ± %.5f, %.5f ± %.5f (4.5 SE)", name(opt), m, v, em,
				4.5*seM, ev, 4.5*seV)
		}
	}
	t.Logf("largest |backend − float64 replay|: %.3g", worst)
}

// TestDDIMEta1IsRespacedDDPM: DDIM with η = 1 on a grid of kept steps is DDPM on the respaced schedule with σ² = β̃'
// (Song et al. 2021, §4.1), so their exact output distributions agree; with σ² = β' they do not.
func TestDDIMEta1IsRespacedDDPM(t *testing.T) {
	s := schedule(t, 1000)
	be := cpu.New()
	for _, sp := range []string{"leading", "trailing", "linspace"} {
		a, _ := New(be, s, Options{Sampler: DDIM, Steps: 40, Eta: 1, Spacing: sp}, 1, 1)
		b, _ := New(be, s, Options{Sampler: DDPM, Steps: 40, Variance: "fixed_small", Spacing: sp}, 1, 1)
		c, _ := New(be, s, Options{Sampler: DDPM, Steps: 40, Variance: "fixed_large", Spacing: sp}, 1, 1)
		ma, va := exactRun(a, gaussData)
		mb, vb := exactRun(b, gaussData)
		_, vc := exactRun(c, gaussData)
		if math.Abs(ma-mb) > 1e-12 || math.Abs(va-vb) > 1e-12 {
			t.Errorf("%s: ddim η=1 %.12g %.12g, ddpm fixed_small respaced %.12g %.12g", sp, ma, va, mb, vb)
		}
		if math.Abs(va-vc) < 1e-3 {
			t.Errorf("%s: ddpm fixed_large variance %.6g equals fixed_small's %.6g", sp, vc, vb)
		}
	}
}

// TestConvergenceOrder: on Gaussian data with the exact ε̂, the error of the sigma samplers' output distribution
// (|Δmean| + |Δvariance|, exact, from the plan in float64) against the limit their grids converge to shrinks with
// the number of steps N at the method's order: first for Euler and Euler–Maruyama (weak order), second for Heun
// and for DPM-Solver++(2M). The order is the negated slope of a least-squares line through log error against log N,
// N = 64 … 512 on the karras grid (the same σ_max and σ_min at every N, so the limit is N's; the final step to
// σ = 0, the denoised estimate at σ_min, is part of the limit: gaussian.limit). Measured: 0.99, 1.04, 2.03, 2.05.
func TestConvergenceOrder(t *testing.T) {
	s := schedule(t, 1000)
	be := cpu.New()
	for _, c := range []struct {
		sampler string
		order   float64
	}{{Euler, 1}, {EulerMaruyama, 1}, {Heun, 2}, {DPMSolverPP2M, 2}} {
		var xs, ys []float64
		var errs []float64
		for _, N := range []int{64, 128, 256, 512} {
			sp, err := New(be, s, Options{Sampler: c.sampler, Steps: N, Spacing: "karras"}, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := s.SigmaSchedule(diffusion.SpacingKarras, N)
			lm, lv := gaussData.limit(c.sampler == EulerMaruyama, g.Sigma[0], g.Sigma[N-1])
			m, v := exactRun(sp, gaussData)
			e := math.Abs(m-lm) + math.Abs(v-lv)
			xs, ys, errs = append(xs, math.Log(float64(N))), append(ys, math.Log(e)), append(errs, e)
		}
		order := -slope(xs, ys)
		t.Logf("%-15s errors %.3g: order %.3f", c.sampler, errs, order)
		if math.Abs(order-c.order) > 0.15 {
			t.Errorf("%s: measured order %.3f, want %g ± 0.15 (errors %.3g at N = 64 … 512)", c.sampler, order, c.order, errs)
		}
	}
}

// slope of the least-squares line through (x, y).
func slope(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
	}
	return sxy / sxx
}

// TestUnclippedEps: with clipping active (the Gaussian's tail beyond 1), DDIM keeping the network's ε̂ (diffusers'
// default) and DDIM recomputing it from the clipped x̂0 (improved-diffusion, the default here) give different
// samples, each its own plan's float64 replay (TestGaussianSamplesOnTheBackend); without clipping they are the same
// bytes.
func TestUnclippedEps(t *testing.T) {
	s := schedule(t, 1000)
	run := func(opt Options) []float32 {
		be := cpu.New()
		sp, err := New(be, s, opt, 4, 256)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, 4*256)
		if err := sp.Sample(context.Background(), &gaussNet{be: be, s: s, g: gaussData}, 4, nil, out, nil); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, clip := range []bool{false, true} {
		a := run(Options{Sampler: DDIM, Steps: 30, Eta: 0.3, Clip: clip, Seed: 8})
		b := run(Options{Sampler: DDIM, Steps: 30, Eta: 0.3, Clip: clip, UnclippedEps: true, Seed: 8})
		differ := 0
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				differ++
			}
		}
		if clip && differ == 0 || !clip && differ != 0 {
			t.Errorf("clip %v: %d of %d samples differ between recomputed and kept ε̂", clip, differ, len(a))
		}
	}
}
