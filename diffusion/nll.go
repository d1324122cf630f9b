package diffusion

import "math"

// # The variational bound
//
// Ho et al. 2020, §3.3 and eq. 5: for 8-bit data scaled to [-1, 1], -log p(x0) <= L = L_T + sum_{t>=1} L_{t-1} + L_0
// (paper's indices) with
//
//	L_T     = KL(q(x_T | x0) || N(0, I))                         the prior term (PriorKL; no network)
//	L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))        Gaussian KLs, t = 2 .. T (VBTerm at index t-1 >= 1)
//	L_0     = -log p(x0 | x_1)                                    the discretised Gaussian decoder (VBTerm at index 0)
//
// with x_t ~ q(x_t | x0) and p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I), mu_theta the DDPM reverse mean
// c1 x0^ + c2 x_t (eq. 11 when x0^ is not clipped). Every function here is per element and in nats; a bound in bits
// per dimension is the sum over the D elements of an image divided by D ln 2. This follows Ho et al.'s code
// (diffusion_utils_2.py) and improved-diffusion's _vb_terms_bpd, including their choice of the decoder's variance
// (ModelLogVariance), with the standard normal CDF computed exactly (erfc) where they use a tanh approximation.

// NormalKL is KL(N(mean1, e^logVar1) || N(mean2, e^logVar2)) in nats:
//
//	(logVar2 - logVar1 + e^(logVar1 - logVar2) + (mean1 - mean2)^2 e^-logVar2 - 1) / 2.
func NormalKL(mean1, logVar1, mean2, logVar2 float64) float64 {
	d := mean1 - mean2
	return 0.5 * (logVar2 - logVar1 + math.Exp(logVar1-logVar2) + d*d*math.Exp(-logVar2) - 1)
}

// logQ is log Q(x) = log P(N(0, 1) > x), accurate in both tails: erfc up to x = 25, then the asymptotic series
// Q(x) = phi(x)/x (1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8 - 945/x^10 ...), whose first omitted term is below 1e-12 there.
func logQ(x float64) float64 {
	if x < 25 {
		return math.Log(0.5 * math.Erfc(x/math.Sqrt2))
	}
	r := 1 / (x * x)
	series := 1 - r*(1-3*r*(1-5*r*(1-7*r*(1-9*r))))
	return -x*x/2 - math.Log(x*math.Sqrt(2*math.Pi)) + math.Log(series)
}

// logBin is log P(a < N(0, 1) < b) for a < b, also where both lie far in one tail.
func logBin(a, b float64) float64 {
	switch {
	case a >= 0: // upper tail: Q(a) - Q(b)
		qa := logQ(a)
		return qa + math.Log1p(-math.Exp(logQ(b)-qa))
	case b <= 0: // lower tail, by symmetry
		qb := logQ(-b)
		return qb + math.Log1p(-math.Exp(logQ(-a)-qb))
	}
	return math.Log1p(-(0.5*math.Erfc(b/math.Sqrt2) + 0.5*math.Erfc(-a/math.Sqrt2)))
}

// BinHalfWidth is half the width of an 8-bit bin on [-1, 1]: the 256 values k/127.5 - 1 are 2/255 apart.
const BinHalfWidth = 1.0 / 255

// DiscretizedGaussianLogLikelihood is Ho et al.'s decoder, eq. 13: the log probability that N(mean, e^(2 logScale))
// falls in the bin of the 8-bit value x in [-1, 1], [x - 1/255, x + 1/255], where the lowest bin (x < -0.999)
// extends to -inf and the highest (x > 0.999) to +inf.
func DiscretizedGaussianLogLikelihood(x, mean, logScale float64) float64 {
	inv := math.Exp(-logScale)
	lo, hi := (x-BinHalfWidth-mean)*inv, (x+BinHalfWidth-mean)*inv
	switch {
	case x < -0.999:
		return logQ(-hi) // P(N < hi)
	case x > 0.999:
		return logQ(lo)
	}
	return logBin(lo, hi)
}

// ModelLogVariance is log sigma_t^2 of the reverse step p(x_{t-1} | x_t) in the bound: log beta~_t
// (PosteriorLogVarianceClipped) for VarPosterior, and for VarBeta log beta_t at t >= 1 but log beta~_1 at t = 0, as Ho
// et al.'s code and improved-diffusion set the decoder's variance ("to get a better decoder log likelihood"; beta_0
// itself is ~100 times the variance of one bin).
func (s *Schedule) ModelLogVariance(t int, v VarianceKind) float64 {
	if v == VarPosterior || t == 0 {
		return s.PosteriorLogVarianceClipped[t]
	}
	return math.Log(s.Beta[t])
}

// VBTerm is the bound's term at timestep index t for one element, in nats, given the data x0, the noisy x_t ~ q(x_t |
// x0) and the network's eps^(x_t, t): with mu_theta = PosteriorMeanX0At(t, x0^, x_t), x0^ = PredictX0At(t, x_t, eps^)
// (clipped to [-1, 1] if clipX0), and log sigma_t^2 = ModelLogVariance(t, v),
//
//	t = 0:  -DiscretizedGaussianLogLikelihood(x0, mu_theta, log sigma_0^2 / 2)                  (L_0; x0 on the 8-bit grid)
//	t > 0:  NormalKL(mu~_t(x_t, x0), log beta~_t, mu_theta, log sigma_t^2)                       (L_{t-1} of the paper)
func (s *Schedule) VBTerm(t int, x0, xt, epsHat float64, v VarianceKind, clipX0 bool) float64 {
	x0hat := s.PredictX0At(t, xt, epsHat)
	if clipX0 {
		x0hat = math.Max(-1, math.Min(1, x0hat))
	}
	mean := s.PosteriorMeanX0At(t, x0hat, xt)
	lv := s.ModelLogVariance(t, v)
	if t == 0 {
		return -DiscretizedGaussianLogLikelihood(x0, mean, lv/2)
	}
	return NormalKL(s.PosteriorMeanX0At(t, x0, xt), s.PosteriorLogVarianceClipped[t], mean, lv)
}

// PriorKL is the prior term L_T for one element, in nats: KL(q(x_{T-1} | x0) || N(0, 1)) =
// NormalKL(sqrt(abar_{T-1}) x0, log(1 - abar_{T-1}), 0, 0) (0-indexed; the paper's x_T).
func (s *Schedule) PriorKL(x0 float64) float64 {
	t := s.T - 1
	return NormalKL(s.SqrtAlphaBar[t]*x0, math.Log(1-s.AlphaBar[t]), 0, 0)
}
