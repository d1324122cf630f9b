// Package sampler draws images from a trained noise-prediction network with the DDPM ancestral sampler (Ho et
// al. 2020, Algorithm 2) or DDIM (Song et al. 2021), using only ops.Backend so that it runs on every backend.
//
// # Randomness
//
// All noise comes from rng stream rng.StreamSampler of the given seed, indexed so that image j of a request for n
// images sees the same numbers whatever the batch size:
//
//	x_T of image j               draws (j·D) … (j·D + D − 1)
//	z of reverse step k ≥ 1      draws ((k·n + j)·D) … ((k·n + j)·D + D − 1)
//
// with D = C·H·W and k counting the network evaluations from 1. The same seed, flags and n give the same bytes.
package sampler

import (
	"context"
	"fmt"

	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// Denoiser predicts the noise ε̂ of x_t [batch, C, H, W] at timesteps t [batch] (float values). model.UNet is one.
type Denoiser interface {
	Forward(x, t ops.Buf, batch int) ops.Buf
}

// Options choose the sampler.
type Options struct {
	Sampler  string  // "ddpm" or "ddim"
	Steps    int     // ddim: number of network evaluations (ddpm always takes all T)
	Eta      float64 // ddim: 0 deterministic … 1 DDPM-like
	Clip     bool    // clip x̂0 to [−1, 1] in every step
	Variance string  // ddpm σ²_t: "beta" (β_t) or "posterior" (β̃_t)
	Seed     uint64
}

// UploadSchedule puts the tables of s on the backend as ops.Schedule, with σ_t = s.Sigma(t, variance): √β_t
// ("beta") or √β̃_t ("posterior"), 0 at t = 0.
func UploadSchedule(b ops.Backend, s *diffusion.Schedule, variance string) (*ops.Schedule, error) {
	kind, err := diffusion.ParseVarianceKind(variance)
	if err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	T := len(s.Beta)
	sigma := make([]float64, T)
	for t := range sigma {
		sigma[t] = s.Sigma(t, kind)
	}
	up := func(v []float64) ops.Buf {
		h := make([]float32, len(v))
		for i, x := range v {
			h[i] = float32(x)
		}
		buf := b.Alloc(len(h))
		b.Upload(buf, h)
		return buf
	}
	return &ops.Schedule{
		T:                    T,
		SqrtAlphaBar:         up(s.SqrtAlphaBar),
		SqrtOneMinusAlphaBar: up(s.SqrtOneMinusAlphaBar),
		SqrtRecipAlphaBar:    up(s.SqrtRecipAlphaBar),
		SqrtRecipM1AlphaBar:  up(s.SqrtRecipM1AlphaBar),
		PosteriorCoef1:       up(s.PosteriorMeanCoef1),
		PosteriorCoef2:       up(s.PosteriorMeanCoef2),
		Sigma:                up(sigma),
		AlphaBar:             up(s.AlphaBar),
	}, nil
}

// Sampler holds the device buffers of one sampling configuration for batches of up to maxBatch images of d
// elements each. It allocates on New only.
type Sampler struct {
	be       ops.Backend
	host     *diffusion.Schedule
	sch      *ops.Schedule
	opt      Options
	maxBatch int
	d        int
	ts       []int // timesteps visited, descending
	x, y, z  ops.Buf
	t        ops.Buf
}

// New prepares a sampler over schedule s. ddpm visits all T timesteps; ddim the Steps of diffusion.Timesteps
// (diffusers' default "leading" spacing).
func New(b ops.Backend, s *diffusion.Schedule, opt Options, maxBatch, d int) (*Sampler, error) {
	T := len(s.Beta)
	sp := &Sampler{be: b, host: s, opt: opt, maxBatch: maxBatch, d: d}
	switch opt.Sampler {
	case "ddpm":
		if opt.Steps != 0 && opt.Steps != T {
			return nil, fmt.Errorf("sampler: ddpm takes all %d steps, not %d (use ddim for fewer)", T, opt.Steps)
		}
		for t := T - 1; t >= 0; t-- {
			sp.ts = append(sp.ts, t)
		}
	case "ddim":
		if opt.Steps < 1 || opt.Steps > T {
			return nil, fmt.Errorf("sampler: ddim steps %d; allowed 1 … %d", opt.Steps, T)
		}
		if !(opt.Eta >= 0 && opt.Eta <= 1) {
			return nil, fmt.Errorf("sampler: eta %g; allowed 0 … 1", opt.Eta)
		}
		ts, err := diffusion.Timesteps(T, opt.Steps)
		if err != nil {
			return nil, fmt.Errorf("sampler: %w", err)
		}
		sp.ts = ts
	default:
		return nil, fmt.Errorf("sampler: unknown sampler %q; allowed: ddpm, ddim", opt.Sampler)
	}
	if maxBatch < 1 || d < 1 {
		return nil, fmt.Errorf("sampler: batch %d and image size %d must be ≥ 1", maxBatch, d)
	}
	sch, err := UploadSchedule(b, s, defaultStr(opt.Variance, "beta"))
	if err != nil {
		return nil, err
	}
	sp.sch = sch
	sp.x = b.Alloc(maxBatch * d)
	sp.y = b.Alloc(maxBatch * d)
	sp.z = b.Alloc(maxBatch * d)
	sp.t = b.Alloc(maxBatch)
	return sp, nil
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Timesteps returns the timesteps the sampler visits, in order (descending).
func (s *Sampler) Timesteps() []int { return append([]int(nil), s.ts...) }

// Sample draws n images into out (n·D floats, NCHW, float32 in [−1, 1] when Clip is on) in batches of at most
// maxBatch. xT, when not nil, holds the n starting images x_T instead of drawing them. progress, when not nil, is
// called after each network evaluation with the number done and the total (batches × steps). It stops early with
// ctx's error when ctx is cancelled.
func (s *Sampler) Sample(ctx context.Context, net Denoiser, n int, xT, out []float32, progress func(done, total int)) error {
	return s.SampleRange(ctx, net, n, 0, n, xT, out, progress)
}

// SampleRange is Sample for images from … to−1 of the n alone (their places in out and xT are those of Sample;
// the rest of out is left as it is). Image j's draws depend on j and n only (x_T at offset j·D of the sampler
// stream, the z of step k at ((k+1)·n + j)·D), so the images are those Sample draws, whichever ranges are drawn
// where: data-parallel training splits its sample grid among its processes this way.
func (s *Sampler) SampleRange(ctx context.Context, net Denoiser, n, from, to int, xT, out []float32, progress func(done, total int)) error {
	D := s.d
	if len(out) < n*D {
		return fmt.Errorf("sampler: output holds %d floats, %d images of %d need %d", len(out), n, D, n*D)
	}
	if xT != nil && len(xT) != n*D {
		return fmt.Errorf("sampler: x_T holds %d floats, want %d images × %d = %d", len(xT), n, D, n*D)
	}
	if from < 0 || to > n || from > to {
		return fmt.Errorf("sampler: images [%d, %d) of %d", from, to, n)
	}
	batches := (to - from + s.maxBatch - 1) / s.maxBatch
	total, done := batches*len(s.ts), 0
	for j0 := from; j0 < to; j0 += s.maxBatch {
		b := min(s.maxBatch, to-j0)
		x := s.be.Slice(s.x, 0, b*D)
		y := s.be.Slice(s.y, 0, b*D)
		z := s.be.Slice(s.z, 0, b*D)
		t := s.be.Slice(s.t, 0, b)
		if xT != nil {
			s.be.Upload(x, xT[j0*D:(j0+b)*D])
		} else {
			s.be.Normal(s.opt.Seed, rng.StreamSampler, uint64(j0)*uint64(D), x)
		}
		for k, tt := range s.ts {
			if err := ctx.Err(); err != nil {
				return err
			}
			s.be.Fill(t, float32(tt))
			eps := net.Forward(x, t, b)
			if eps.Len() != b*D {
				eps = s.be.Slice(eps, 0, b*D)
			}
			zOff := (uint64(k+1)*uint64(n) + uint64(j0)) * uint64(D)
			switch s.opt.Sampler {
			case "ddpm":
				if tt > 0 {
					s.be.Normal(s.opt.Seed, rng.StreamSampler, zOff, z)
				}
				s.be.Posterior(s.sch, b, D, s.opt.Clip, t, x, eps, z, y)
			case "ddim":
				abPrev := 1.0
				if k+1 < len(s.ts) {
					abPrev = s.host.AlphaBar[s.ts[k+1]]
				}
				if s.opt.Eta > 0 {
					s.be.Normal(s.opt.Seed, rng.StreamSampler, zOff, z)
				}
				s.be.DDIMStep(float32(s.host.AlphaBar[tt]), float32(abPrev), float32(s.opt.Eta), s.opt.Clip, x, eps, z, y)
			}
			x, y = y, x
			done++
			if progress != nil {
				progress(done, total)
			}
		}
		s.be.Download(out[j0*D:(j0+b)*D], x)
		if err := s.be.Sync(); err != nil {
			return fmt.Errorf("sampler: %s backend: %w", s.be.Name(), err)
		}
	}
	return nil
}
