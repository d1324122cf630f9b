package diffusion

import (
	"fmt"
	"math"
)

// VarianceKind picks the variance sigma_t^2 of DDPM's reverse step. Ho et al. found both to work equally well.
type VarianceKind int

const (
	// VarBeta is sigma_t^2 = beta_t, the upper bound (improved-diffusion's "fixedlarge").
	VarBeta VarianceKind = iota
	// VarPosterior is sigma_t^2 = beta~_t = beta_t (1 - abar_{t-1})/(1 - abar_t), the lower bound, exact when x0
	// is a single point (improved-diffusion's "fixedsmall", diffusers' "fixed_small").
	VarPosterior
)

func (v VarianceKind) String() string {
	switch v {
	case VarBeta:
		return "beta"
	case VarPosterior:
		return "posterior"
	}
	return fmt.Sprintf("VarianceKind(%d)", int(v))
}

// ParseVarianceKind reads a config value: "beta" (or improved-diffusion's "fixedlarge", diffusers' "fixed_large")
// for VarBeta, "posterior" (or "fixedsmall", "fixed_small") for VarPosterior.
func ParseVarianceKind(s string) (VarianceKind, error) {
	switch s {
	case "beta", "fixedlarge", "fixed_large":
		return VarBeta, nil
	case "posterior", "fixedsmall", "fixed_small":
		return VarPosterior, nil
	}
	return 0, fmt.Errorf("diffusion: unknown variance %q (allowed: beta|fixed_large|fixedlarge, posterior|fixed_small|fixedsmall)", s)
}

// Sigma is DDPM's reverse-step standard deviation sigma_t: sqrt(beta_t) or sqrt(beta~_t), and 0 at t = 0, where
// Algorithm 2 adds no noise (the step lands on the data).
func (s *Schedule) Sigma(t int, v VarianceKind) float64 {
	if t == 0 {
		return 0
	}
	if v == VarPosterior {
		return math.Sqrt(s.PosteriorVariance[t])
	}
	return math.Sqrt(s.Beta[t])
}

// DDPMStepAt is one step of DDPM's ancestral sampler (Algorithm 2) in float64, written with x0:
//
//	x0^     = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t),   clipped to [-1, 1] if clipX0
//	mu      = c1_t x0^ + c2_t x_t
//	x_{t-1} = mu + sigma_t z                                   (sigma_0 = 0)
//
// Unclipped, mu equals Algorithm 2's (1/sqrt(alpha_t)) (x_t - beta_t/sqrt(1 - abar_t) eps^) (PosteriorMeanEpsAt).
func (s *Schedule) DDPMStepAt(t int, xt, epsHat, z float64, v VarianceKind, clipX0 bool) float64 {
	x0 := s.PredictX0At(t, xt, epsHat)
	if clipX0 {
		x0 = math.Max(-1, math.Min(1, x0))
	}
	return s.PosteriorMeanX0At(t, x0, xt) + s.Sigma(t, v)*z
}

// DDPMStep applies DDPMStepAt to every element, with all samples at the same timestep t:
//
//	x0 = a*xt[i] - b*epsHat[i]  (clipped if clipX0),  out[i] = c1*x0 + c2*xt[i] + sigma*z[i]
//
// with a, b, c1, c2, sigma the float32 roundings of SqrtRecipAlphaBar[t], SqrtRecipM1AlphaBar[t],
// PosteriorMeanCoef1[t], PosteriorMeanCoef2[t] and Sigma(t, variance); every operation a separately rounded float32
// op in this order. This is the unfused form of the posterior kernel. z is not read when sigma = 0 (t = 0) and may
// then be nil. out may alias xt.
func DDPMStep(xt, epsHat []float32, t int, s *Schedule, variance VarianceKind, clipX0 bool, z, out []float32) error {
	if s == nil {
		return fmt.Errorf("diffusion.DDPMStep: nil schedule")
	}
	if t < 0 || t >= s.T {
		return fmt.Errorf("diffusion.DDPMStep: t = %d, want 0 <= t < T = %d", t, s.T)
	}
	if variance != VarBeta && variance != VarPosterior {
		return fmt.Errorf("diffusion.DDPMStep: unknown variance kind %v", variance)
	}
	sigma := s.Sigma(t, variance)
	if err := checkStep("DDPMStep", sigma != 0, xt, epsHat, z, out); err != nil {
		return err
	}
	a, b := float32(s.SqrtRecipAlphaBar[t]), float32(s.SqrtRecipM1AlphaBar[t])
	c1, c2, sg := float32(s.PosteriorMeanCoef1[t]), float32(s.PosteriorMeanCoef2[t]), float32(sigma)
	for i, x := range xt {
		x0 := fmul(a, x) - fmul(b, epsHat[i])
		if clipX0 {
			x0 = clip1(x0)
		}
		mu := fmul(c1, x0) + fmul(c2, x)
		if sg != 0 {
			mu += fmul(sg, z[i])
		}
		out[i] = mu
	}
	return nil
}

// DDIMSigma is the standard deviation of a DDIM step from t to tPrev (Song et al. eq. 16):
//
//	sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev),   abar_prev = AlphaBarAt(tPrev).
//
// eta = 0 is the deterministic DDIM; eta = 1 with tPrev = t-1 gives sigma^2 = beta~_t, DDPM's posterior variance.
func (s *Schedule) DDIMSigma(t, tPrev int, eta float64) float64 {
	ab, abPrev := s.AlphaBar[t], s.AlphaBarAt(tPrev)
	return eta * math.Sqrt((1-abPrev)/(1-ab)) * math.Sqrt(1-ab/abPrev)
}

// DDIMStepAt is one DDIM step from t to tPrev (Song et al. eq. 12) in float64:
//
//	x0^    = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t)
//	if clipX0: x0^ = clip(x0^, -1, 1) and eps^ = (x_t - sqrt(abar_t) x0^) / sqrt(1 - abar_t)
//	x_prev = sqrt(abar_prev) x0^ + sqrt(1 - abar_prev - sigma^2) eps^ + sigma z
//
// Recomputing eps^ from the clipped x0^ is what improved-diffusion's ddim_sample does (and this project's sampler by
// default); diffusers' DDIMScheduler does it only with use_clipped_model_output=True and by default keeps the
// network's eps^ in the direction term: that variant is DDIMAffine.
// with sigma = DDIMSigma(t, tPrev, eta) and abar_prev = AlphaBarAt(tPrev) (1 at tPrev = -1). 1 - abar_prev - sigma^2
// is >= 0 for eta in [0, 1] and is clamped at 0 against rounding.
func (s *Schedule) DDIMStepAt(t, tPrev int, eta, xt, epsHat, z float64, clipX0 bool) float64 {
	abPrev := s.AlphaBarAt(tPrev)
	sigma := s.DDIMSigma(t, tPrev, eta)
	x0 := s.PredictX0At(t, xt, epsHat)
	if clipX0 {
		x0 = math.Max(-1, math.Min(1, x0))
		epsHat = s.PredictEpsAt(t, xt, x0)
	}
	return math.Sqrt(abPrev)*x0 + math.Sqrt(max(0, 1-abPrev-sigma*sigma))*epsHat + sigma*z
}

// DDIMStep applies DDIMStepAt to every element, with all samples stepping from t to tPrev (-1 <= tPrev < t; -1
// means the data, abar_prev = 1). Per element, in float32, each operation rounded on its own in this order:
//
//	x0 = a*xt[i] - b*epsHat[i]
//	e  = epsHat[i], or if clipX0: x0 = clip(x0), e = (xt[i] - sa*x0) * rs
//	out[i] = p*x0 + k*e + sigma*z[i]
//
// with a, b, sa, rs, p, k, sigma the float32 roundings of 1/sqrt(abar_t), sqrt(1/abar_t - 1), sqrt(abar_t),
// 1/sqrt(1 - abar_t), sqrt(abar_prev), sqrt(max(0, 1 - abar_prev - sigma^2)) and DDIMSigma. eta must lie in
// [0, 1]; z is not read when sigma = 0 (eta = 0, or tPrev = -1) and may then be nil. out may alias xt.
func DDIMStep(xt, epsHat []float32, t, tPrev int, s *Schedule, eta float64, clipX0 bool, z, out []float32) error {
	if s == nil {
		return fmt.Errorf("diffusion.DDIMStep: nil schedule")
	}
	if t < 0 || t >= s.T || tPrev < -1 || tPrev >= t {
		return fmt.Errorf("diffusion.DDIMStep: t = %d, tPrev = %d, want -1 <= tPrev < t < T = %d", t, tPrev, s.T)
	}
	if !(eta >= 0 && eta <= 1) {
		return fmt.Errorf("diffusion.DDIMStep: eta = %g, want 0 <= eta <= 1", eta)
	}
	abPrev := s.AlphaBarAt(tPrev)
	sigma := s.DDIMSigma(t, tPrev, eta)
	if err := checkStep("DDIMStep", sigma != 0, xt, epsHat, z, out); err != nil {
		return err
	}
	a, b := float32(s.SqrtRecipAlphaBar[t]), float32(s.SqrtRecipM1AlphaBar[t])
	sa, rs := float32(s.SqrtAlphaBar[t]), float32(1/s.SqrtOneMinusAlphaBar[t])
	p, k := float32(math.Sqrt(abPrev)), float32(math.Sqrt(max(0, 1-abPrev-sigma*sigma)))
	sg := float32(sigma)
	for i, x := range xt {
		x0 := fmul(a, x) - fmul(b, epsHat[i])
		e := epsHat[i]
		if clipX0 {
			x0 = clip1(x0)
			e = fmul(x-fmul(sa, x0), rs)
		}
		v := fmul(p, x0) + fmul(k, e)
		if sg != 0 {
			v += fmul(sg, z[i])
		}
		out[i] = v
	}
	return nil
}

// checkStep validates a sampler step's tensors: xt, epsHat and out of one length, and z too when it is read.
func checkStep(op string, needZ bool, xt, epsHat, z, out []float32) error {
	n := len(xt)
	if len(epsHat) != n || len(out) != n || (needZ && len(z) != n) {
		return fmt.Errorf("diffusion.%s: len(xt)=%d len(epsHat)=%d len(z)=%d len(out)=%d, want all equal (z may be "+
			"nil only when sigma = 0)", op, n, len(epsHat), len(z), len(out))
	}
	return nil
}

// Spacing picks which timesteps a sampler with fewer steps than T visits; the names are diffusers'
// timestep_spacing values (with steps_offset = 0).
type Spacing string

const (
	// SpacingLeading is k*(T/steps) for k = steps-1 .. 0 (integer division): starts low, ends at 0. DDIM's
	// default in diffusers and in the DDIM paper; with T = 1000, steps = 50: 980, 960, ..., 20, 0.
	SpacingLeading Spacing = "leading"
	// SpacingTrailing is round(T - k*T/steps) - 1 for k = 0 .. steps-1: starts at T-1; with T = 1000,
	// steps = 50: 999, 979, ..., 19.
	SpacingTrailing Spacing = "trailing"
	// SpacingLinspace is round(k*(T-1)/(steps-1)) for k = steps-1 .. 0: both ends included.
	SpacingLinspace Spacing = "linspace"
)

// ParseSpacing reads a spacing name: leading, trailing, linspace or karras.
func ParseSpacing(name string) (Spacing, error) {
	switch sp := Spacing(name); sp {
	case SpacingLeading, SpacingTrailing, SpacingLinspace, SpacingKarras:
		return sp, nil
	}
	return "", fmt.Errorf("diffusion: unknown spacing %q (allowed: %s, %s, %s, %s)", name, SpacingLeading, SpacingTrailing,
		SpacingLinspace, SpacingKarras)
}

// Timesteps is TimestepsWith(SpacingLeading, T, steps), the spacing DDIM uses by default.
func Timesteps(T, steps int) ([]int, error) {
	return TimestepsWith(SpacingLeading, T, steps)
}

// TimestepsWith returns the steps timesteps a sampler visits, strictly decreasing, each in [0, T). Step i of a
// DDIM run goes from ts[i] to tPrev = ts[i+1], and the last one to tPrev = -1. Rounding is half to even, as
// numpy's. It needs 1 <= steps <= T.
func TimestepsWith(spacing Spacing, T, steps int) ([]int, error) {
	if T < 1 || steps < 1 || steps > T {
		return nil, fmt.Errorf("diffusion.Timesteps(%s): T = %d, steps = %d, want 1 <= steps <= T", spacing, T, steps)
	}
	ts := make([]int, steps)
	switch spacing {
	case SpacingLeading:
		ratio := T / steps
		for i := range ts {
			ts[i] = (steps - 1 - i) * ratio
		}
	case SpacingTrailing:
		ratio := float64(T) / float64(steps)
		for i := range ts {
			ts[i] = int(math.RoundToEven(float64(T)-float64(i)*ratio)) - 1
		}
	case SpacingLinspace:
		for i := range ts {
			k := steps - 1 - i
			if steps == 1 {
				ts[i] = 0
				continue
			}
			ts[i] = int(math.RoundToEven(float64(k) * float64(T-1) / float64(steps-1)))
		}
	case SpacingKarras:
		return nil, fmt.Errorf("diffusion.Timesteps: %q is a grid of noise levels, not of timesteps: it serves the sigma "+
			"samplers (SigmaSchedule, DPMSolverSigmas) only", spacing)
	default:
		return nil, fmt.Errorf("diffusion.Timesteps: unknown spacing %q (allowed: %q, %q, %q)", spacing,
			SpacingLeading, SpacingTrailing, SpacingLinspace)
	}
	return ts, nil
}
