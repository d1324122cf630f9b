package diffusion

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestForwardProcessMatchesClosedForm runs the one-step forward process x <- sqrt(1 - beta_t) x + sqrt(beta_t) eps
// (DDPM eq. 2) from a fixed x0 for N independent paths, and checks at several t that the empirical mean and
// variance match the closed form q(x_t | x0) = N(sqrt(abar_t) x0, 1 - abar_t) (eq. 4), within 5 standard errors:
// sqrt(var/N) for the mean, var sqrt(2/(N-1)) for the variance. It also checks that QSample's draws, from the same
// number of independent eps, have the same mean and variance (5 standard errors of the difference).
func TestForwardProcessMatchesClosedForm(t *testing.T) {
	const (
		N  = 40000
		x0 = 0.8
	)
	s := mustLinear(t, 1000, 1e-4, 0.02)
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float64, N)
	for i := range x {
		x[i] = x0
	}
	checkAt := map[int]bool{0: true, 1: true, 9: true, 99: true, 299: true, 999: true}
	for step := 0; step < s.T; step++ {
		a, b := math.Sqrt(1-s.Beta[step]), math.Sqrt(s.Beta[step])
		for i := range x {
			x[i] = a*x[i] + b*rng.NormFloat64()
		}
		if !checkAt[step] {
			continue
		}
		mean, variance := meanVar(x)
		wantMean, wantVar := math.Sqrt(s.AlphaBar[step])*x0, 1-s.AlphaBar[step]
		if se := math.Sqrt(wantVar / N); math.Abs(mean-wantMean) > 5*se {
			t.Errorf("t=%d: iterated mean %.6f, closed form %.6f +- %.6f", step, mean, wantMean, 5*se)
		}
		if se := wantVar * math.Sqrt(2.0/(N-1)); math.Abs(variance-wantVar) > 5*se {
			t.Errorf("t=%d: iterated variance %.6g, closed form %.6g +- %.6g", step, variance, wantVar, 5*se)
		}

		// QSample from N fresh eps at the same t.
		x0s, eps, xt := make([]float32, N), make([]float32, N), make([]float32, N)
		ts := make([]int, N)
		for i := range eps {
			x0s[i], eps[i], ts[i] = x0, float32(rng.NormFloat64()), step
		}
		if err := QSample(x0s, eps, ts, 1, s, xt); err != nil {
			t.Fatal(err)
		}
		q := make([]float64, N)
		for i, v := range xt {
			q[i] = float64(v)
		}
		qMean, qVar := meanVar(q)
		if se := math.Sqrt(2 * wantVar / N); math.Abs(qMean-mean) > 5*se {
			t.Errorf("t=%d: QSample mean %.6f, iterated %.6f, want within %.6f", step, qMean, mean, 5*se)
		}
		if se := wantVar * math.Sqrt(4.0/(N-1)); math.Abs(qVar-variance) > 5*se {
			t.Errorf("t=%d: QSample variance %.6g, iterated %.6g, want within %.6g", step, qVar, variance, 5*se)
		}
	}
}

func meanVar(x []float64) (mean, variance float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	for _, v := range x {
		variance += (v - mean) * (v - mean)
	}
	return mean, variance / float64(len(x)-1)
}

// TestPosteriorMeanFormsAgree: the x0 form c1 x0 + c2 x_t and the eps form (1/sqrt(alpha_t))(x_t - beta_t/sqrt(1 -
// abar_t) eps) of the posterior mean are the same function of (x0, eps) once x_t = sqrt(abar_t) x0 + sqrt(1 -
// abar_t) eps; in float64 they agree to 1e-12.
func TestPosteriorMeanFormsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range standardSchedules(t) {
		name, s := c.name, c.s
		worst := 0.0
		for step := 0; step < s.T; step++ {
			for k := 0; k < 8; k++ {
				x0, eps := 2*rng.Float64()-1, rng.NormFloat64()
				xt := s.QSampleAt(step, x0, eps)
				a, b := s.PosteriorMeanX0At(step, x0, xt), s.PosteriorMeanEpsAt(step, xt, eps)
				worst = math.Max(worst, math.Abs(a-b)/(1+math.Abs(a)))
			}
		}
		if worst > 1e-12 {
			t.Errorf("%s: x0 and eps forms of the posterior mean differ by %g (1+|mu|), want <= 1e-12", name, worst)
		}
	}
}

// TestPredictRoundTrip: PredictX0At and PredictEpsAt invert QSampleAt.
func TestPredictRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range standardSchedules(t) {
		name, s := c.name, c.s
		for step := 0; step < s.T; step += 7 {
			x0, eps := 2*rng.Float64()-1, rng.NormFloat64()
			xt := s.QSampleAt(step, x0, eps)
			// x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar) amplifies rounding of x_t by 1/sqrt(abar).
			if got, tol := s.PredictX0At(step, xt, eps), 1e-14*s.SqrtRecipAlphaBar[step]; math.Abs(got-x0) > tol {
				t.Errorf("%s t=%d: PredictX0At = %.17g, want x0 = %.17g", name, step, got, x0)
			}
			if got, tol := s.PredictEpsAt(step, xt, x0), 1e-14/s.SqrtOneMinusAlphaBar[step]; math.Abs(got-eps) > tol {
				t.Errorf("%s t=%d: PredictEpsAt = %.17g, want eps = %.17g", name, step, got, eps)
			}
		}
	}
}

// TestElementwiseLoopsMatchScalars runs the float32 loops on a batch with a different timestep per sample and
// compares each element with the float64 scalar form. The tolerance is float32 rounding of the inputs, the
// coefficients and each operation: a few units of 2^-24 times the sum of the magnitudes of the terms.
func TestElementwiseLoopsMatchScalars(t *testing.T) {
	s := mustCosine(t, 1000)
	const per = 5
	ts := []int{0, 1, 17, 500, 998, 999}
	n := len(ts) * per
	rng := rand.New(rand.NewPCG(7, 8))
	x0, eps, xt := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range x0 {
		x0[i], eps[i] = float32(2*rng.Float64()-1), float32(rng.NormFloat64())
	}
	out := make([]float32, n)
	const u = 0x1p-24
	check := func(op string, i int, got float32, want, scale float64) {
		t.Helper()
		if math.Abs(float64(got)-want) > 4*u*scale {
			t.Errorf("%s[%d] (t=%d) = %.9g, want %.9g (tol %.3g)", op, i, ts[i/per], got, want, 4*u*scale)
		}
	}

	if err := QSample(x0, eps, ts, per, s, xt); err != nil {
		t.Fatal(err)
	}
	for i := range xt {
		tt, a, b := ts[i/per], float64(x0[i]), float64(eps[i])
		check("QSample", i, xt[i], s.QSampleAt(tt, a, b), s.SqrtAlphaBar[tt]*math.Abs(a)+s.SqrtOneMinusAlphaBar[tt]*math.Abs(b))
	}

	epsHat := make([]float32, n)
	for i := range epsHat {
		epsHat[i] = eps[i] + float32(0.1*rng.NormFloat64())
	}
	if err := PredictX0(xt, epsHat, ts, per, s, out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		tt, x, e := ts[i/per], float64(xt[i]), float64(epsHat[i])
		check("PredictX0", i, out[i], s.PredictX0At(tt, x, e), s.SqrtRecipAlphaBar[tt]*math.Abs(x)+s.SqrtRecipM1AlphaBar[tt]*math.Abs(e))
	}

	if err := PosteriorMeanX0(x0, xt, ts, per, s, out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		tt, a, x := ts[i/per], float64(x0[i]), float64(xt[i])
		check("PosteriorMeanX0", i, out[i], s.PosteriorMeanX0At(tt, a, x), s.PosteriorMeanCoef1[tt]*math.Abs(a)+s.PosteriorMeanCoef2[tt]*math.Abs(x))
	}

	if err := PosteriorMeanEps(xt, eps, ts, per, s, out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		tt, x, e := ts[i/per], float64(xt[i]), float64(eps[i])
		k := s.Beta[tt] / s.SqrtOneMinusAlphaBar[tt]
		check("PosteriorMeanEps", i, out[i], s.PosteriorMeanEpsAt(tt, x, e), s.SqrtRecipAlpha[tt]*(math.Abs(x)+k*math.Abs(e)))
	}

	// In place: out may alias an input.
	cp := append([]float32(nil), xt...)
	if err := QSample(x0, eps, ts, per, s, cp); err != nil {
		t.Fatal(err)
	}
	alias := append([]float32(nil), x0...)
	if err := QSample(alias, eps, ts, per, s, alias); err != nil {
		t.Fatal(err)
	}
	for i := range alias {
		if alias[i] != cp[i] {
			t.Fatalf("QSample in place [%d] = %v, want %v", i, alias[i], cp[i])
		}
	}
}

func TestElementwiseErrors(t *testing.T) {
	s := mustLinear(t, 10, 0.01, 0.2)
	ok := make([]float32, 6)
	cases := []struct {
		name      string
		x0, e, xt []float32
		ts        []int
		per       int
		s         *Schedule
		want      string
	}{
		{"short output", ok, ok, ok[:5], []int{1, 2}, 3, s, "[6 6 5]"},
		{"per sample 0", ok, ok, ok, []int{1, 2}, 0, s, "perSample = 0"},
		{"t too big", ok, ok, ok, []int{1, 10}, 3, s, "t[1] = 10"},
		{"t negative", ok, ok, ok, []int{-1, 2}, 3, s, "t[0] = -1"},
		{"nil schedule", ok, ok, ok, []int{1, 2}, 3, nil, "nil schedule"},
	}
	for _, c := range cases {
		for op, f := range map[string]func() error{
			"QSample":          func() error { return QSample(c.x0, c.e, c.ts, c.per, c.s, c.xt) },
			"PredictX0":        func() error { return PredictX0(c.x0, c.e, c.ts, c.per, c.s, c.xt) },
			"PosteriorMeanX0":  func() error { return PosteriorMeanX0(c.x0, c.e, c.ts, c.per, c.s, c.xt) },
			"PosteriorMeanEps": func() error { return PosteriorMeanEps(c.x0, c.e, c.ts, c.per, c.s, c.xt) },
		} {
			err := f()
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), op) {
				t.Errorf("%s, %s: error %v, want one naming %q and the op", c.name, op, err, c.want)
			}
		}
	}
}
