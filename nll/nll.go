// Package nll computes the variational bound on the negative log-likelihood of a DDPM in bits per dimension (Ho et
// al. 2020, §3.3 and eq. 5), over ops.Backend for the network and in float64 on the host for the bound's terms
// (package diffusion: VBTerm, PriorKL).
//
// For each image x0 (8-bit data scaled to [−1, 1]) the bound is
//
//	L(x0) = L_T + Σ_{t=1}^{T−1} L_t + L_0        (0-indexed timesteps; L_t is the paper's L_{t−1} for t ≥ 1)
//
// with L_T the prior KL (closed form, no network), L_0 the discretised Gaussian decoder and L_t ≥ 1 Gaussian KLs,
// each evaluated at one x_t ~ q(x_t | x0). Two modes:
//   - all terms (TPerImage = 0): T network evaluations per image;
//   - sampled (TPerImage = K ≤ T − 1): L_T and L_0 exactly, and the T − 1 KL terms by a stratified unbiased
//     estimate: 1 … T − 1 cut into K strata of geometrically growing size n_k (Strata), one t_k drawn uniformly in
//     each, Σ_k n_k·L_{t_k}. 1 + K evaluations per image. (Uniform draws over all of 1 … T − 1 are unbiased too, but
//     the terms fall roughly like 1/t, and a draw that lands on a small t then dominates: on the Gaussian test data
//     that estimator's standard error is ~20 times this one's.)
//
// Either way each image's L(x0) is a random quantity (through x_t, and in the sampled mode through t), whose mean is
// the bound; the result is the mean over the images with its standard error (the sample standard deviation over
// images / √n), which covers both that randomness and the choice of images. Bits per dimension: L / (D ln 2).
//
// Randomness: rng stream rng.StreamNLL of the seed. Image i's k-th term (k = 0 … M − 1, M terms per image) uses the
// noise draws ((i·M + k)·D + e), e < D, for its x_t, and in the sampled mode (k ≥ 1) the timestep
// lo + rng.Intn(seed, StreamNLL, TimestepOffset + i·M + k, n_k) in its stratum [lo, lo + n_k) (uniform up to the
// multiply-shift map's 2^-32 granularity, as the trainer draws its t).
package nll

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// Strata cuts the KL timesteps 1 … T−1 into K strata [b_k, b_{k+1}), k < K, whose sizes grow geometrically, as the
// terms shrink roughly like 1/t: b_0 = 1, b_K = T, and b_k the nearest integer to T^(k/K), moved up to b_{k−1} + 1
// or down to T − (K − k) where that leaves a stratum empty. It needs 1 ≤ K ≤ T − 1.
func Strata(K, T int) []int {
	b := make([]int, K+1)
	b[0], b[K] = 1, T
	for k := 1; k < K; k++ {
		b[k] = min(max(b[k-1]+1, int(math.Round(math.Pow(float64(T), float64(k)/float64(K))))), T-(K-k))
	}
	return b
}

// TimestepOffset places the sampled mode's timestep draws after every noise draw in stream rng.StreamNLL.
const TimestepOffset = 1 << 62

// Denoiser predicts the noise ε̂ of x_t [batch, C, H, W] at timesteps t [batch] (float values). model.UNet is one.
type Denoiser interface {
	Forward(x, t ops.Buf, batch int) ops.Buf
}

// Options of Evaluate.
type Options struct {
	Variance  diffusion.VarianceKind // σ_t² of p(x_{t−1} | x_t): β_t or β̃_t (diffusion.ModelLogVariance)
	Clip      bool                   // clip x̂0 to [−1, 1] in μ_θ (Ho et al.'s code does, with clip_denoised)
	TPerImage int                    // 0: all T terms; K > 0: L_0, L_T and K sampled KL terms per image
	Batch     int                    // (image, t) pairs per network evaluation
	Seed      uint64
}

// Result is the bound over a set of images.
type Result struct {
	Images    int     `json:"images"`
	Dims      int     `json:"dims"`        // D = C·H·W
	T         int     `json:"timesteps"`   // the model's T
	Mode      string  `json:"mode"`        // "all" (every term) or "sampled" (K timesteps per image)
	TPerImage int     `json:"t_per_image"` // K in the sampled mode, T in "all"
	Evals     int     `json:"evals"`       // network evaluations (images × terms)
	BPD       float64 `json:"bpd"`         // the bound in bits per dimension: the mean over images
	StdErr    float64 `json:"stderr"`      // its standard error over images (0 for a single image)
	PriorBPD  float64 `json:"prior_bpd"`   // L_T's share of BPD
	DecBPD    float64 `json:"decoder_bpd"` // L_0's share
	KLBPD     float64 `json:"kl_bpd"`      // Σ_{t=1}^{T−1} L_t's share (estimated in the sampled mode)
}

// Evaluate computes the bound of the n images x0 (n·D floats in [−1, 1], NCHW) under the network net on backend be.
// progress, when not nil, is called after every network evaluation with the pairs done and their total. It stops
// with ctx's error when ctx is cancelled.
func Evaluate(ctx context.Context, be ops.Backend, net Denoiser, s *diffusion.Schedule, x0 []float32, n, D int, opt Options,
	progress func(done, total int)) (Result, error) {
	T := s.T
	if n < 1 || D < 1 || len(x0) != n*D {
		return Result{}, fmt.Errorf("nll: %d images of %d elements in %d floats", n, D, len(x0))
	}
	if opt.Batch < 1 || opt.TPerImage < 0 || opt.TPerImage > T-1 {
		return Result{}, fmt.Errorf("nll: batch %d, %d timesteps per image: want batch ≥ 1, 0 ≤ K ≤ T − 1 = %d", opt.Batch,
			opt.TPerImage, T-1)
	}
	if opt.Variance != diffusion.VarBeta && opt.Variance != diffusion.VarPosterior {
		return Result{}, fmt.Errorf("nll: unknown variance %v", opt.Variance)
	}
	M, mode, k := T, "all", T
	var strata []int
	if opt.TPerImage > 0 {
		M, mode, k = 1+opt.TPerImage, "sampled", opt.TPerImage
		strata = Strata(k, T)
	}
	// term k of image i: its timestep and its weight in the image's bound.
	term := func(i, k int) (t int, w float64) {
		if mode == "all" {
			return k, 1
		}
		if k == 0 {
			return 0, 1
		}
		lo, hi := strata[k-1], strata[k]
		return lo + rng.Intn(opt.Seed, rng.StreamNLL, TimestepOffset+uint64(i*M+k), hi-lo), float64(hi - lo)
	}

	B := opt.Batch
	xBuf, tBuf := be.Alloc(B*D), be.Alloc(B)
	defer be.Free(xBuf)
	defer be.Free(tBuf)
	xt, th, eps := make([]float32, B*D), make([]float32, B), make([]float32, B*D)
	noise := make([]float32, D)
	perImage := make([]float64, n) // nats, summed over elements and terms
	var prior, dec, kl float64     // nats, summed over images
	type item struct {
		i, t int
		w    float64
	} // (image, timestep, weight)
	items := make([]item, 0, B)
	total, done := n*M, 0

	flush := func() error {
		if len(items) == 0 {
			return nil
		}
		b := len(items)
		be.Upload(be.Slice(xBuf, 0, b*D), xt[:b*D])
		be.Upload(be.Slice(tBuf, 0, b), th[:b])
		out := net.Forward(be.Slice(xBuf, 0, b*D), be.Slice(tBuf, 0, b), b)
		be.Download(eps[:b*D], be.Slice(out, 0, b*D))
		if err := be.Sync(); err != nil {
			return fmt.Errorf("nll: %s backend: %w", be.Name(), err)
		}
		for j, it := range items {
			sum := 0.0
			img := x0[it.i*D : (it.i+1)*D]
			for e := range D {
				sum += s.VBTerm(it.t, float64(img[e]), float64(xt[j*D+e]), float64(eps[j*D+e]), opt.Variance, opt.Clip)
			}
			sum *= it.w
			perImage[it.i] += sum
			if it.t == 0 {
				dec += sum
			} else {
				kl += sum
			}
		}
		done += b
		items = items[:0]
		if progress != nil {
			progress(done, total)
		}
		return nil
	}

	for i := range n {
		img := x0[i*D : (i+1)*D]
		for e := range D {
			p := s.PriorKL(float64(img[e]))
			perImage[i] += p
			prior += p
		}
		for k := range M {
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
			t, w := term(i, k)
			j := len(items)
			rng.FillNormal(noise, opt.Seed, rng.StreamNLL, uint64(i*M+k)*uint64(D))
			a, c := s.SqrtAlphaBar[t], s.SqrtOneMinusAlphaBar[t]
			for e := range D {
				xt[j*D+e] = float32(a*float64(img[e]) + c*float64(noise[e]))
			}
			th[j] = float32(t)
			items = append(items, item{i, t, w})
			if len(items) == B {
				if err := flush(); err != nil {
					return Result{}, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return Result{}, err
	}

	bits := 1 / (float64(D) * math.Ln2)
	mean, sd := 0.0, 0.0
	for _, v := range perImage {
		mean += v
	}
	mean /= float64(n)
	for _, v := range perImage {
		sd += (v - mean) * (v - mean)
	}
	se := 0.0
	if n > 1 {
		se = math.Sqrt(sd/float64(n-1)) / math.Sqrt(float64(n))
	}
	return Result{Images: n, Dims: D, T: T, Mode: mode, TPerImage: k, Evals: n * M, BPD: mean * bits, StdErr: se * bits,
		PriorBPD: prior / float64(n) * bits, DecBPD: dec / float64(n) * bits, KLBPD: kl / float64(n) * bits}, nil
}
