package diffusion

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// independentPosterior returns the mean and variance of q(x_{t-1} | x_t, x0) derived by Bayes' rule from
// q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) and q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}),
// with abar rebuilt from the betas (not from the Schedule's derived fields). At t = 0 the posterior is the point x0.
func independentPosterior(s *Schedule, t int, x0, xt float64) (mean, variance float64) {
	if t == 0 {
		return x0, 0
	}
	abPrev := 1.0
	for i := 0; i < t; i++ {
		abPrev *= 1 - s.Beta[i]
	}
	beta := s.Beta[t]
	alpha := 1 - beta
	variance = 1 / (alpha/beta + 1/(1-abPrev))
	mean = variance * (math.Sqrt(alpha)/beta*xt + math.Sqrt(abPrev)/(1-abPrev)*x0)
	return mean, variance
}

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(scale * rng.NormFloat64())
	}
	return v
}

// TestReverseMeanWithTrueEps: when the network's eps^ is the true noise of x_t = sqrt(abar_t) x0 + sqrt(1-abar_t)
// eps, DDPM's reverse mean (z = 0, no clipping) is the true posterior mean mu~_t(x_t, x0), for every t: to 1e-9 in
// float64 (measured ~3e-13) and to float32 rounding (4 units of 2^-24 of the terms' magnitudes; measured ~1.1) in
// the float32 loop.
func TestReverseMeanWithTrueEps(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range standardSchedules(t) {
		name, s := c.name, c.s
		const n = 16
		worst64, worst32 := 0.0, 0.0
		for step := 0; step < s.T; step++ {
			ab := s.AlphaBar[step]
			x0 := make([]float32, n)
			eps := randVec(rng, n, 1)
			xt := make([]float32, n)
			for i := range x0 {
				x0[i] = float32(2*rng.Float64() - 1)
				xt[i] = float32(math.Sqrt(ab)*float64(x0[i]) + math.Sqrt(1-ab)*float64(eps[i]))
			}
			out := make([]float32, n)
			if err := DDPMStep(xt, eps, step, s, VarPosterior, false, make([]float32, n), out); err != nil {
				t.Fatal(err)
			}
			for i := range out {
				// mu~ at the float32 x_t the loop sees; x0 recovered from it exactly in float64.
				x0t := (float64(xt[i]) - math.Sqrt(1-ab)*float64(eps[i])) / math.Sqrt(ab)
				want, _ := independentPosterior(s, step, x0t, float64(xt[i]))
				got64 := s.DDPMStepAt(step, float64(xt[i]), float64(eps[i]), 0, VarPosterior, false)
				worst64 = math.Max(worst64, math.Abs(got64-want)/(1+math.Abs(want)))
				// float32 error: x0^ is formed from terms of size |xt|/sqrt(abar) and enters mu multiplied by c1.
				scale := s.PosteriorMeanCoef1[step]*s.SqrtRecipAlphaBar[step]*(math.Abs(float64(xt[i]))+math.Abs(float64(eps[i]))) +
					s.PosteriorMeanCoef2[step]*math.Abs(float64(xt[i])) + math.Abs(want)
				worst32 = math.Max(worst32, math.Abs(float64(out[i])-want)/(scale*0x1p-24))
			}
		}
		t.Logf("%s: float64 %.3g, float32 %.2f units", name, worst64, worst32)
		if worst64 > 1e-11 {
			t.Errorf("%s: float64 reverse mean vs true posterior mean: %g (1+|mu|), want <= 1e-11", name, worst64)
		}
		if worst32 > 4 {
			t.Errorf("%s: float32 reverse mean vs true posterior mean: %.2f units of 2^-24 scale, want <= 4", name, worst32)
		}
	}
}

// TestDDPMNoise: out(z) - out(0) = sigma_t z, with sigma_t^2 = beta_t (VarBeta) or beta~_t (VarPosterior) taken
// from the Bayes posterior, and no noise at all at t = 0 (z may then be nil).
func TestDDPMNoise(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	rng := rand.New(rand.NewPCG(13, 14))
	const n = 32
	xt, eps, z := randVec(rng, n, 1), randVec(rng, n, 1), randVec(rng, n, 1)
	for _, step := range []int{0, 1, 10, 500, 999} {
		_, postVar := independentPosterior(s, step, 0, 0)
		for _, v := range []VarianceKind{VarBeta, VarPosterior} {
			sigma := math.Sqrt(postVar)
			if v == VarBeta {
				sigma = math.Sqrt(s.Beta[step])
			}
			if step == 0 {
				sigma = 0
			}
			if got := s.Sigma(step, v); math.Abs(got-sigma) > 1e-12 {
				t.Errorf("Sigma(%d, %v) = %g, want %g", step, v, got, sigma)
			}
			with, without := make([]float32, n), make([]float32, n)
			if err := DDPMStep(xt, eps, step, s, v, false, z, with); err != nil {
				t.Fatal(err)
			}
			if err := DDPMStep(xt, eps, step, s, v, false, make([]float32, n), without); err != nil {
				t.Fatal(err)
			}
			for i := range with {
				d := float64(with[i]) - float64(without[i])
				if want := sigma * float64(z[i]); math.Abs(d-want) > 1e-6*(1+math.Abs(float64(with[i]))) {
					t.Fatalf("t=%d %v: out(z)-out(0) = %g, want sigma z = %g", step, v, d, want)
				}
			}
			if step == 0 {
				if err := DDPMStep(xt, eps, step, s, v, false, nil, with); err != nil {
					t.Errorf("t=0 with nil z: %v", err)
				}
			}
		}
	}
}

// TestDDIMEta1IsDDPM: DDIM with eta = 1 stepping t -> t-1 has sigma^2 = beta~_t and the same mean as DDPM's
// posterior step (Song et al. sec. 4.1), so with the same z the two samplers agree, at every t, with and without
// clipping: to 1e-12 in float64 (measured ~4e-13) and ~1e-6 in float32 (16 units of 2^-24 of the terms' magnitudes;
// measured ~2). It then runs both samplers through all 1000 steps from the same x_T, with the same z at each step
// and a fixed stand-in for the network (eps^ = 0.7 tanh x_t), and compares the final images.
func TestDDIMEta1IsDDPM(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, c := range standardSchedules(t) {
		name, s := c.name, c.s
		const n = 32
		worst32, worst64 := 0.0, 0.0
		for step := 0; step < s.T; step++ {
			if got, want := s.DDIMSigma(step, step-1, 1), s.Sigma(step, VarPosterior); math.Abs(got-want) > 1e-12*(1+want) {
				t.Fatalf("%s t=%d: DDIMSigma(eta=1) = %g, want sqrt(beta~) = %g", name, step, got, want)
			}
			xt, eps, z := randVec(rng, n, 1.2), randVec(rng, n, 1), randVec(rng, n, 1)
			for _, clip := range []bool{false, true} {
				ddim, ddpm := make([]float32, n), make([]float32, n)
				if err := DDIMStep(xt, eps, step, step-1, s, 1, clip, z, ddim); err != nil {
					t.Fatal(err)
				}
				if err := DDPMStep(xt, eps, step, s, VarPosterior, clip, z, ddpm); err != nil {
					t.Fatal(err)
				}
				for i := range ddim {
					x, e, zz := float64(xt[i]), float64(eps[i]), float64(z[i])
					a := s.DDIMStepAt(step, step-1, 1, x, e, zz, clip)
					b := s.DDPMStepAt(step, x, e, zz, VarPosterior, clip)
					worst64 = math.Max(worst64, math.Abs(a-b)/(1+math.Abs(b)))
					scale := 1 + math.Abs(b) + math.Abs(x) + math.Abs(e) + math.Abs(zz)
					worst32 = math.Max(worst32, math.Abs(float64(ddim[i])-float64(ddpm[i]))/(scale*0x1p-24))
				}
			}
		}
		t.Logf("%s: float64 %.3g, float32 %.2f units", name, worst64, worst32)
		if worst64 > 1e-12 {
			t.Errorf("%s: float64 DDIM(eta=1) vs DDPM(beta~): %g (1+|x|), want <= 1e-12", name, worst64)
		}
		if worst32 > 16 {
			t.Errorf("%s: float32 DDIM(eta=1) vs DDPM(beta~): %.2f units of 2^-24 scale, want <= 16", name, worst32)
		}

		ddim, ddpm := randVec(rng, n, 1), make([]float32, n)
		copy(ddpm, ddim)
		epsHat := make([]float32, n)
		net := func(x []float32) []float32 {
			for i, v := range x {
				epsHat[i] = float32(0.7 * math.Tanh(float64(v)))
			}
			return epsHat
		}
		chainWorst := 0.0
		for step := s.T - 1; step >= 0; step-- {
			z := randVec(rng, n, 1)
			if err := DDIMStep(ddim, net(ddim), step, step-1, s, 1, true, z, ddim); err != nil {
				t.Fatal(err)
			}
			if err := DDPMStep(ddpm, net(ddpm), step, s, VarPosterior, true, z, ddpm); err != nil {
				t.Fatal(err)
			}
		}
		for i := range ddim {
			chainWorst = math.Max(chainWorst, math.Abs(float64(ddim[i])-float64(ddpm[i])))
		}
		t.Logf("%s: chain of %d steps: largest difference %.3g", name, s.T, chainWorst)
		if chainWorst > 1e-5 {
			t.Errorf("%s: after %d steps DDIM(eta=1) and DDPM(beta~) differ by %.3g, want <= 1e-5", name, s.T, chainWorst)
		}
	}
}

// TestDDIMEta0Deterministic: with eta = 0 the noise z has no effect (two different z give the same bits, and z may
// be nil), while with eta > 0 it does.
func TestDDIMEta0Deterministic(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	rng := rand.New(rand.NewPCG(17, 18))
	const n = 64
	xt, eps, z1, z2 := randVec(rng, n, 1), randVec(rng, n, 1), randVec(rng, n, 1), randVec(rng, n, 1)
	for _, st := range [][2]int{{999, 979}, {500, 480}, {20, 0}, {0, -1}} {
		for _, clip := range []bool{false, true} {
			a, b, c := make([]float32, n), make([]float32, n), make([]float32, n)
			for _, r := range []struct {
				z   []float32
				out []float32
			}{{z1, a}, {z2, b}, {nil, c}} {
				if err := DDIMStep(xt, eps, st[0], st[1], s, 0, clip, r.z, r.out); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(a, b) || !slices.Equal(a, c) {
				t.Errorf("t=%d->%d clip=%v: eta=0 output depends on z", st[0], st[1], clip)
			}
			if st[1] >= 0 {
				if err := DDIMStep(xt, eps, st[0], st[1], s, 0.5, clip, z1, a); err != nil {
					t.Fatal(err)
				}
				if err := DDIMStep(xt, eps, st[0], st[1], s, 0.5, clip, z2, b); err != nil {
					t.Fatal(err)
				}
				if slices.Equal(a, b) {
					t.Errorf("t=%d->%d clip=%v: eta=0.5 output ignores z", st[0], st[1], clip)
				}
			}
		}
	}
}

// TestDDIMFollowsTrueNoise: with eps^ the true noise of x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps, a deterministic
// DDIM step lands on the same noise at the earlier level, sqrt(abar_prev) x0 + sqrt(1-abar_prev) eps (eq. 12 with
// sigma = 0), and the last step (tPrev = -1) on x0 itself.
func TestDDIMFollowsTrueNoise(t *testing.T) {
	s := mustCosine(t, 1000)
	rng := rand.New(rand.NewPCG(19, 20))
	const n = 16
	for _, st := range [][2]int{{999, 949}, {600, 599}, {300, 100}, {20, -1}, {0, -1}} {
		x0, eps := randVec(rng, n, 0.5), randVec(rng, n, 1)
		ab := s.AlphaBar[st[0]]
		abPrev := 1.0
		if st[1] >= 0 {
			abPrev = s.AlphaBar[st[1]]
		}
		xt := make([]float32, n)
		for i := range xt {
			xt[i] = float32(math.Sqrt(ab)*float64(x0[i]) + math.Sqrt(1-ab)*float64(eps[i]))
		}
		out := make([]float32, n)
		if err := DDIMStep(xt, eps, st[0], st[1], s, 0, false, nil, out); err != nil {
			t.Fatal(err)
		}
		for i := range out {
			x0t := (float64(xt[i]) - math.Sqrt(1-ab)*float64(eps[i])) / math.Sqrt(ab) // x0 behind the float32 x_t
			want := math.Sqrt(abPrev)*x0t + math.Sqrt(1-abPrev)*float64(eps[i])
			if got := s.DDIMStepAt(st[0], st[1], 0, float64(xt[i]), float64(eps[i]), 0, false); math.Abs(got-want) > 1e-9 {
				t.Errorf("t=%d->%d: DDIMStepAt = %.12g, want %.12g", st[0], st[1], got, want)
			}
			// float32: x0^ carries the rounding of xt and eps times 1/sqrt(abar), scaled back by sqrt(abar_prev).
			tol := 8 * 0x1p-24 * (math.Sqrt(abPrev/ab)*(math.Abs(float64(xt[i]))+math.Abs(float64(eps[i]))) + 1)
			if math.Abs(float64(out[i])-want) > tol {
				t.Errorf("t=%d->%d [%d]: DDIMStep = %.9g, want %.9g (tol %.3g)", st[0], st[1], i, out[i], want, tol)
			}
		}
	}
}

// TestClipping: a prediction that puts x0^ outside [-1, 1] is clamped; DDPM then uses mu = c1 clip(x0^) + c2 x_t,
// and DDIM recomputes eps^ from the clamped x0^ (as improved-diffusion does; diffusers with use_clipped_model_output).
func TestClipping(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	const step, prev = 400, 380
	ab, abPrev := s.AlphaBar[step], s.AlphaBar[prev]
	xt := []float32{0.9, -0.9, 0.3}
	// eps^ chosen so that x0^ = 3, -3 and 0.25.
	x0want := []float64{3, -3, 0.25}
	eps := make([]float32, 3)
	for i := range eps {
		eps[i] = float32((float64(xt[i]) - math.Sqrt(ab)*x0want[i]) / math.Sqrt(1-ab))
	}
	clipped := []float64{1, -1, 0.25}

	out := make([]float32, 3)
	if err := DDPMStep(xt, eps, step, s, VarBeta, true, nil, out[:0:0]); err == nil {
		t.Error("DDPMStep with nil z at t > 0 and an empty out: want a length error")
	}
	if err := DDPMStep(xt, eps, step, s, VarBeta, true, make([]float32, 3), out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		want, _ := independentPosterior(s, step, clipped[i], float64(xt[i]))
		if math.Abs(float64(out[i])-want) > 1e-5 {
			t.Errorf("DDPM clip [%d] = %g, want mu~(x_t, %g) = %g", i, out[i], clipped[i], want)
		}
	}
	if err := DDIMStep(xt, eps, step, prev, s, 0, true, nil, out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		e := (float64(xt[i]) - math.Sqrt(ab)*clipped[i]) / math.Sqrt(1-ab)
		want := math.Sqrt(abPrev)*clipped[i] + math.Sqrt(1-abPrev)*e
		if math.Abs(float64(out[i])-want) > 1e-5 {
			t.Errorf("DDIM clip [%d] = %g, want %g", i, out[i], want)
		}
	}
}

func TestSamplerErrors(t *testing.T) {
	s := mustLinear(t, 100, 1e-4, 0.02)
	v := make([]float32, 4)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"DDPM t=T", DDPMStep(v, v, 100, s, VarBeta, false, v, v), "t = 100"},
		{"DDPM t<0", DDPMStep(v, v, -1, s, VarBeta, false, v, v), "t = -1"},
		{"DDPM nil z", DDPMStep(v, v, 5, s, VarBeta, false, nil, v), "len(z)=0"},
		{"DDPM short eps", DDPMStep(v, v[:3], 5, s, VarBeta, false, v, v), "len(epsHat)=3"},
		{"DDPM kind", DDPMStep(v, v, 5, s, VarianceKind(7), false, v, v), "variance"},
		{"DDPM nil schedule", DDPMStep(v, v, 5, nil, VarBeta, false, v, v), "nil schedule"},
		{"DDIM tPrev=t", DDIMStep(v, v, 5, 5, s, 0, false, v, v), "tPrev = 5"},
		{"DDIM tPrev<-1", DDIMStep(v, v, 5, -2, s, 0, false, v, v), "tPrev = -2"},
		{"DDIM eta>1", DDIMStep(v, v, 5, 4, s, 1.5, false, v, v), "eta = 1.5"},
		{"DDIM eta NaN", DDIMStep(v, v, 5, 4, s, math.NaN(), false, v, v), "eta = NaN"},
		{"DDIM nil z", DDIMStep(v, v, 5, 4, s, 0.3, false, nil, v), "len(z)=0"},
		{"DDIM short out", DDIMStep(v, v, 5, 4, s, 0, false, nil, v[:2]), "len(out)=2"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
	for _, in := range []string{"beta", "fixedlarge"} {
		if k, err := ParseVarianceKind(in); err != nil || k != VarBeta {
			t.Errorf("ParseVarianceKind(%q) = %v, %v, want VarBeta", in, k, err)
		}
	}
	for _, in := range []string{"posterior", "fixedsmall"} {
		if k, err := ParseVarianceKind(in); err != nil || k != VarPosterior {
			t.Errorf("ParseVarianceKind(%q) = %v, %v, want VarPosterior", in, k, err)
		}
	}
	if _, err := ParseVarianceKind("learned"); err == nil {
		t.Error(`ParseVarianceKind("learned") accepted an unknown kind`)
	}
}

func TestTimesteps(t *testing.T) {
	lead, err := Timesteps(1000, 50)
	if err != nil {
		t.Fatal(err)
	}
	if lead[0] != 980 || lead[1] != 960 || lead[49] != 0 || len(lead) != 50 {
		t.Errorf("leading T=1000 steps=50 = %v..., want 980, 960, ..., 0", lead[:3])
	}
	trail, err := TimestepsWith(SpacingTrailing, 1000, 50)
	if err != nil {
		t.Fatal(err)
	}
	if trail[0] != 999 || trail[1] != 979 || trail[49] != 19 {
		t.Errorf("trailing T=1000 steps=50 = %v ... %d, want 999, 979, ..., 19", trail[:2], trail[49])
	}
	// trailing, T = 1000, steps = 3: round(1000, 666.67, 333.33) - 1.
	if got, _ := TimestepsWith(SpacingTrailing, 1000, 3); !slices.Equal(got, []int{999, 666, 332}) {
		t.Errorf("trailing T=1000 steps=3 = %v, want [999 666 332]", got)
	}
	// linspace, T = 10, steps = 4: round(9 k / 3) = 9, 6, 3, 0; T = 1000, steps = 3: 999, round(499.5) = 500 (even), 0.
	if got, _ := TimestepsWith(SpacingLinspace, 10, 4); !slices.Equal(got, []int{9, 6, 3, 0}) {
		t.Errorf("linspace T=10 steps=4 = %v, want [9 6 3 0]", got)
	}
	if got, _ := TimestepsWith(SpacingLinspace, 1000, 3); !slices.Equal(got, []int{999, 500, 0}) {
		t.Errorf("linspace T=1000 steps=3 = %v, want [999 500 0]", got)
	}
	for _, sp := range []Spacing{SpacingLeading, SpacingTrailing, SpacingLinspace} {
		for _, T := range []int{1, 2, 7, 1000} {
			for _, steps := range []int{1, 2, 3, T / 3, T - 1, T} {
				if steps < 1 || steps > T {
					continue
				}
				ts, err := TimestepsWith(sp, T, steps)
				if err != nil {
					t.Fatalf("%s T=%d steps=%d: %v", sp, T, steps, err)
				}
				if len(ts) != steps {
					t.Fatalf("%s T=%d steps=%d: %d timesteps", sp, T, steps, len(ts))
				}
				for i, v := range ts {
					if v < 0 || v >= T || (i > 0 && v >= ts[i-1]) {
						t.Fatalf("%s T=%d steps=%d: %v not strictly decreasing in [0, T)", sp, T, steps, ts)
					}
				}
				if steps == T && (ts[0] != T-1 || ts[T-1] != 0) {
					t.Fatalf("%s T=%d steps=T: %v, want every timestep", sp, T, ts)
				}
			}
		}
	}
	for _, c := range [][2]int{{1000, 0}, {10, 11}, {0, 0}} {
		if _, err := Timesteps(c[0], c[1]); err == nil {
			t.Errorf("Timesteps(%d, %d) accepted", c[0], c[1])
		}
	}
	if _, err := TimestepsWith("uniform", 1000, 10); err == nil {
		t.Error(`TimestepsWith("uniform") accepted an unknown spacing`)
	}
}
