package diffusion

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestNoiseLevelAndTimestepAt: at integer timesteps the noise level is the table's sqrt((1 - abar)/abar) and
// TimestepAt gives the integer back exactly; between them the two are inverse to 1e-12; outside the model's range
// they clamp.
func TestNoiseLevelAndTimestepAt(t *testing.T) {
	for _, c := range standardSchedules(t) {
		s := c.s
		for tt := 0; tt < s.T; tt++ {
			sig := math.Sqrt((1 - s.AlphaBar[tt]) / s.AlphaBar[tt])
			if relErr(s.NoiseLevel(float64(tt)), sig) > 1e-11 { // 1 - abar cancels at small t
				t.Fatalf("%s: NoiseLevel(%d) = %g, want %g", c.name, tt, s.NoiseLevel(float64(tt)), sig)
			}
			if got := s.TimestepAt(s.NoiseLevel(float64(tt))); got != float64(tt) {
				t.Fatalf("%s: TimestepAt(sigma_%d) = %v", c.name, tt, got)
			}
		}
		r := rand.New(rand.NewPCG(1, 2))
		for range 1000 {
			tt := r.Float64() * float64(s.T-1)
			if got := s.TimestepAt(s.NoiseLevel(tt)); math.Abs(got-tt) > 1e-9 {
				t.Fatalf("%s: TimestepAt(NoiseLevel(%v)) = %v", c.name, tt, got)
			}
			// log sigma is linear between the neighbours.
			lo := math.Floor(tt)
			w := tt - lo
			want := math.Exp((1-w)*math.Log(s.SqrtRecipM1AlphaBar[int(lo)]) + w*math.Log(s.SqrtRecipM1AlphaBar[int(lo)+1]))
			if relErr(s.NoiseLevel(tt), want) > 1e-12 {
				t.Fatalf("%s: NoiseLevel(%v) = %g, want %g", c.name, tt, s.NoiseLevel(tt), want)
			}
		}
		if s.TimestepAt(1e-9) != 0 || s.TimestepAt(1e9) != float64(s.T-1) {
			t.Errorf("%s: TimestepAt does not clamp: %v %v", c.name, s.TimestepAt(1e-9), s.TimestepAt(1e9))
		}
	}
}

// TestKarrasSigmas: eq. 5 of Karras et al. with rho = 7, both ends exact.
func TestKarrasSigmas(t *testing.T) {
	const lo, hi = 0.002, 80.0
	g := KarrasSigmas(lo, hi, 5)
	if g[0] != hi || g[4] != lo || !slices.IsSortedFunc(g, func(a, b float64) int { return -cmpF(a, b) }) {
		t.Fatalf("KarrasSigmas = %v", g)
	}
	a, b := math.Pow(hi, 1/7.0), math.Pow(lo, 1/7.0)
	if want := math.Pow(a+(b-a)/2, 7); relErr(g[2], want) > 1e-14 {
		t.Errorf("middle level %g, want %g", g[2], want)
	}
	if one := KarrasSigmas(lo, hi, 1); len(one) != 1 || one[0] != hi {
		t.Errorf("KarrasSigmas(n = 1) = %v", one)
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestSigmaGrids: the timesteps of the grids are diffusers' (EulerDiscreteScheduler for SigmaSchedule,
// DPMSolverMultistepScheduler for DPMSolverSigmas), written out here for T = 1000 and 20 steps, and every grid ends
// at sigma = 0.
func TestSigmaGrids(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	seq := func(from, step, n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(from - i*step)
		}
		return v
	}
	// np.linspace(0, 999, 21).round()[::-1][:-1]: 999, 949, ..., 549, 500 (499.5 to even), 450, ..., 50.
	dpmLinspace := append(seq(999, 50, 10), seq(500, 50, 10)...)
	for _, c := range []struct {
		name string
		g    func() (SigmaSchedule, error)
		want []float64
	}{
		{"dpm linspace", func() (SigmaSchedule, error) { return s.DPMSolverSigmas(SpacingLinspace, 20) }, dpmLinspace},
		// (np.arange(0, 21) * (1000 // 21))[::-1][:-1]: 940, 893, ..., 47.
		{"dpm leading", func() (SigmaSchedule, error) { return s.DPMSolverSigmas(SpacingLeading, 20) }, seq(940, 47, 20)},
		// np.arange(1000, 0, -50).round() - 1: 999, 949, ..., 49.
		{"dpm trailing", func() (SigmaSchedule, error) { return s.DPMSolverSigmas(SpacingTrailing, 20) }, seq(999, 50, 20)},
		// Euler: np.linspace(0, 999, 20).round()[::-1] ends at 0; leading: (arange(20) * 50)[::-1].
		{"euler leading", func() (SigmaSchedule, error) { return s.SigmaSchedule(SpacingLeading, 20) }, seq(950, 50, 20)},
	} {
		g, err := c.g()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(g.Timestep, c.want) {
			t.Errorf("%s: timesteps %v, want %v", c.name, g.Timestep, c.want)
		}
		checkGrid(t, c.name, s, g)
	}
	g, _ := s.SigmaSchedule(SpacingLinspace, 20)
	if g.Timestep[0] != 999 || g.Timestep[19] != 0 {
		t.Errorf("euler linspace: %v", g.Timestep)
	}
	k, err := s.SigmaSchedule(SpacingKarras, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkGrid(t, "karras", s, k)
	if k.Sigma[0] != s.SqrtRecipM1AlphaBar[999] || k.Sigma[9] != s.SqrtRecipM1AlphaBar[0] || k.Timestep[0] != 999 || k.Timestep[9] != 0 {
		t.Errorf("karras grid does not span the model's levels: %v at %v", k.Sigma, k.Timestep)
	}
	if _, err := s.DPMSolverSigmas(SpacingLinspace, 1000); err == nil {
		t.Error("dpm linspace with steps = T accepted")
	}
	if _, err := TimestepsWith(SpacingKarras, 1000, 10); err == nil {
		t.Error("TimestepsWith(karras) accepted")
	}
}

func checkGrid(t *testing.T, name string, s *Schedule, g SigmaSchedule) {
	t.Helper()
	n := g.Steps()
	if len(g.Sigma) != n+1 || g.Sigma[n] != 0 {
		t.Errorf("%s: %d levels for %d steps, last %v", name, len(g.Sigma), n, g.Sigma[n])
	}
	for i := range n {
		if !(g.Sigma[i] > g.Sigma[i+1]) {
			t.Errorf("%s: levels not decreasing at %d: %v", name, i, g.Sigma)
		}
		if relErr(s.NoiseLevel(g.Timestep[i]), g.Sigma[i]) > 1e-12 {
			t.Errorf("%s: level %d = %g but its timestep %v has level %g", name, i, g.Sigma[i], g.Timestep[i], s.NoiseLevel(g.Timestep[i]))
		}
	}
}

// denoiserFn is an arbitrary smooth, nonlinear denoiser D(x; sigma) for the step identities below.
func denoiserFn(x, sigma float64) float64 { return math.Tanh(0.7*x) / (1 + 0.1*sigma) }

// TestVEUpdatesAreTheAlgorithms: EulerUpdate, EulerMaruyamaUpdate and Heun's three updates, fed eps^ = (x - D)/sigma
// for an arbitrary denoiser D, equal the steps written out from Karras et al. 2022 (Algorithm 1, and eq. 6 with
// beta(t) = 1/sigma for the SDE), to 1e-12.
func TestVEUpdatesAreTheAlgorithms(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		sig := 0.01 + 50*r.Float64()
		next := sig * r.Float64()
		x, z := 3*r.NormFloat64()*sig, r.NormFloat64()
		d := func(x, s float64) float64 { return (x - denoiserFn(x, s)) / s } // dx/dsigma
		e := d(x, sig)                                                        // eps^ in the VE view: (x - D)/sigma
		// Euler: x + (next - sigma) d.
		if got, want := EulerUpdate(sig, next, false).At(x, e, 0, 0), x+(next-sig)*d(x, sig); relErr(got, want) > 1e-12 {
			t.Fatalf("Euler %v -> %v: %g, want %g", sig, next, got, want)
		}
		// Euler to 0 is D.
		if got, want := EulerUpdate(sig, 0, false).At(x, e, 0, 0), denoiserFn(x, sig); math.Abs(got-want) > 1e-12*(1+math.Abs(x)) {
			t.Fatalf("Euler %v -> 0: %g, want D = %g", sig, got, want)
		}
		// Euler-Maruyama: x - 2 sigma grad log p (next - sigma) + sqrt(2 sigma |next - sigma|) z, grad log p = (D - x)/sigma^2.
		score := (denoiserFn(x, sig) - x) / (sig * sig)
		want := x - 2*sig*score*(next-sig) + math.Sqrt(2*sig*(sig-next))*z
		if got := EulerMaruyamaUpdate(sig, next, false).At(x, e, z, 0); relErr(got, want) > 1e-11 {
			t.Fatalf("Euler-Maruyama %v -> %v: %g, want %g", sig, next, got, want)
		}
		// Heun, Algorithm 1 lines 5-8.
		h := next - sig
		x1 := x + h*d(x, sig)
		want = x + h*(d(x, sig)+d(x1, next))/2
		pred := EulerUpdate(sig, next, false).At(x, e, 0, 0)
		half := HeunHalfUpdate(sig, next, false).At(x, e, 0, 0)
		if got := HeunCorrectorUpdate(sig, next, false).At(pred, d(pred, next), 0, half); relErr(got, want) > 1e-11 {
			t.Fatalf("Heun %v -> %v: %g, want %g", sig, next, got, want)
		}
	}
	// Clipping acts on D: a D outside [-1, 1] is clamped before the step.
	if got := EulerUpdate(2, 0, true).At(5, 0, 0, 0); got != 1 {
		t.Errorf("clipped Euler to 0 from x = 5, eps^ = 0: %v, want 1", got)
	}
}

// TestChurn: gamma = min(churn/N, sqrt(2) - 1), sigma^ capped at the model's largest level; churn 0 is no churn.
func TestChurn(t *testing.T) {
	if got := ChurnSigma(2, 100, 0, 10); got != 2 {
		t.Errorf("churn 0: %v", got)
	}
	if got := ChurnSigma(2, 100, 1, 10); math.Abs(got-2.2) > 1e-15 {
		t.Errorf("churn 1, 10 steps: %v, want 2.2", got)
	}
	if got := ChurnSigma(2, 100, 80, 10); math.Abs(got-2*math.Sqrt2) > 1e-15 {
		t.Errorf("churn 80, 10 steps: %v, want 2 sqrt 2", got)
	}
	if got := ChurnSigma(90, 100, 80, 10); got != 100 {
		t.Errorf("capped: %v, want 100", got)
	}
	u := ChurnUpdate(3, 5)
	if got := u.At(1, math.NaN(), 2, math.NaN()); got != 1+4*2 {
		t.Errorf("ChurnUpdate(3, 5) at x = 1, z = 2: %v, want 9", got)
	}
}

// TestDPMSolverPP2MIsDiffusers: DPMSolverPP2MUpdate equals diffusers' dpm_solver_first_order_update and
// multistep_dpm_solver_second_order_update (dpmsolver++, midpoint), transcribed here in their own variables
// (alpha_t = 1/sqrt(sigma^2 + 1), sigma_t = sigma alpha_t, lambda = log alpha_t - log sigma_t), to 1e-12.
func TestDPMSolverPP2MIsDiffusers(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	conv := func(s float64) (a, sg, l float64) {
		a = 1 / math.Sqrt(s*s+1)
		sg = s * a
		return a, sg, math.Log(a) - math.Log(sg)
	}
	for range 200 {
		s1 := 0.05 + 80*r.Float64()
		s0 := s1 * (0.1 + 0.8*r.Float64())
		st := s0 * (0.1 + 0.8*r.Float64())
		x, e, m1 := r.NormFloat64()*s0, r.NormFloat64(), r.NormFloat64()
		at, sgt, lt := conv(st)
		a0, sg0, l0 := conv(s0)
		_, _, l1 := conv(s1)
		m0 := (x - sg0*e) / a0 // convert_model_output
		if got := DataPrediction(s0, false).At(x, e, 0, 0); relErr(got, m0) > 1e-12 {
			t.Fatalf("data prediction %g, want %g", got, m0)
		}
		h := lt - l0
		first := (sgt/sg0)*x - at*(math.Exp(-h)-1)*m0
		if got := DPMSolverPP2MUpdate(0, s0, st, true, false).At(x, e, 0, 0); relErr(got, first) > 1e-11 {
			t.Fatalf("first order %v -> %v: %g, want %g", s0, st, got, first)
		}
		h0 := l0 - l1
		r0 := h0 / h
		D0, D1 := m0, (1/r0)*(m0-m1)
		second := (sgt/sg0)*x - at*(math.Exp(-h)-1)*D0 - 0.5*at*(math.Exp(-h)-1)*D1
		if got := DPMSolverPP2MUpdate(s1, s0, st, false, false).At(x, e, 0, m1); relErr(got, second) > 1e-11 {
			t.Fatalf("second order %v, %v -> %v: %g, want %g", s1, s0, st, got, second)
		}
		// To sigma = 0 (final_sigmas_type "zero"): alpha_t = 1, sigma_t = 0, the step returns m0.
		if got := DPMSolverPP2MUpdate(s1, s0, 0, false, false).At(x, e, 0, m1); relErr(got, m0) > 1e-12 {
			t.Fatalf("last step: %g, want m0 = %g", got, m0)
		}
	}
}

// TestRespace: keeping every step returns the schedule itself; keeping some gives the schedule of the jumps between
// them: abar' the kept abar, and the posterior variance beta~'_k that of q(x_s | x_t, x0) for consecutive kept
// s < t, derived by Bayes' rule from q(x_t | x_s) = N(sqrt(abar_t/abar_s) x_s, 1 - abar_t/abar_s).
func TestRespace(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	all, _ := TimestepsWith(SpacingLeading, 1000, 1000)
	if rs, err := s.Respace(all); err != nil || rs != s {
		t.Fatalf("Respace(all steps) = %p, %v; want s itself", rs, err)
	}
	for _, sp := range []Spacing{SpacingLeading, SpacingTrailing, SpacingLinspace} {
		kept, _ := TimestepsWith(sp, 1000, 37)
		rs, err := s.Respace(kept)
		if err != nil {
			t.Fatal(err)
		}
		for k := range rs.T {
			tt := kept[rs.T-1-k]
			if rs.AlphaBar[k] != s.AlphaBar[tt] {
				t.Fatalf("%s: abar'_%d = %v, want abar_%d = %v", sp, k, rs.AlphaBar[k], tt, s.AlphaBar[tt])
			}
			abS := 1.0
			if k > 0 {
				abS = s.AlphaBar[kept[rs.T-k]]
			}
			a := s.AlphaBar[tt] / abS // the jump's alpha
			want := 1 / (a/(1-a) + 1/(1-abS))
			if k == 0 {
				want = 0
			}
			if math.Abs(rs.PosteriorVariance[k]-want) > 1e-12*(1-a) {
				t.Fatalf("%s: beta~'_%d = %g, want %g", sp, k, rs.PosteriorVariance[k], want)
			}
		}
	}
	for _, bad := range [][]int{{}, {5, 5}, {3, 4}, {1000}, {-1}} {
		if _, err := s.Respace(bad); err == nil {
			t.Errorf("Respace(%v) accepted", bad)
		}
	}
}

// TestDDIMUpdate: without clipping DDIMUpdate is DDIMStepAt; with a clipped x0^ it keeps the network's eps^
// (diffusers' default) where DDIMStepAt recomputes it, and the two differ.
func TestDDIMUpdate(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	r := rand.New(rand.NewPCG(7, 8))
	for range 100 {
		tt := 1 + r.IntN(999)
		prev := r.IntN(tt+1) - 1
		eta := r.Float64()
		x, e, z := r.NormFloat64(), r.NormFloat64(), r.NormFloat64()
		if got, want := s.DDIMUpdate(tt, prev, eta, false).At(x, e, z, 0), s.DDIMStepAt(tt, prev, eta, x, e, z, false); math.Abs(got-want) > 1e-12 {
			t.Fatalf("t=%d->%d: DDIMUpdate %g, DDIMStepAt %g", tt, prev, got, want)
		}
	}
	// x0^ = 3 clipped to 1; eps^ kept: sqrt(abar_prev)·1 + sqrt(1 - abar_prev)·eps^ (eta = 0).
	const tt, prev = 400, 380
	x0 := 3.0
	e := 0.2
	x := s.SqrtAlphaBar[tt]*x0 + s.SqrtOneMinusAlphaBar[tt]*e
	want := s.SqrtAlphaBar[prev] + math.Sqrt(1-s.AlphaBar[prev])*e
	if got := s.DDIMUpdate(tt, prev, 0, true).At(x, e, 0, 0); math.Abs(got-want) > 1e-12 {
		t.Errorf("clipped, eps^ kept: %g, want %g", got, want)
	}
	if rec := s.DDIMStepAt(tt, prev, 0, x, e, 0, true); math.Abs(rec-want) < 1e-3 {
		t.Errorf("recomputing eps^ gives %g, the same as keeping it (%g)", rec, want)
	}
}
