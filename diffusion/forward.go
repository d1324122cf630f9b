package diffusion

import "fmt"

// Scalar float64 forms of the elementwise maths. They are the reference for the float32 loops and for the fused
// kernels' twins; t must be in [0, T).

// QSampleAt is a draw of the forward process q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) given its noise:
//
//	x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
func (s *Schedule) QSampleAt(t int, x0, eps float64) float64 {
	return s.SqrtAlphaBar[t]*x0 + s.SqrtOneMinusAlphaBar[t]*eps
}

// PredictX0At inverts QSampleAt for x0 given a noise estimate:
//
//	x0^ = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t).
func (s *Schedule) PredictX0At(t int, xt, eps float64) float64 {
	return (xt - s.SqrtOneMinusAlphaBar[t]*eps) / s.SqrtAlphaBar[t]
}

// PredictEpsAt inverts QSampleAt for the noise given an estimate of x0:
//
//	eps^ = (x_t - sqrt(abar_t) x0^) / sqrt(1 - abar_t).
func (s *Schedule) PredictEpsAt(t int, xt, x0 float64) float64 {
	return (xt - s.SqrtAlphaBar[t]*x0) / s.SqrtOneMinusAlphaBar[t]
}

// PosteriorMeanX0At is the mean of q(x_{t-1} | x_t, x0) (DDPM eq. 7):
//
//	mu~_t(x_t, x0) = c1_t x0 + c2_t x_t.
func (s *Schedule) PosteriorMeanX0At(t int, x0, xt float64) float64 {
	return s.PosteriorMeanCoef1[t]*x0 + s.PosteriorMeanCoef2[t]*xt
}

// PosteriorMeanEpsAt is the same mean written with the noise instead of x0 (DDPM eq. 11, x0 substituted by
// PredictX0At):
//
//	mu = (1 / sqrt(alpha_t)) (x_t - beta_t / sqrt(1 - abar_t) eps).
func (s *Schedule) PosteriorMeanEpsAt(t int, xt, eps float64) float64 {
	return s.SqrtRecipAlpha[t] * (xt - s.Beta[t]/s.SqrtOneMinusAlphaBar[t]*eps)
}

// Elementwise float32 loops. Tensors are laid out sample-major: element i belongs to sample i / perSample, whose
// timestep is t[i / perSample]; all slices have length len(t) * perSample. The per-timestep coefficients are
// rounded from the float64 tables to float32 once per sample, and each product is rounded on its own (never fused
// into an FMA), so that a kernel doing the same operations in the same order gets the same bits. The output may
// alias an input.

// QSample writes x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, per sample: xt[i] = a*x0[i] + b*eps[i] with
// a = float32(SqrtAlphaBar[t]) and b = float32(SqrtOneMinusAlphaBar[t]).
func QSample(x0, eps []float32, t []int, perSample int, s *Schedule, xt []float32) error {
	if err := checkBatch("QSample", t, perSample, s, x0, eps, xt); err != nil {
		return err
	}
	for n, tn := range t {
		a, b := float32(s.SqrtAlphaBar[tn]), float32(s.SqrtOneMinusAlphaBar[tn])
		lo, hi := n*perSample, (n+1)*perSample
		for i := lo; i < hi; i++ {
			xt[i] = fmul(a, x0[i]) + fmul(b, eps[i])
		}
	}
	return nil
}

// PredictX0 writes x0^ = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t), computed as the equal
// x0^ = a*xt - b*eps^ with a = float32(SqrtRecipAlphaBar[t]) and b = float32(SqrtRecipM1AlphaBar[t])
// (two products instead of a division, as improved-diffusion's _predict_xstart_from_eps).
func PredictX0(xt, epsHat []float32, t []int, perSample int, s *Schedule, x0 []float32) error {
	if err := checkBatch("PredictX0", t, perSample, s, xt, epsHat, x0); err != nil {
		return err
	}
	for n, tn := range t {
		a, b := float32(s.SqrtRecipAlphaBar[tn]), float32(s.SqrtRecipM1AlphaBar[tn])
		lo, hi := n*perSample, (n+1)*perSample
		for i := lo; i < hi; i++ {
			x0[i] = fmul(a, xt[i]) - fmul(b, epsHat[i])
		}
	}
	return nil
}

// PosteriorMeanX0 writes the posterior mean mu~_t = c1_t x0 + c2_t x_t: mean[i] = c1*x0[i] + c2*xt[i] with
// c1, c2 = float32(PosteriorMeanCoef1[t]), float32(PosteriorMeanCoef2[t]).
func PosteriorMeanX0(x0, xt []float32, t []int, perSample int, s *Schedule, mean []float32) error {
	if err := checkBatch("PosteriorMeanX0", t, perSample, s, x0, xt, mean); err != nil {
		return err
	}
	for n, tn := range t {
		c1, c2 := float32(s.PosteriorMeanCoef1[tn]), float32(s.PosteriorMeanCoef2[tn])
		lo, hi := n*perSample, (n+1)*perSample
		for i := lo; i < hi; i++ {
			mean[i] = fmul(c1, x0[i]) + fmul(c2, xt[i])
		}
	}
	return nil
}

// PosteriorMeanEps writes mu = (1/sqrt(alpha_t)) (x_t - beta_t/sqrt(1 - abar_t) eps):
// mean[i] = r*(xt[i] - k*eps[i]) with r = float32(SqrtRecipAlpha[t]) and k = float32(Beta[t]/SqrtOneMinusAlphaBar[t]).
func PosteriorMeanEps(xt, eps []float32, t []int, perSample int, s *Schedule, mean []float32) error {
	if err := checkBatch("PosteriorMeanEps", t, perSample, s, xt, eps, mean); err != nil {
		return err
	}
	for n, tn := range t {
		r, k := float32(s.SqrtRecipAlpha[tn]), float32(s.Beta[tn]/s.SqrtOneMinusAlphaBar[tn])
		lo, hi := n*perSample, (n+1)*perSample
		for i := lo; i < hi; i++ {
			mean[i] = fmul(r, xt[i]-fmul(k, eps[i]))
		}
	}
	return nil
}

// fmul is a float32 product rounded on its own: the explicit conversion forbids the Go compiler to fuse it with a
// neighbouring addition into an FMA (Go spec, "Arithmetic operators"), so the loops give the same bits on every
// GOARCH/GOAMD64.
func fmul(a, b float32) float32 { return float32(a * b) }

// checkBatch validates a per-sample elementwise op: every tensor has len(t)*perSample elements, and every timestep
// is in [0, T).
func checkBatch(op string, t []int, perSample int, s *Schedule, tensors ...[]float32) error {
	if s == nil {
		return fmt.Errorf("diffusion.%s: nil schedule", op)
	}
	if perSample < 1 {
		return fmt.Errorf("diffusion.%s: perSample = %d, want >= 1", op, perSample)
	}
	want := len(t) * perSample
	for _, x := range tensors {
		if len(x) != want {
			lens := make([]int, len(tensors))
			for i, y := range tensors {
				lens[i] = len(y)
			}
			return fmt.Errorf("diffusion.%s: tensor lengths %v, want len(t)*perSample = %d*%d = %d for each",
				op, lens, len(t), perSample, want)
		}
	}
	for n, tn := range t {
		if tn < 0 || tn >= s.T {
			return fmt.Errorf("diffusion.%s: t[%d] = %d, want 0 <= t < T = %d", op, n, tn, s.T)
		}
	}
	return nil
}

// clip1 clamps x to [-1, 1], the data range (NaN stays NaN).
func clip1(x float32) float32 { return min(max(x, -1), 1) }
