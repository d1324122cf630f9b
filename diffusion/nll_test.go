package diffusion

import (
	"math"
	"math/rand/v2"
	"testing"
)

// simpson integrates f over [a, b] with n (even) intervals.
func simpson(f func(float64) float64, a, b float64, n int) float64 {
	h := (b - a) / float64(n)
	s := f(a) + f(b)
	for i := 1; i < n; i++ {
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		s += w * f(a+float64(i)*h)
	}
	return s * h / 3
}

func normalPDF(x, mean, variance float64) float64 {
	d := x - mean
	return math.Exp(-d*d/(2*variance)) / math.Sqrt(2*math.Pi*variance)
}

// numericKL is ∫ q log(q/p) dx for q = N(m1, v1), p = N(m2, v2), by Simpson's rule over m1 ± 14 sd.
func numericKL(m1, v1, m2, v2 float64) float64 {
	sd := math.Sqrt(v1)
	return simpson(func(x float64) float64 {
		q := normalPDF(x, m1, v1)
		if q == 0 {
			return 0
		}
		lq := -(x-m1)*(x-m1)/(2*v1) - 0.5*math.Log(2*math.Pi*v1)
		lp := -(x-m2)*(x-m2)/(2*v2) - 0.5*math.Log(2*math.Pi*v2)
		return q * (lq - lp)
	}, m1-14*sd, m1+14*sd, 20000)
}

// TestNormalKL against the integral, to 1e-9 absolute.
func TestNormalKL(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 50 {
		m1, m2 := r.NormFloat64(), r.NormFloat64()
		v1, v2 := math.Exp(3*r.NormFloat64()), math.Exp(3*r.NormFloat64())
		got, want := NormalKL(m1, math.Log(v1), m2, math.Log(v2)), numericKL(m1, v1, m2, v2)
		if math.Abs(got-want) > 1e-9*(1+want) {
			t.Fatalf("KL(N(%g, %g) || N(%g, %g)) = %.12g, integral %.12g", m1, v1, m2, v2, got, want)
		}
	}
}

// logBinNumeric is log ∫_lo^hi N(x; mean, s²) dx (−inf/+inf for an open end), integrated relative to the density's
// largest value on the interval so that far tails stay representable.
func logBinNumeric(lo, hi, mean, s float64) float64 {
	z := func(x float64) float64 { return (x - mean) / s }
	zl, zh := z(lo), z(hi)
	if math.IsInf(lo, -1) {
		zl = math.Min(zh, 0) - 40
	}
	if math.IsInf(hi, 1) {
		zh = math.Max(zl, 0) + 40
	}
	peak := 0.0 // the largest z² / 2 is smallest at the point nearest 0
	if zl > 0 {
		peak = zl * zl / 2
	} else if zh < 0 {
		peak = zh * zh / 2
	}
	v := simpson(func(u float64) float64 { return math.Exp(peak - u*u/2) }, zl, zh, 20000)
	return math.Log(v) - peak - 0.5*math.Log(2*math.Pi)
}

// TestDiscretizedGaussian: the decoder's log-probability against the integral of the density over the bin (the
// first and last bins open-ended), from the bin's centre to 60 standard deviations away; to 1e-7 relative.
func TestDiscretizedGaussian(t *testing.T) {
	for _, x := range []float64{-1, -1 + 2.0/255, -0.2, 0, 0.5, 1 - 2.0/255, 1} {
		for _, s := range []float64{0.003, 0.0074, 0.05, 0.8} {
			for _, k := range []float64{0, 0.3, -1, 2.5, 8, -20, 60} {
				mean := x + k*s
				lo, hi := x-BinHalfWidth, x+BinHalfWidth
				if x < -0.999 {
					lo = math.Inf(-1)
				}
				if x > 0.999 {
					hi = math.Inf(1)
				}
				want := logBinNumeric(lo, hi, mean, s)
				got := DiscretizedGaussianLogLikelihood(x, mean, math.Log(s))
				if math.Abs(got-want) > 1e-7*(1+math.Abs(want)) {
					t.Errorf("x = %g, mean = %g, scale = %g: %.12g, integral %.12g", x, mean, s, got, want)
				}
			}
		}
	}
	// Continuity where logQ switches from erfc to the asymptotic series.
	if d := logQ(25-1e-9) - logQ(25+1e-9); math.Abs(d) > 1e-6 {
		t.Errorf("logQ jumps at 25 by %g", d)
	}
}

// TestPriorKL: L_T of the linear schedule is ~1e-5 bits per dimension for data in [-1, 1] (Ho et al., §4), and equals
// the integral.
func TestPriorKL(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	for _, x0 := range []float64{-1, 0, 0.6, 1} {
		ab := s.AlphaBar[999]
		want := numericKL(math.Sqrt(ab)*x0, 1-ab, 0, 1)
		got := s.PriorKL(x0)
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("PriorKL(%g) = %.6g, integral %.6g", x0, got, want)
		}
		if bits := got / math.Ln2; bits > 1e-4 || bits <= 0 {
			t.Errorf("PriorKL(%g) = %g bits", x0, bits)
		}
	}
}

// TestVBTerm: each term against a direct computation from the paper's definitions, in float64: the KL terms as the
// integral of q(x_{t-1} | x_t, x0) log(q/p) with q built by Bayes' rule (independentPosterior) and p = N(mu_theta,
// sigma_t^2), mu_theta = (x_t - beta_t/sqrt(1 - abar_t) eps^)/sqrt(alpha_t) (eq. 11) and sigma_t^2 = beta_t or
// beta~_t (beta~_1 for the decoder, as Ho et al.'s code); the decoder term as the integral of N(mu_theta, sigma^2)
// over x0's bin.
func TestVBTerm(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	r := rand.New(rand.NewPCG(2, 2))
	for _, v := range []VarianceKind{VarBeta, VarPosterior} {
		for _, tt := range []int{0, 1, 2, 10, 300, 999} {
			x0 := math.Round((2*r.Float64()-1)*127.5)/127.5 + 0 // on the 8-bit grid
			x0 = math.Max(-1, math.Min(1, x0))
			eps := r.NormFloat64()
			xt := s.SqrtAlphaBar[tt]*x0 + s.SqrtOneMinusAlphaBar[tt]*eps
			epsHat := eps + 0.3*r.NormFloat64() // an imperfect network
			mu := (xt - s.Beta[tt]/s.SqrtOneMinusAlphaBar[tt]*epsHat) / math.Sqrt(s.Alpha[tt])
			varP := s.Beta[tt]
			if v == VarPosterior || tt == 0 {
				varP = s.PosteriorVariance[max(tt, 1)]
			}
			got := s.VBTerm(tt, x0, xt, epsHat, v, false)
			var want float64
			if tt == 0 {
				lo, hi := x0-BinHalfWidth, x0+BinHalfWidth
				if x0 < -0.999 {
					lo = math.Inf(-1)
				}
				if x0 > 0.999 {
					hi = math.Inf(1)
				}
				want = -logBinNumeric(lo, hi, mu, math.Sqrt(varP))
			} else {
				mq, vq := independentPosterior(s, tt, x0, xt)
				want = numericKL(mq, vq, mu, varP)
			}
			if math.Abs(got-want) > 1e-7*(1+math.Abs(want)) {
				t.Errorf("%v t=%d: VBTerm %.10g, direct %.10g", v, tt, got, want)
			}
		}
	}
	// Clipping changes mu_theta where x0^ leaves [-1, 1] and nowhere else.
	tt := 500
	xt := s.SqrtAlphaBar[tt]*0.5 + s.SqrtOneMinusAlphaBar[tt]*0.1
	if a, b := s.VBTerm(tt, 0.5, xt, 0.1, VarBeta, false), s.VBTerm(tt, 0.5, xt, 0.1, VarBeta, true); a != b {
		t.Errorf("clipping changed a term whose x0^ = 0.5: %g vs %g", a, b)
	}
	if a, b := s.VBTerm(tt, 0.5, xt, -3, VarBeta, false), s.VBTerm(tt, 0.5, xt, -3, VarBeta, true); a == b {
		t.Errorf("clipping left a term whose x0^ is far outside [-1, 1] unchanged: %g", a)
	}
}
