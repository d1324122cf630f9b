package diffusion

import (
	"fmt"
	"math"
)

// # The sigma view
//
// Karras et al. ("Elucidating the Design Space of Diffusion-Based Generative Models", 2022, §2 and Table 1) write
// every diffusion model as x~ = x0 + sigma n with n ~ N(0, I): the variance-preserving x_t = sqrt(abar_t) x0 +
// sqrt(1 - abar_t) eps of DDPM is x~ = x_t / sqrt(abar_t) at the noise level
//
//	sigma_t = sqrt((1 - abar_t) / abar_t) = SqrtRecipM1AlphaBar[t],   abar = 1 / (1 + sigma^2),
//
// and the network's eps^ gives the denoiser D(x~; sigma) = x~ - sigma eps^(x~ / sqrt(1 + sigma^2), t(sigma)). The
// probability-flow ODE is dx~/dsigma = (x~ - D)/sigma (their eq. 3 with sigma(t) = t, s(t) = 1) and the reverse SDE
// of the same marginals dx~ = -2 sigma grad log p dsigma + sqrt(2 sigma) dw (their eq. 6 with beta(t) = 1/sigma; Song
// et al. 2021's reverse-time VE SDE), where grad log p = (D - x~)/sigma^2. The samplers of this file step these
// equations along a decreasing grid sigma_0 > ... > sigma_{N-1} > sigma_N = 0 (a SigmaSchedule); their state is x~
// ("VE" scaling) except DPM-Solver++'s, which is the DDPM x_t.
//
// The network only knows integer timesteps; a sigma between two of the model's sigma_t is given to it as a fractional
// timestep, interpolated linearly in log sigma (TimestepAt, diffusers' _sigma_to_t).

// AlphaBarOfSigma is abar = 1/(1 + sigma^2), the inverse of sigma = sqrt((1 - abar)/abar).
func AlphaBarOfSigma(sigma float64) float64 { return 1 / (1 + sigma*sigma) }

// NoiseLevel is sigma(t) for a timestep t in [0, T-1]: the table value SqrtRecipM1AlphaBar[t] at an integer t, and
// between integers log sigma interpolated linearly, the inverse of TimestepAt. t outside [0, T-1] is clamped.
func (s *Schedule) NoiseLevel(t float64) float64 {
	t = math.Max(0, math.Min(float64(s.T-1), t))
	lo := int(math.Floor(t))
	if float64(lo) == t {
		return s.SqrtRecipM1AlphaBar[lo]
	}
	w := t - float64(lo)
	return math.Exp((1-w)*math.Log(s.SqrtRecipM1AlphaBar[lo]) + w*math.Log(s.SqrtRecipM1AlphaBar[lo+1]))
}

// TimestepAt is the model timestep of the noise level sigma, as diffusers' _sigma_to_t: with sigma_t the model's
// levels (increasing in t), the t whose log sigma_t interpolates log sigma linearly between the two neighbouring
// integer timesteps, clamped to [0, T-1]. It is exact (an integer) where sigma is one of the sigma_t.
func (s *Schedule) TimestepAt(sigma float64) float64 {
	ls := math.Log(math.Max(sigma, 1e-10))
	levels := s.SqrtRecipM1AlphaBar
	lo := 0
	for lo < s.T-2 && math.Log(levels[lo+1]) <= ls {
		lo++
	}
	a, b := math.Log(levels[lo]), math.Log(levels[lo+1])
	w := math.Max(0, math.Min(1, (a-ls)/(a-b)))
	return (1-w)*float64(lo) + w*float64(lo+1)
}

// KarrasRho is the exponent rho of KarrasSigmas (Karras et al. 2022 use 7).
const KarrasRho = 7.0

// KarrasSigmas is the noise-level grid of Karras et al. 2022, eq. 5: n levels from sigmaMax down to sigmaMin,
//
//	sigma_i = (sigmaMax^(1/rho) + i/(n-1) (sigmaMin^(1/rho) - sigmaMax^(1/rho)))^rho,   i = 0 .. n-1,  rho = 7,
//
// with both end points exact (n = 1: sigmaMax alone).
func KarrasSigmas(sigmaMin, sigmaMax float64, n int) []float64 {
	out := make([]float64, n)
	a, b := math.Pow(sigmaMax, 1/KarrasRho), math.Pow(sigmaMin, 1/KarrasRho)
	for i := range out {
		switch {
		case i == 0:
			out[i] = sigmaMax
		case i == n-1:
			out[i] = sigmaMin
		default:
			out[i] = math.Pow(a+float64(i)/float64(n-1)*(b-a), KarrasRho)
		}
	}
	return out
}

// SpacingKarras is the grid of KarrasSigmas between the model's smallest and largest noise levels (sigma_0 and
// sigma_{T-1}); it applies to the sigma samplers only (euler, euler_maruyama, heun, dpmpp2m).
const SpacingKarras Spacing = "karras"

// SigmaSchedule is the grid a sigma sampler walks: Sigma[0] > ... > Sigma[N-1] > Sigma[N] = 0, and Timestep[i] the
// model timestep of Sigma[i] (i < N), what the network is given.
type SigmaSchedule struct {
	Sigma    []float64
	Timestep []float64
}

// Steps is N, the number of steps (Sigma[i] -> Sigma[i+1]).
func (g SigmaSchedule) Steps() int { return len(g.Timestep) }

// SigmaSchedule is the grid of the Euler, Euler-Maruyama and Heun samplers with steps levels before 0, as diffusers'
// EulerDiscreteScheduler and HeunDiscreteScheduler build it: for leading, trailing and linspace the levels sigma_t of
// TimestepsWith(spacing, T, steps) (so linspace ends at sigma_0, the model's smallest level), for karras
// KarrasSigmas(sigma_0, sigma_{T-1}, steps) at their fractional timesteps TimestepAt; then 0.
func (s *Schedule) SigmaSchedule(spacing Spacing, steps int) (SigmaSchedule, error) {
	if spacing == SpacingKarras {
		return s.karras(steps)
	}
	ts, err := TimestepsWith(spacing, s.T, steps)
	if err != nil {
		return SigmaSchedule{}, err
	}
	return s.atTimesteps(ts), nil
}

// DPMSolverSigmas is the grid of diffusers' DPMSolverMultistepScheduler (final_sigmas_type "zero") for steps steps:
// for trailing and karras the same as SigmaSchedule; for leading and linspace the steps+1 timesteps of
// TimestepsWith(spacing, T, steps+1) without the last (t = 0), whose place the level 0 takes. So the default
// linspace visits round(k (T-1)/steps), k = steps .. 1, then sigma = 0; it needs steps < T.
func (s *Schedule) DPMSolverSigmas(spacing Spacing, steps int) (SigmaSchedule, error) {
	switch spacing {
	case SpacingKarras:
		return s.karras(steps)
	case SpacingLeading, SpacingLinspace:
		if steps >= s.T {
			return SigmaSchedule{}, fmt.Errorf("diffusion.DPMSolverSigmas(%s): steps = %d, want 1 <= steps < T = %d", spacing, steps, s.T)
		}
		ts, err := TimestepsWith(spacing, s.T, steps+1)
		if err != nil {
			return SigmaSchedule{}, err
		}
		return s.atTimesteps(ts[:steps]), nil
	}
	return s.SigmaSchedule(spacing, steps)
}

func (s *Schedule) atTimesteps(ts []int) SigmaSchedule {
	g := SigmaSchedule{Sigma: make([]float64, len(ts)+1), Timestep: make([]float64, len(ts))}
	for i, t := range ts {
		g.Sigma[i], g.Timestep[i] = s.SqrtRecipM1AlphaBar[t], float64(t)
	}
	return g
}

func (s *Schedule) karras(steps int) (SigmaSchedule, error) {
	if steps < 1 {
		return SigmaSchedule{}, fmt.Errorf("diffusion: karras grid of %d steps, want >= 1", steps)
	}
	sig := KarrasSigmas(s.SqrtRecipM1AlphaBar[0], s.SqrtRecipM1AlphaBar[s.T-1], steps)
	g := SigmaSchedule{Sigma: append(sig, 0), Timestep: make([]float64, steps)}
	for i := range steps {
		g.Timestep[i] = s.TimestepAt(sig[i])
	}
	return g, nil
}

// InputScale is the Update that turns the VE state x~ at level sigma into the network's input x_t = x~/sqrt(1 +
// sigma^2) (Karras et al.'s c_in; diffusers' scale_model_input). Its inverse, sqrt(1 + sigma^2), scales x_T ~ N(0, I)
// into the first state of a VE sampler (diffusers' init_noise_sigma).
func InputScale(sigma float64) Update { return Update{CX: 1 / math.Sqrt(1+sigma*sigma)} }

// denoised is the Update part that forms D = x~ - sigma eps^ (clipped if clip) from the VE state.
func denoised(sigma float64, clip bool) Update { return Update{RA: 1, RM: sigma, Clip: clip} }

// EulerUpdate is one Euler step of the probability-flow ODE from sigma to sigmaNext (Karras et al. 2022, Algorithm 1
// without its correction; diffusers' EulerDiscreteScheduler), VE state:
//
//	d = (x~ - D)/sigma,   x~' = x~ + (sigmaNext - sigma) d = (sigmaNext/sigma) x~ + (1 - sigmaNext/sigma) D.
//
// To sigmaNext = 0 it returns D, the denoised estimate.
func EulerUpdate(sigma, sigmaNext float64, clip bool) Update {
	u := denoised(sigma, clip)
	r := sigmaNext / sigma
	u.CX, u.C0 = r, 1-r
	return u
}

// EulerMaruyamaUpdate is one Euler-Maruyama step of the reverse SDE dx~ = -2 sigma grad log p dsigma + sqrt(2 sigma)
// dw from sigma down to sigmaNext > 0, VE state (h = sigmaNext - sigma < 0):
//
//	x~' = x~ + 2 h (x~ - D)/sigma + sqrt(2 sigma (sigma - sigmaNext)) z.
//
// To sigmaNext = 0 it returns D without noise (the final denoising step of Song et al. 2021's samplers): the SDE's
// last step would otherwise add noise of the size of the last level.
func EulerMaruyamaUpdate(sigma, sigmaNext float64, clip bool) Update {
	if sigmaNext == 0 {
		return EulerUpdate(sigma, 0, clip)
	}
	u := denoised(sigma, clip)
	g := 2 * (sigmaNext - sigma) / sigma
	u.CX, u.C0, u.CZ = 1+g, -g, math.Sqrt(2*sigma*(sigma-sigmaNext))
	return u
}

// HeunHalfUpdate is u = x~ + (h/2) d with h = sigmaNext - sigma and d = (x~ - D)/sigma: the part of Heun's step
// (Karras et al. 2022, Algorithm 1, line 8) that the first derivative contributes, formed before the second network
// evaluation overwrites what d was made of.
func HeunHalfUpdate(sigma, sigmaNext float64, clip bool) Update {
	u := denoised(sigma, clip)
	g := (sigmaNext - sigma) / (2 * sigma)
	u.CX, u.C0 = 1+g, -g
	return u
}

// HeunCorrectorUpdate finishes Heun's step from sigma to sigmaNext > 0: with x' = the Euler predictor
// (EulerUpdate(sigma, sigmaNext)) as the state, e the network's eps^ at it, and p = HeunHalfUpdate's u,
//
//	d' = (x' - D(x'; sigmaNext))/sigmaNext,   x~_next = u + (h/2) d',   h = sigmaNext - sigma,
//
// which is Algorithm 1's x_{i+1} = x_i + h (d + d')/2.
func HeunCorrectorUpdate(sigma, sigmaNext float64, clip bool) Update {
	u := denoised(sigmaNext, clip)
	g := (sigmaNext - sigma) / (2 * sigmaNext)
	u.CX, u.C0, u.CP = g, -g, 1
	return u
}

// ChurnSigma is the raised level sigma^ = sigma (1 + gamma) of Karras et al. 2022's stochastic sampler (Algorithm 2,
// with S_tmin = 0, S_tmax = inf, S_noise = 1) for a grid of steps steps: gamma = min(churn/steps, sqrt(2) - 1), and in
// addition sigma^ <= sigmaMax, the model's largest level (the network knows no timestep beyond T-1). churn = 0 gives
// sigma^ = sigma: Algorithm 1. The step then adds noise of standard deviation sqrt(sigma^2 - sigma^2) (ChurnUpdate)
// and takes Heun's step from sigma^.
func ChurnSigma(sigma, sigmaMax, churn float64, steps int) float64 {
	if churn <= 0 || sigma >= sigmaMax {
		return sigma
	}
	gamma := min(churn/float64(steps), math.Sqrt2-1)
	return min(sigma*(1+gamma), sigmaMax)
}

// ChurnUpdate is x^ = x~ + sqrt(sigmaHat^2 - sigma^2) z, the noise of Algorithm 2, line 5.
func ChurnUpdate(sigma, sigmaHat float64) Update {
	return Update{CX: 1, CZ: math.Sqrt(sigmaHat*sigmaHat - sigma*sigma)}
}

// DataPrediction is the Update that forms DPM-Solver++'s data prediction x0^ = (x_t - sqrt(1 - abar) eps^)/sqrt(abar)
// = sqrt(1 + sigma^2) x_t - sigma eps^ from the DDPM state x_t at level sigma (clipped if clip).
func DataPrediction(sigma float64, clip bool) Update {
	return Update{RA: math.Sqrt(1 + sigma*sigma), RM: sigma, Clip: clip, C0: 1}
}

// DPMSolverPP2MUpdate is one step of DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2) from level sigma
// to sigmaNext, as diffusers' DPMSolverMultistepScheduler takes it with its defaults (algorithm_type "dpmsolver++",
// solver_order 2, solver_type "midpoint", final_sigmas_type "zero"). The state is the DDPM x_t; with alpha_s =
// 1/sqrt(1 + s^2), sigma-VP_s = s alpha_s and lambda_s = -log s for a level s,
//
//	h = lambda_next - lambda = log(sigma/sigmaNext),   m0 = x0^ at sigma (DataPrediction), m1 = x0^ of the previous step
//	first order:   x_next = (sigma-VP_next/sigma-VP) x_t - alpha_next (e^-h - 1) m0
//	second order:  r0 = h0/h with h0 = log(sigmaPrev/sigma), D1 = (m0 - m1)/r0,
//	               x_next = (sigma-VP_next/sigma-VP) x_t - alpha_next (e^-h - 1) (m0 + D1/2)
//
// with m1 read from p. firstOrder is diffusers' choice: the first step (no m1 yet) and the last (to sigmaNext = 0,
// where the step returns m0). sigmaPrev is not read when firstOrder.
func DPMSolverPP2MUpdate(sigmaPrev, sigma, sigmaNext float64, firstOrder, clip bool) Update {
	u := DataPrediction(sigma, clip)
	aNext := AlphaBarOfSigma(sigmaNext)
	aNext = math.Sqrt(aNext)
	vpNext, vp := sigmaNext*aNext, sigma/math.Sqrt(1+sigma*sigma)
	k := aNext * (1 - sigmaNext/sigma) // -alpha_next (e^-h - 1), e^-h = sigmaNext/sigma
	u.CX = vpNext / vp
	if firstOrder || sigmaNext == 0 {
		u.C0 = k
		return u
	}
	r0 := math.Log(sigmaPrev/sigma) / math.Log(sigma/sigmaNext)
	u.C0 = k * (1 + 1/(2*r0))
	u.CP = -k / (2 * r0)
	return u
}
