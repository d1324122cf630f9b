// Package diffusion holds the host-side maths of DDPM (Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic
// Models", 2020) and DDIM (Song, Meng and Ermon, "Denoising Diffusion Implicit Models", 2021): the noise schedule
// computed once in float64, the forward process q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0) and the reverse
// steps of the two samplers, as plain loops over float32 tensors. These loops are the CPU reference for the fused
// CUDA kernels (kernels/noise.cu); the float64 scalar methods of Schedule are the reference
// for the loops.
//
// # Indexing
//
// Timesteps are 0-indexed as in improved-diffusion and diffusers: index t in [0, T) is the paper's step t+1. So
// Beta[0] is the paper's beta_1, AlphaBar[t] = prod_{s<=t} (1 - Beta[s]) is the paper's abar_{t+1}, and x_t here
// is x_{t+1} there, while the data is x0 in both. "abar_{-1}" is defined as 1 (no noise): AlphaBarPrev[0] = 1, and
// the last reverse step (t = 0) lands on the data.
package diffusion

import (
	"fmt"
	"math"
)

// Schedule is a variance schedule with every per-timestep quantity the forward process, the loss and the samplers
// need, in float64, each of length T (indexed by t in [0, T), see the package doc):
//
//	Beta[t]                        beta_t
//	Alpha[t]                       alpha_t = 1 - beta_t
//	AlphaBar[t]                    abar_t = prod_{s=0..t} alpha_s
//	AlphaBarPrev[t]                abar_{t-1}, with abar_{-1} = 1
//	SqrtAlphaBar[t]                sqrt(abar_t)
//	SqrtOneMinusAlphaBar[t]        sqrt(1 - abar_t)
//	SqrtRecipAlpha[t]              1 / sqrt(alpha_t)
//	SqrtRecipAlphaBar[t]           1 / sqrt(abar_t)
//	SqrtRecipM1AlphaBar[t]         sqrt(1/abar_t - 1)
//	PosteriorVariance[t]           beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)   (0 at t = 0)
//	PosteriorLogVarianceClipped[t] log beta~_t, with t = 0 taking t = 1's value (log 0 = -inf otherwise),
//	                               as improved-diffusion's posterior_log_variance_clipped
//	PosteriorMeanCoef1[t]          c1_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t)
//	PosteriorMeanCoef2[t]          c2_t = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
//
// The posterior q(x_{t-1} | x_t, x0) is N(c1_t x0 + c2_t x_t, beta~_t I).
type Schedule struct {
	T int

	Beta, Alpha, AlphaBar, AlphaBarPrev                    []float64
	SqrtAlphaBar, SqrtOneMinusAlphaBar                     []float64
	SqrtRecipAlpha, SqrtRecipAlphaBar, SqrtRecipM1AlphaBar []float64
	PosteriorVariance, PosteriorLogVarianceClipped         []float64
	PosteriorMeanCoef1, PosteriorMeanCoef2                 []float64
}

// Schedule kinds accepted by New.
const (
	KindLinear = "linear"
	KindCosine = "cosine"
)

// New builds the schedule of the given kind: "linear" (Linear(T, betaStart, betaEnd)) or "cosine" (Cosine(T);
// betaStart and betaEnd are ignored).
func New(kind string, T int, betaStart, betaEnd float64) (*Schedule, error) {
	switch kind {
	case KindLinear:
		return Linear(T, betaStart, betaEnd)
	case KindCosine:
		return Cosine(T)
	default:
		return nil, fmt.Errorf("diffusion.New: unknown schedule kind %q (allowed: %q, %q)", kind, KindLinear, KindCosine)
	}
}

// Linear is DDPM's schedule: beta_t evenly spaced from betaStart to betaEnd inclusive,
//
//	beta_t = betaStart + (betaEnd - betaStart) t / (T - 1),   t = 0..T-1,
//
// i.e. numpy's linspace(betaStart, betaEnd, T) (the paper uses T = 1000, 1e-4 .. 0.02). This is what diffusers calls
// "linear"; diffusers computes it in float32 (torch.linspace), so its abar differs from this float64 one by ~1e-7
// relative. betaStart and betaEnd must lie in (0, 1).
func Linear(T int, betaStart, betaEnd float64) (*Schedule, error) {
	if T < 2 {
		return nil, fmt.Errorf("diffusion.Linear: T = %d, want T >= 2", T)
	}
	beta := make([]float64, T)
	for t := range beta {
		beta[t] = betaStart + (betaEnd-betaStart)*float64(t)/float64(T-1)
	}
	beta[T-1] = betaEnd // exact end point, as linspace
	s, err := FromBetas(beta)
	if err != nil {
		return nil, fmt.Errorf("diffusion.Linear(T=%d, betaStart=%g, betaEnd=%g): %w", T, betaStart, betaEnd, err)
	}
	return s, nil
}

// CosineS is the offset s of the cosine schedule, chosen by Nichol and Dhariwal so that sqrt(beta_0) is slightly
// smaller than the pixel bin size 1/127.5.
const CosineS = 0.008

// CosineMaxBeta is the clip on the cosine schedule's betas, which otherwise reach 1 at the last step.
const CosineMaxBeta = 0.999

// Cosine is the schedule of Nichol and Dhariwal ("Improved Denoising Diffusion Probabilistic Models", 2021):
//
//	f(u) = cos^2( (u + s)/(1 + s) * pi/2 ),   beta_t = min(1 - f((t+1)/T) / f(t/T), 0.999),   s = 0.008,
//
// so that abar_t = f((t+1)/T) / f(0) wherever no clipping happened (improved-diffusion's betas_for_alpha_bar; the
// derived quantities are recomputed from the clipped betas, as there).
func Cosine(T int) (*Schedule, error) {
	if T < 2 {
		return nil, fmt.Errorf("diffusion.Cosine: T = %d, want T >= 2", T)
	}
	f := func(u float64) float64 {
		c := math.Cos((u + CosineS) / (1 + CosineS) * math.Pi / 2)
		return c * c
	}
	beta := make([]float64, T)
	for t := range beta {
		beta[t] = min(1-f(float64(t+1)/float64(T))/f(float64(t)/float64(T)), CosineMaxBeta)
	}
	s, err := FromBetas(beta)
	if err != nil {
		return nil, fmt.Errorf("diffusion.Cosine(T=%d): %w", T, err)
	}
	return s, nil
}

// FromBetas derives every field of a Schedule from beta_0..beta_{T-1} (see Schedule for the formulas). It needs
// T >= 2 and every beta in (0, 1). The slice is copied.
func FromBetas(beta []float64) (*Schedule, error) {
	T := len(beta)
	if T < 2 {
		return nil, fmt.Errorf("diffusion.FromBetas: %d betas, want at least 2", T)
	}
	for t, b := range beta {
		if !(b > 0 && b < 1) {
			return nil, fmt.Errorf("diffusion.FromBetas: beta[%d] = %g, want 0 < beta < 1", t, b)
		}
	}
	alpha, ab := make([]float64, T), make([]float64, T)
	prev := 1.0
	for t, b := range beta {
		alpha[t] = 1 - b
		ab[t] = prev * alpha[t]
		prev = ab[t]
	}
	return derive(append([]float64(nil), beta...), alpha, ab), nil
}

// derive fills a Schedule from beta_t, alpha_t and abar_t (taken as given, not copied), with the formulas of the
// Schedule doc; abar_{t-1} is ab[t-1] (1 at t = 0).
func derive(beta, alpha, ab []float64) *Schedule {
	T := len(beta)
	mk := func() []float64 { return make([]float64, T) }
	s := &Schedule{
		T: T, Beta: beta, Alpha: alpha, AlphaBar: ab, AlphaBarPrev: mk(),
		SqrtAlphaBar: mk(), SqrtOneMinusAlphaBar: mk(), SqrtRecipAlpha: mk(), SqrtRecipAlphaBar: mk(),
		SqrtRecipM1AlphaBar: mk(), PosteriorVariance: mk(), PosteriorLogVarianceClipped: mk(),
		PosteriorMeanCoef1: mk(), PosteriorMeanCoef2: mk(),
	}
	prev := 1.0
	for t, b := range beta {
		a, abt := alpha[t], ab[t]
		s.AlphaBarPrev[t] = prev
		s.SqrtAlphaBar[t] = math.Sqrt(abt)
		s.SqrtOneMinusAlphaBar[t] = math.Sqrt(1 - abt)
		s.SqrtRecipAlpha[t] = 1 / math.Sqrt(a)
		s.SqrtRecipAlphaBar[t] = 1 / math.Sqrt(abt)
		s.SqrtRecipM1AlphaBar[t] = math.Sqrt(1/abt - 1)
		s.PosteriorVariance[t] = b * (1 - prev) / (1 - abt)
		s.PosteriorMeanCoef1[t] = math.Sqrt(prev) * b / (1 - abt)
		s.PosteriorMeanCoef2[t] = math.Sqrt(a) * (1 - prev) / (1 - abt)
		prev = abt
	}
	for t := range s.PosteriorLogVarianceClipped {
		s.PosteriorLogVarianceClipped[t] = math.Log(s.PosteriorVariance[max(t, 1)])
	}
	return s
}

// Respace is the schedule of a DDPM sampler that visits only the timesteps kept (strictly decreasing, each in
// [0, T), as TimestepsWith returns them), as diffusers' DDPMScheduler does with num_inference_steps < T and as
// improved-diffusion's respace.py does: the kept steps, reindexed k = 0 .. S-1 from the smallest (kept[S-1-k]),
// keep their abar,
//
//	abar'_k = abar_{kept[S-1-k]},   alpha'_k = abar'_k / abar'_{k-1},   beta'_k = 1 - alpha'_k   (abar'_{-1} = 1),
//
// and every other field follows from these by the Schedule formulas (so the posterior, its variance beta~'_k and
// DDPM's sigma'_k are those of the jump between consecutive kept steps). When every step is kept, Respace returns s
// itself, so that the full DDPM sampler is unchanged bit for bit. The network is still evaluated at the original
// timestep kept[S-1-k].
func (s *Schedule) Respace(kept []int) (*Schedule, error) {
	S := len(kept)
	if S < 1 || S > s.T {
		return nil, fmt.Errorf("diffusion.Respace: %d kept steps of T = %d", S, s.T)
	}
	for i, t := range kept {
		if t < 0 || t >= s.T || (i > 0 && t >= kept[i-1]) {
			return nil, fmt.Errorf("diffusion.Respace: kept steps %v: want strictly decreasing values in [0, %d)", kept, s.T)
		}
	}
	if S == s.T {
		return s, nil
	}
	beta, alpha, ab := make([]float64, S), make([]float64, S), make([]float64, S)
	prev := 1.0
	for k := range ab {
		ab[k] = s.AlphaBar[kept[S-1-k]]
		alpha[k] = ab[k] / prev
		beta[k] = 1 - alpha[k]
		prev = ab[k]
	}
	return derive(beta, alpha, ab), nil
}

// AlphaBarAt returns abar_t for t in [-1, T): AlphaBar[t], or 1 for t = -1 (the clean data, the target of the last
// DDIM step).
func (s *Schedule) AlphaBarAt(t int) float64 {
	if t == -1 {
		return 1
	}
	return s.AlphaBar[t]
}

// ToFloat32 rounds a float64 table (e.g. s.SqrtAlphaBar) to float32, the form the kernels take it in.
func ToFloat32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
