package diffusion

import (
	"math"
	"strings"
	"testing"
)

func mustLinear(t *testing.T, T int, b0, b1 float64) *Schedule {
	t.Helper()
	s, err := Linear(T, b0, b1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCosine(t *testing.T, T int) *Schedule {
	t.Helper()
	s, err := Cosine(T)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type namedSchedule struct {
	name string
	s    *Schedule
}

// standardSchedules are DDPM's linear schedule and the cosine schedule at T = 1000, in a fixed order (so that a
// test drawing random numbers for each sees the same numbers every run).
func standardSchedules(t *testing.T) []namedSchedule {
	return []namedSchedule{{"linear", mustLinear(t, 1000, 1e-4, 0.02)}, {"cosine", mustCosine(t, 1000)}}
}

func relErr(got, want float64) float64 {
	return math.Abs(got-want) / math.Max(math.Abs(want), 1e-300)
}

// TestLinearAlphaBarT: DDPM's schedule (T = 1000, beta from 1e-4 to 0.02) leaves abar_T ~ 4.0e-5 of the signal
// variance (Ho et al. sec. 4: "L_T ~ 1e-5 bits per dimension"). The product is recomputed here from the linspace
// definition.
func TestLinearAlphaBarT(t *testing.T) {
	s := mustLinear(t, 1000, 1e-4, 0.02)
	prod := 1.0
	for i := 0; i < 1000; i++ {
		prod *= 1 - (1e-4 + float64(i)*(0.02-1e-4)/999)
	}
	got := s.AlphaBar[999]
	if got < 3.5e-5 || got > 4.5e-5 {
		t.Errorf("abar_T = %g, want about 4.0e-5 (3.5e-5 .. 4.5e-5)", got)
	}
	if e := relErr(got, prod); e > 1e-12 {
		t.Errorf("abar_T = %.17g, independent product %.17g (rel err %g)", got, prod, e)
	}
	if s.Beta[0] != 1e-4 || s.Beta[999] != 0.02 {
		t.Errorf("beta_0, beta_T = %g, %g, want the end points 1e-4, 0.02", s.Beta[0], s.Beta[999])
	}
	if d := s.Beta[1] - s.Beta[0]; math.Abs(d-(0.02-1e-4)/999) > 1e-15 {
		t.Errorf("beta spacing %g, want (0.02-1e-4)/999", d)
	}
}

// TestScheduleMatchesGaussianPosterior derives the posterior q(x_{t-1} | x_t, x0) from first principles and checks
// the Schedule's closed forms against it. With q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) and
// q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}), Bayes' rule for Gaussians gives
//
//	1/var = alpha_t/beta_t + 1/(1 - abar_{t-1}),   mean = var (sqrt(alpha_t)/beta_t x_t + sqrt(abar_{t-1})/(1 - abar_{t-1}) x0)
//
// for t >= 1; at t = 0 the posterior is the point x0. abar is rebuilt here by its recursion.
func TestScheduleMatchesGaussianPosterior(t *testing.T) {
	for _, c := range append(standardSchedules(t), namedSchedule{"short", mustLinear(t, 7, 0.1, 0.3)}) {
		s := c.s
		t.Run(c.name, func(t *testing.T) {
			abPrev := 1.0
			for i := 0; i < s.T; i++ {
				beta := s.Beta[i]
				alpha := 1 - beta
				ab := abPrev * alpha
				type check struct {
					what      string
					got, want float64
				}
				checks := []check{
					{"Alpha", s.Alpha[i], alpha},
					{"AlphaBar", s.AlphaBar[i], ab},
					{"AlphaBarPrev", s.AlphaBarPrev[i], abPrev},
					{"SqrtAlphaBar^2", s.SqrtAlphaBar[i] * s.SqrtAlphaBar[i], ab},
					{"SqrtOneMinusAlphaBar^2", s.SqrtOneMinusAlphaBar[i] * s.SqrtOneMinusAlphaBar[i], 1 - ab},
					{"SqrtRecipAlpha^2 * alpha", s.SqrtRecipAlpha[i] * s.SqrtRecipAlpha[i] * alpha, 1},
					{"SqrtRecipAlphaBar * SqrtAlphaBar", s.SqrtRecipAlphaBar[i] * s.SqrtAlphaBar[i], 1},
					{"SqrtRecipM1AlphaBar^2", s.SqrtRecipM1AlphaBar[i] * s.SqrtRecipM1AlphaBar[i], (1 - ab) / ab},
				}
				if i == 0 {
					checks = append(checks, check{"PosteriorMeanCoef1", s.PosteriorMeanCoef1[i], 1},
						check{"PosteriorMeanCoef2", s.PosteriorMeanCoef2[i], 0})
				} else {
					v := 1 / (alpha/beta + 1/(1-abPrev))
					checks = append(checks,
						check{"PosteriorVariance", s.PosteriorVariance[i], v},
						check{"PosteriorLogVarianceClipped", s.PosteriorLogVarianceClipped[i], math.Log(v)},
						check{"PosteriorMeanCoef1", s.PosteriorMeanCoef1[i], v * math.Sqrt(abPrev) / (1 - abPrev)},
						check{"PosteriorMeanCoef2", s.PosteriorMeanCoef2[i], v * math.Sqrt(alpha) / beta})
				}
				for _, c := range checks {
					tol := 1e-12 * math.Max(1, math.Abs(c.want))
					if c.want == 0 {
						tol = 1e-15
					}
					if math.Abs(c.got-c.want) > tol {
						t.Fatalf("t=%d %s = %.17g, want %.17g", i, c.what, c.got, c.want)
					}
				}
				abPrev = ab
			}
			if s.PosteriorVariance[0] != 0 {
				t.Errorf("PosteriorVariance[0] = %g, want 0 (x_{-1} is the data)", s.PosteriorVariance[0])
			}
			if got, want := s.PosteriorLogVarianceClipped[0], math.Log(s.PosteriorVariance[1]); got != want {
				t.Errorf("PosteriorLogVarianceClipped[0] = %g, want log(beta~_1) = %g", got, want)
			}
		})
	}
}

// TestCosine: Nichol and Dhariwal's schedule keeps beta <= 0.999, abar strictly decreasing from nearly 1, and
// abar_t = f(t+1)/f(0) with f(u) = cos^2((u + s)/(1 + s) pi/2) wherever beta was not clipped (the last step is).
func TestCosine(t *testing.T) {
	const T = 1000
	s := mustCosine(t, T)
	f := func(u float64) float64 { c := math.Cos((u + 0.008) / 1.008 * math.Pi / 2); return c * c }
	for i := 0; i < T; i++ {
		if !(s.Beta[i] > 0 && s.Beta[i] <= 0.999) {
			t.Fatalf("beta[%d] = %g, want in (0, 0.999]", i, s.Beta[i])
		}
		if i > 0 && !(s.AlphaBar[i] < s.AlphaBar[i-1]) {
			t.Fatalf("abar[%d] = %g not below abar[%d] = %g", i, s.AlphaBar[i], i-1, s.AlphaBar[i-1])
		}
		if s.Beta[i] < 0.999 {
			if e := relErr(s.AlphaBar[i], f(float64(i+1)/T)/f(0)); e > 1e-9 {
				t.Fatalf("abar[%d] = %.15g, want f(%d/T)/f(0) = %.15g", i, s.AlphaBar[i], i+1, f(float64(i+1)/T)/f(0))
			}
		}
	}
	if s.AlphaBar[0] < 0.9999 || s.AlphaBar[0] >= 1 {
		t.Errorf("abar_0 = %.8f, want close to 1 (> 0.9999)", s.AlphaBar[0])
	}
	if s.Beta[T-1] != 0.999 {
		t.Errorf("last beta = %g, want the clip 0.999 (f(1) = 0 would make it 1)", s.Beta[T-1])
	}
	if s.AlphaBar[T-1] > 1e-6 {
		t.Errorf("abar_T = %g, want ~0 (pure noise)", s.AlphaBar[T-1])
	}
}

func TestNew(t *testing.T) {
	lin, err := New("linear", 100, 1e-4, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustLinear(t, 100, 1e-4, 0.02); lin.AlphaBar[99] != want.AlphaBar[99] || lin.T != 100 {
		t.Errorf("New(linear) differs from Linear")
	}
	cos, err := New("cosine", 100, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustCosine(t, 100); cos.AlphaBar[50] != want.AlphaBar[50] {
		t.Errorf("New(cosine) differs from Cosine")
	}
	for _, kind := range []string{"quadratic", "Linear", "", "sigmoid"} {
		_, err := New(kind, 100, 1e-4, 0.02)
		if err == nil {
			t.Errorf("New(%q) accepted an unknown kind", kind)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "unknown schedule kind") || !strings.Contains(msg, `"linear"`) ||
			!strings.Contains(msg, `"cosine"`) {
			t.Errorf("New(%q) error %q should name the kind and the allowed ones", kind, msg)
		}
	}
	for _, c := range []struct {
		T      int
		b0, b1 float64
	}{{1, 1e-4, 0.02}, {0, 1e-4, 0.02}, {1000, 0, 0.02}, {1000, 1e-4, 1}, {1000, -1e-4, 0.02}, {10, math.NaN(), 0.1}} {
		if _, err := Linear(c.T, c.b0, c.b1); err == nil {
			t.Errorf("Linear(%d, %g, %g) accepted invalid arguments", c.T, c.b0, c.b1)
		}
	}
	if _, err := Cosine(1); err == nil {
		t.Error("Cosine(1) accepted T = 1")
	}
}
