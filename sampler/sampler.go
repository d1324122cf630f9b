// Package sampler draws images from a trained noise-prediction network, using only ops.Backend so that it runs on
// every backend. The samplers:
//
//	ddpm            DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2) through the fused posterior op; with
//	                Steps < T respaced as diffusers' DDPMScheduler (diffusion.Schedule.Respace)
//	ddim            DDIM (Song et al. 2021, eq. 12); with Clip, ε̂ recomputed from the clipped x̂0 (improved-diffusion)
//	                unless UnclippedEps (diffusers' default, use_clipped_model_output = False)
//	euler           Euler on the probability-flow ODE (Karras et al. 2022; diffusers' EulerDiscreteScheduler)
//	euler_maruyama  Euler–Maruyama on the reverse SDE, then a final denoising step
//	heun            Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1), with
//	                Churn > 0 its stochastic variant (Algorithm 2)
//	dpmpp2m         DPM-Solver++(2M) (Lu et al. 2022), multistep, data prediction, as diffusers'
//	                DPMSolverMultistepScheduler with its defaults
//
// The maths of every step lives in package diffusion (float64, host); this package turns a sampler into a plan of
// network evaluations and tensor ops (the fused posterior, DDIMStep and the generic SamplerStep) and runs it.
//
// # Randomness
//
// All noise comes from rng stream rng.StreamSampler of the given seed, indexed so that image j of a request for n
// images sees the same numbers whatever the batch size:
//
//	x_T of image j                                    draws (j·D) … (j·D + D − 1)
//	z of the step around network evaluation k ≥ 1     draws ((k·n + j)·D) … ((k·n + j)·D + D − 1)
//
// with D = C·H·W and k counting the network evaluations from 1 (the noise of DDPM, DDIM and Euler–Maruyama follows
// evaluation k; Heun's churn noise precedes it). The same seed, options and n give the same bytes.
package sampler

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// Denoiser predicts the noise ε̂ of x_t [batch, C, H, W] at timesteps t [batch] (float values). model.UNet is one.
type Denoiser interface {
	Forward(x, t ops.Buf, batch int) ops.Buf
}

// Sampler names.
const (
	DDPM          = "ddpm"
	DDIM          = "ddim"
	Euler         = "euler"
	EulerMaruyama = "euler_maruyama"
	Heun          = "heun"
	DPMSolverPP2M = "dpmpp2m"
)

// Names lists the samplers, in the order of the package doc.
var Names = []string{DDPM, DDIM, Euler, EulerMaruyama, Heun, DPMSolverPP2M}

// Options choose the sampler. The zero values of the fields added after DDPM and DDIM (Spacing, UnclippedEps,
// Churn) keep those two samplers as they were.
type Options struct {
	Sampler  string  // one of Names
	Steps    int     // steps (ddpm: 0 means all T); heun takes 2·Steps − 1 network evaluations, the others Steps
	Eta      float64 // ddim: 0 deterministic … 1 DDPM-like (the other samplers ignore it)
	Clip     bool    // clip x̂0 (the denoised estimate, DPM-Solver++'s data prediction) to [−1, 1] in every step
	Variance string  // ddpm σ²_t: "beta" (β_t, fixed_large) or "posterior" (β̃_t, fixed_small)
	// Spacing is the grid of timesteps or noise levels: leading, trailing, linspace (diffusion.TimestepsWith) or
	// karras (diffusion.KarrasSigmas; the sigma samplers only). "" (or "auto") is the sampler's default (DefaultSpacing).
	Spacing string
	// UnclippedEps: ddim with Clip keeps the network's ε̂ in the direction term (diffusers' default,
	// use_clipped_model_output = False) instead of recomputing it from the clipped x̂0 (improved-diffusion).
	UnclippedEps bool
	Churn        float64 // heun: S_churn of Karras et al.'s Algorithm 2 (0: the deterministic Algorithm 1); others ignore it
	Seed         uint64
}

// DefaultSpacing is the spacing a sampler uses when Options.Spacing is "": leading for ddpm and ddim (diffusers'
// DDPMScheduler and DDIMScheduler), karras for euler, euler_maruyama and heun (Karras et al. 2022), linspace for
// dpmpp2m (diffusers' DPMSolverMultistepScheduler).
func DefaultSpacing(sampler string) diffusion.Spacing {
	switch sampler {
	case Euler, EulerMaruyama, Heun:
		return diffusion.SpacingKarras
	case DPMSolverPP2M:
		return diffusion.SpacingLinspace
	}
	return diffusion.SpacingLeading
}

// OptionsFromConfig maps a [sample] config section to Options, with the given seed.
func OptionsFromConfig(s config.Sample, seed uint64) Options {
	spacing := s.Spacing
	if spacing == config.SpacingAuto {
		spacing = ""
	}
	return Options{Sampler: s.Sampler, Steps: s.Steps, Eta: s.Eta, Clip: s.Clip, Variance: s.Variance,
		Spacing: spacing, UnclippedEps: !s.ClippedEps, Churn: s.Churn, Seed: seed}
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

// The plan: what one batch goes through, in order. Buffers are named by index into Sampler.bufs; the network's
// output ε̂ of the latest evaluation is implicit.
type opKind uint8

const (
	opEval      opKind = iota // ε̂ = net(input, t); input = bufs[x], or in(bufs[x]) into bufIn when in.CX ≠ 0
	opNoise                   // bufs[bufZ] = the normal draws of evaluation k
	opUpdate                  // bufs[out] = SamplerStep(u; bufs[x], ε̂, bufs[z], bufs[p])
	opPosterior               // bufs[out] = Posterior at table index t of the (respaced) schedule
	opDDIM                    // bufs[out] = DDIMStep(ᾱ = ab, ᾱ_prev = abp)
)

const (
	bufX, bufY, bufA, bufU, bufZ, bufIn = 0, 1, 2, 3, 4, 5
	numBufs                             = 6
	none                                = -1
)

type instr struct {
	op         opKind
	t          float64          // opEval: the network's timestep; opPosterior: the table index
	ab, abp    float64          // opEval: the ᾱ this evaluation stands for (what an exact ε̂ would use); opDDIM: ᾱ, ᾱ_prev
	in, u      diffusion.Update // opEval: the input scaling; opUpdate: the update
	k          int              // opNoise: the evaluation whose draws
	x, z, p, o int              // buffers (none: not used)
}

// Sampler holds the device buffers of one sampling configuration for batches of up to maxBatch images of d
// elements each. It allocates on New only.
type Sampler struct {
	be       ops.Backend
	host     *diffusion.Schedule
	rs       *diffusion.Schedule // ddpm: the respaced schedule (s itself when all T steps are kept)
	sch      *ops.Schedule       // ddpm: rs on the backend, for the fused posterior
	opt      Options
	maxBatch int
	d        int
	ts       []int // the timestep of each step, rounded (σ samplers: fractional before rounding)
	plan     []instr
	evals    int // network evaluations per batch
	result   int // the buffer that holds the samples after the plan
	bufs     [numBufs]ops.Buf
	tNet     ops.Buf // the network's timesteps
	tIdx     ops.Buf // the posterior's table indices, when they differ from tNet (respaced ddpm)
}

// New prepares a sampler over schedule s (see Options and the package doc).
func New(b ops.Backend, s *diffusion.Schedule, opt Options, maxBatch, d int) (*Sampler, error) {
	T := len(s.Beta)
	if maxBatch < 1 || d < 1 {
		return nil, fmt.Errorf("sampler: batch %d and image size %d must be ≥ 1", maxBatch, d)
	}
	sp := &Sampler{be: b, host: s, opt: opt, maxBatch: maxBatch, d: d}
	spacing := DefaultSpacing(opt.Sampler)
	if opt.Spacing != "" && opt.Spacing != config.SpacingAuto {
		var err error
		if spacing, err = diffusion.ParseSpacing(opt.Spacing); err != nil {
			return nil, fmt.Errorf("sampler: %w", err)
		}
	}
	steps := opt.Steps
	if opt.Sampler == DDPM && steps == 0 {
		steps = T
	}
	if steps < 1 || steps > T {
		return nil, fmt.Errorf("sampler: %s steps %d; allowed 1 … %d", opt.Sampler, opt.Steps, T)
	}
	if !(opt.Churn >= 0) || math.IsInf(opt.Churn, 0) {
		return nil, fmt.Errorf("sampler: churn %g; allowed ≥ 0", opt.Churn)
	}
	if spacing == diffusion.SpacingKarras && (opt.Sampler == DDPM || opt.Sampler == DDIM) {
		return nil, fmt.Errorf("sampler: %s visits timesteps: spacing leading, trailing or linspace, not karras", opt.Sampler)
	}
	var err error
	switch opt.Sampler {
	case DDPM:
		err = sp.planDDPM(spacing, steps)
	case DDIM:
		if !(opt.Eta >= 0 && opt.Eta <= 1) {
			return nil, fmt.Errorf("sampler: eta %g; allowed 0 … 1", opt.Eta)
		}
		err = sp.planDDIM(spacing, steps)
	case Euler, EulerMaruyama, Heun:
		err = sp.planVE(spacing, steps)
	case DPMSolverPP2M:
		err = sp.planDPM(spacing, steps)
	default:
		return nil, fmt.Errorf("sampler: unknown sampler %q; allowed: %s", opt.Sampler, strings.Join(Names, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("sampler: %s: %w", opt.Sampler, err)
	}
	if sp.sch == nil {
		// The fused posterior's tables are not read by the other samplers, but the variance is still checked.
		if _, err := diffusion.ParseVarianceKind(defaultStr(opt.Variance, "beta")); err != nil {
			return nil, fmt.Errorf("sampler: %w", err)
		}
	}
	for i := range sp.bufs {
		if i == bufIn && opt.Sampler != Euler && opt.Sampler != EulerMaruyama && opt.Sampler != Heun ||
			(i == bufA || i == bufU) && (opt.Sampler == DDPM || opt.Sampler == DDIM) {
			continue
		}
		sp.bufs[i] = b.Alloc(maxBatch * d)
	}
	sp.tNet = b.Alloc(maxBatch)
	sp.tIdx = b.Alloc(maxBatch)
	return sp, nil
}

// Free releases the sampler's buffers and its schedule on the backend.
func (sp *Sampler) Free() {
	if sp.sch != nil {
		FreeSchedule(sp.be, sp.sch)
	}
	for _, x := range append(sp.bufs[:], sp.tNet, sp.tIdx) {
		if x != nil {
			sp.be.Free(x)
		}
	}
}

// FreeSchedule releases the tables of an uploaded schedule.
func FreeSchedule(b ops.Backend, s *ops.Schedule) {
	for _, t := range []ops.Buf{s.SqrtAlphaBar, s.SqrtOneMinusAlphaBar, s.SqrtRecipAlphaBar, s.SqrtRecipM1AlphaBar,
		s.PosteriorCoef1, s.PosteriorCoef2, s.Sigma, s.AlphaBar} {
		b.Free(t)
	}
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (sp *Sampler) add(in instr) {
	if in.op == opEval {
		sp.evals++
	}
	sp.plan = append(sp.plan, in)
}

// eval, noise and update build instructions; buffers not named are none.
func eval(t, ab float64, in diffusion.Update, x int) instr {
	return instr{op: opEval, t: t, ab: ab, in: in, x: x, z: none, p: none, o: none}
}
func noise(k int) instr { return instr{op: opNoise, k: k, x: none, z: none, p: none, o: bufZ} }
func update(u diffusion.Update, x, z, p, o int) instr {
	return instr{op: opUpdate, u: u, x: x, z: z, p: p, o: o}
}

// planDDPM: Algorithm 2 over the kept timesteps, through the fused posterior of the respaced schedule.
func (sp *Sampler) planDDPM(spacing diffusion.Spacing, steps int) error {
	kept, err := diffusion.TimestepsWith(spacing, sp.host.T, steps)
	if err != nil {
		return err
	}
	rs, err := sp.host.Respace(kept)
	if err != nil {
		return err
	}
	if sp.sch, err = UploadSchedule(sp.be, rs, defaultStr(sp.opt.Variance, "beta")); err != nil {
		return err
	}
	sp.rs = rs
	sp.ts = kept
	cur, other := bufX, bufY
	for i, tt := range kept {
		idx := len(kept) - 1 - i
		sp.add(eval(float64(tt), sp.host.AlphaBar[tt], diffusion.Update{}, cur))
		if idx > 0 { // the step to the data (index 0) adds no noise
			sp.add(noise(i + 1))
		}
		sp.add(instr{op: opPosterior, t: float64(idx), x: cur, z: bufZ, p: none, o: other})
		cur, other = other, cur
	}
	sp.result = cur
	return nil
}

// planDDIM: eq. 12 from each kept timestep to the next (the last to the data).
func (sp *Sampler) planDDIM(spacing diffusion.Spacing, steps int) error {
	ts, err := diffusion.TimestepsWith(spacing, sp.host.T, steps)
	if err != nil {
		return err
	}
	sp.ts = ts
	eta := sp.opt.Eta
	cur, other := bufX, bufY
	for i, tt := range ts {
		tPrev := -1
		if i+1 < len(ts) {
			tPrev = ts[i+1]
		}
		sp.add(eval(float64(tt), sp.host.AlphaBar[tt], diffusion.Update{}, cur))
		if eta > 0 {
			sp.add(noise(i + 1))
		}
		if sp.opt.Clip && sp.opt.UnclippedEps {
			u := sp.host.DDIMUpdate(tt, tPrev, eta, true)
			z := none
			if u.CZ != 0 {
				z = bufZ
			}
			sp.add(update(u, cur, z, none, other))
		} else {
			sp.add(instr{op: opDDIM, ab: sp.host.AlphaBar[tt], abp: sp.host.AlphaBarAt(tPrev), x: cur, z: bufZ, p: none, o: other})
		}
		cur, other = other, cur
	}
	sp.result = cur
	return nil
}

// planVE: Euler, Euler–Maruyama and Heun on the noise levels of diffusion.SigmaSchedule, state x~ = x_t/√ᾱ.
func (sp *Sampler) planVE(spacing diffusion.Spacing, steps int) error {
	g, err := sp.host.SigmaSchedule(spacing, steps)
	if err != nil {
		return err
	}
	h, clip, kind := sp.host, sp.opt.Clip, sp.opt.Sampler
	sigmaMax := h.SqrtRecipM1AlphaBar[h.T-1]
	sp.add(update(diffusion.Update{CX: math.Sqrt(1 + g.Sigma[0]*g.Sigma[0])}, bufX, none, none, bufX)) // x~ = x_T/√ᾱ
	cur, other := bufX, bufY
	for i := range g.Steps() {
		sigma, next, t := g.Sigma[i], g.Sigma[i+1], g.Timestep[i]
		sp.ts = append(sp.ts, int(math.Round(t)))
		if kind == Heun {
			if hat := diffusion.ChurnSigma(sigma, sigmaMax, sp.opt.Churn, g.Steps()); hat > sigma {
				sp.add(noise(sp.evals + 1))
				sp.add(update(diffusion.ChurnUpdate(sigma, hat), cur, bufZ, none, cur))
				sigma, t = hat, h.TimestepAt(hat)
			}
		}
		sp.add(eval(t, diffusion.AlphaBarOfSigma(sigma), diffusion.InputScale(sigma), cur))
		switch {
		case kind == EulerMaruyama && next > 0:
			sp.add(noise(sp.evals))
			sp.add(update(diffusion.EulerMaruyamaUpdate(sigma, next, clip), cur, bufZ, none, other))
		case kind == Heun && next > 0:
			sp.add(update(diffusion.EulerUpdate(sigma, next, clip), cur, none, none, bufA))
			sp.add(update(diffusion.HeunHalfUpdate(sigma, next, clip), cur, none, none, bufU))
			sp.add(eval(g.Timestep[i+1], diffusion.AlphaBarOfSigma(next), diffusion.InputScale(next), bufA))
			sp.add(update(diffusion.HeunCorrectorUpdate(sigma, next, clip), bufA, none, bufU, other))
		default: // euler, and every sampler's last step to σ = 0: D
			sp.add(update(diffusion.EulerUpdate(sigma, next, clip), cur, none, none, other))
		}
		cur, other = other, cur
	}
	sp.result = cur
	return nil
}

// planDPM: DPM-Solver++(2M) on diffusion.DPMSolverSigmas, state x_t; bufA holds the previous data prediction.
func (sp *Sampler) planDPM(spacing diffusion.Spacing, steps int) error {
	g, err := sp.host.DPMSolverSigmas(spacing, steps)
	if err != nil {
		return err
	}
	clip, n := sp.opt.Clip, g.Steps()
	cur, other := bufX, bufY
	for i := range n {
		sigma, next := g.Sigma[i], g.Sigma[i+1]
		sp.ts = append(sp.ts, int(math.Round(g.Timestep[i])))
		sp.add(eval(g.Timestep[i], diffusion.AlphaBarOfSigma(sigma), diffusion.Update{}, cur))
		first := i == 0 || i == n-1 // diffusers: no m1 yet; lower_order_final with final_sigmas_type "zero"
		prev, p := 0.0, none
		if !first {
			prev, p = g.Sigma[i-1], bufA
		}
		sp.add(update(diffusion.DPMSolverPP2MUpdate(prev, sigma, next, first, clip), cur, none, p, other))
		if i < n-1 {
			sp.add(update(diffusion.DataPrediction(sigma, clip), cur, none, none, bufA)) // m1 of the next step
		}
		cur, other = other, cur
	}
	sp.result = cur
	return nil
}

// Timesteps returns the timestep of each step, in order (descending; the σ samplers' fractional timesteps rounded).
func (s *Sampler) Timesteps() []int { return append([]int(nil), s.ts...) }

// Evals is the number of network evaluations per batch: the steps, and for heun 2·steps − 1.
func (s *Sampler) Evals() int { return s.evals }

func coef(u diffusion.Update) ops.StepCoef {
	return ops.StepCoef{RA: float32(u.RA), RM: float32(u.RM), Clip: u.Clip, CX: float32(u.CX), C0: float32(u.C0),
		CE: float32(u.CE), CZ: float32(u.CZ), CP: float32(u.CP)}
}

// Sample draws n images into out (n·D floats, NCHW, float32 in [−1, 1] when Clip is on) in batches of at most
// maxBatch. xT, when not nil, holds the n starting images x_T instead of drawing them. progress, when not nil, is
// called after each network evaluation with the number done and the total (batches × Evals()). It stops early with
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
	total, done := batches*s.evals, 0
	var views [numBufs]ops.Buf
	for j0 := from; j0 < to; j0 += s.maxBatch {
		b := min(s.maxBatch, to-j0)
		for i, buf := range s.bufs {
			views[i] = nil
			if buf != nil {
				views[i] = s.be.Slice(buf, 0, b*D)
			}
		}
		view := func(i int) ops.Buf {
			if i == none {
				return nil
			}
			return views[i]
		}
		tNet, tIdx := s.be.Slice(s.tNet, 0, b), s.be.Slice(s.tIdx, 0, b)
		if xT != nil {
			s.be.Upload(views[bufX], xT[j0*D:(j0+b)*D])
		} else {
			s.be.Normal(s.opt.Seed, rng.StreamSampler, uint64(j0)*uint64(D), views[bufX])
		}
		var eps ops.Buf
		netT := math.NaN()
		for _, in := range s.plan {
			switch in.op {
			case opEval:
				if err := ctx.Err(); err != nil {
					return err
				}
				x := views[in.x]
				if in.in.CX != 0 {
					s.be.SamplerStep(coef(in.in), x, nil, nil, nil, views[bufIn])
					x = views[bufIn]
				}
				s.be.Fill(tNet, float32(in.t))
				netT = in.t
				eps = net.Forward(x, tNet, b)
				if eps.Len() != b*D {
					eps = s.be.Slice(eps, 0, b*D)
				}
				done++
				if progress != nil {
					progress(done, total)
				}
			case opNoise:
				s.be.Normal(s.opt.Seed, rng.StreamSampler, (uint64(in.k)*uint64(n)+uint64(j0))*uint64(D), views[bufZ])
			case opPosterior:
				t := tNet
				if in.t != netT { // respaced: the table index is not the network's timestep
					s.be.Fill(tIdx, float32(in.t))
					t = tIdx
				}
				s.be.Posterior(s.sch, b, D, s.opt.Clip, t, views[in.x], eps, views[in.z], views[in.o])
			case opDDIM:
				s.be.DDIMStep(float32(in.ab), float32(in.abp), float32(s.opt.Eta), s.opt.Clip, views[in.x], eps, views[in.z], views[in.o])
			case opUpdate:
				e := eps
				if in.u.C0 == 0 && in.u.CE == 0 {
					e = nil
				}
				s.be.SamplerStep(coef(in.u), views[in.x], e, view(in.z), view(in.p), views[in.o])
			}
		}
		s.be.Download(out[j0*D:(j0+b)*D], views[s.result])
		if err := s.be.Sync(); err != nil {
			return fmt.Errorf("sampler: %s backend: %w", s.be.Name(), err)
		}
	}
	return nil
}
