// Package ops is the op set of a denoising diffusion model: the convolutions, group
// norms, attention and time embedding of the U-Net with their backward passes, the
// forward (noising) process q(x_t | x_0) and the reverse steps of the samplers, the
// ε-prediction loss, and AdamW and the EMA of the weights. The U-Net (package model),
// the samplers (package sampler) and the training loop (package train) are written
// against Backend; every op exists twice, as a CPU twin in package cpu and as a CUDA
// kernel driven by package cuda, and each is documented here by the plain loop it
// computes.
//
// Beyond Backend, two optional capabilities let a device run a whole training step
// without the host: StepController (clipping, the non-finite check, the gated AdamW
// and EMA update, the window statistics; step.go) and Feeder (the training set held on
// the device, batches gathered there; feed.go). Each has a host implementation that is
// its definition and its CPU twin.
//
// Conventions, shared by every backend:
//   - Tensors are row-major float32 arrays in NCHW order (a backend may store another
//     precision: the CPU backend has a float64 build for gradient checks).
//   - Forward ops overwrite their output. Backward ops ACCUMULATE (+=) into every
//     gradient they produce (dx, dw, db, ...), as autograd does; the caller zeroes
//     gradient buffers once per step. A nil gradient buffer means "not needed".
//   - Shapes are passed explicitly. A buffer too small for its shape, or an
//     inconsistent shape, is a programming error: the backend panics with a message
//     naming the op and the shapes.
//   - Launches may be asynchronous: device errors surface at the next Sync.
//   - A device that cannot allocate (out of memory) panics with a *DeviceError from the
//     method that needed the memory; the training loop turns that into an error.
package ops

// DeviceError is the panic value of a backend method that failed on the device rather than
// through a programming error: an allocation that did not fit. Op names the method and what it
// wanted; Err is the driver's error.
type DeviceError struct {
	Op  string
	Err error
}

func (e *DeviceError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap is the driver's error.
func (e *DeviceError) Unwrap() error { return e.Err }

// Buf is a backend's contiguous array of elements (host memory on the CPU, device
// memory on a GPU). A Buf made by Slice shares storage with its parent.
type Buf interface {
	Len() int
}

// ConvShape describes a 2-D convolution: x is [N, Cin, H, W], w is [Cout, Cin, K, K],
// the bias b is [Cout], y is [N, Cout, OutH(), OutW()]. The input is padded with zeros:
// Pad rows and columns before it, Pad + PadEnd after it. PadEnd = 0 is the usual
// symmetric padding; diffusers' Downsample2D with padding = 0 pads (0, 1, 0, 1) before a
// stride-2 3×3 convolution without padding, i.e. Pad = 0, PadEnd = 1.
type ConvShape struct {
	N, Cin, H, W int
	Cout, K      int
	Stride, Pad  int
	PadEnd       int
}

// OutH is the output height: (H + 2·Pad + PadEnd − K)/Stride + 1.
func (s ConvShape) OutH() int { return (s.H+2*s.Pad+s.PadEnd-s.K)/s.Stride + 1 }

// OutW is the output width: (W + 2·Pad + PadEnd − K)/Stride + 1.
func (s ConvShape) OutW() int { return (s.W+2*s.Pad+s.PadEnd-s.K)/s.Stride + 1 }

// EmbedShape describes the sinusoidal embedding of N timesteps into Dim values, as
// diffusers' Timesteps(Dim, flip_sin_to_cos = FlipSinToCos, downscale_freq_shift =
// FreqShift) with max_period 10000 and scale 1. With half = Dim/2, half − FreqShift must
// be > 0 when half > 0 (it divides the exponent of the frequencies).
type EmbedShape struct {
	N, Dim       int
	FlipSinToCos bool
	FreqShift    float64
}

// FLOPs is the multiply-add count of the forward pass times two.
func (s ConvShape) FLOPs() int64 {
	return 2 * int64(s.N) * int64(s.Cout) * int64(s.OutH()) * int64(s.OutW()) * int64(s.Cin) * int64(s.K) * int64(s.K)
}

// NormShape describes a group norm over x [N, C, HW] with G groups of C/G channels.
type NormShape struct {
	N, C, HW, G int
	Eps         float32
}

// AttnShape describes multi-head self-attention over L positions: q, k, v and the
// output are [N, L, Heads·D] (position-major, heads interleaved as PyTorch's
// view(N, L, Heads, D)); the saved probabilities are [N, Heads, L, L].
type AttnShape struct {
	N, L, Heads, D int
}

// AdamW holds the values of one decoupled-weight-decay Adam update
// (Loshchilov & Hutter 2019, as torch.optim.AdamW), per element:
//
//	g' = GradScale·g
//	m = β1·m + (1−β1)·g';  v = β2·v + (1−β2)·g'²
//	p = p − Decay·p − LR·(m·RC1)/(√(v·RC2) + Eps)
//
// GradScale is 1/(accumulation steps) × the clipping factor; Decay = LR·weight decay;
// RC1 = 1/(1−β1^k) and RC2 = 1/(1−β2^k) are the bias corrections of update k. The
// caller forms them (package train, schedule.go: one place for the schedule).
type AdamW struct {
	LR, Decay, Beta1, Beta2, Eps float32
	RC1, RC2                     float32
	GradScale                    float32
}

// Schedule is a diffusion schedule resident on the backend: tables of length T
// uploaded once (see package diffusion for their formulas).
type Schedule struct {
	T                    int
	SqrtAlphaBar         Buf // √ᾱ_t
	SqrtOneMinusAlphaBar Buf // √(1−ᾱ_t)
	SqrtRecipAlphaBar    Buf // 1/√ᾱ_t
	SqrtRecipM1AlphaBar  Buf // √(1/ᾱ_t − 1)
	PosteriorCoef1       Buf // c1 = √ᾱ_{t−1}·β_t/(1−ᾱ_t)
	PosteriorCoef2       Buf // c2 = √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)
	Sigma                Buf // σ_t of the DDPM step (√β_t or √β̃_t, as configured)
	AlphaBar             Buf // ᾱ_t, for DDIM
}

// StepCoef holds the float32 coefficients of SamplerStep; package diffusion forms
// them in float64 (diffusion.Update) for every sampler step that is not DDPM's
// posterior or DDIM with ε̂ recomputed from a clipped x̂0.
type StepCoef struct {
	RA, RM             float32 // x̂0 = RA·x − RM·e
	Clip               bool    // clamp x̂0 to [−1, 1]
	CX, C0, CE, CZ, CP float32 // out = CX·x + C0·x̂0 + CE·e + CZ·z + CP·p
}

// Backend is the op set. Methods are grouped as in kernels/*.cu.
type Backend interface {
	Name() string

	// Memory. Alloc returns a zero-filled buffer; Slice a view [off, off+n).
	Alloc(n int) Buf
	Slice(b Buf, off, n int) Buf
	Free(b Buf)
	Upload(dst Buf, src []float32)
	Download(dst []float32, src Buf)
	Fill(b Buf, v float32)
	Copy(dst, src Buf)
	// Sync waits for queued work and returns the first error since the last Sync.
	Sync() error

	// Elementwise.
	// Add: y[i] = a[i] + b[i] (y may alias a or b).
	Add(a, b, y Buf)
	// Axpy: y[i] += alpha·x[i].
	Axpy(alpha float32, x, y Buf)
	// Scale: x[i] *= alpha.
	Scale(alpha float32, x Buf)
	// SiLU: y = x·σ(x). SiLUBackward: dx += dy·σ(x)·(1 + x·(1−σ(x))).
	SiLU(x, y Buf)
	SiLUBackward(x, dy, dx Buf)

	// Convolution (kernels/conv2d.cu). b may be nil (no bias).
	//   y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·S+p−P, j·S+q−P] (zero outside x).
	Conv2D(s ConvShape, x, w, b, y Buf)
	// Conv2DBackward accumulates dx (backward-data), dw (backward-weight) and
	// db[o] += Σ_{n,i,j} dy[n,o,i,j]; any of them may be nil.
	Conv2DBackward(s ConvShape, x, w, dy, dx, dw, db Buf)

	// Group norm (kernels/groupnorm.cu). stats is [N·G·2]: per (n, g) the mean and
	// 1/√(var+eps) (biased variance), saved for backward.
	//   y[n,c,i] = (x[n,c,i] − μ[n,g])·rstd[n,g]·gamma[c] + beta[c],  g = c/(C/G).
	GroupNorm(s NormShape, x, gamma, beta, y, stats Buf)
	GroupNormBackward(s NormShape, x, gamma, stats, dy, dx, dgamma, dbeta Buf)
	// GroupNormSiLU is GroupNorm followed by SiLU, fused: it replaces
	//   GroupNorm(s, x, gamma, beta, n, stats);  SiLU(n, y)
	// without storing n (stats as GroupNorm's). GroupNormSiLUBackward replaces
	//   gn = 0;  SiLUBackward(n, dy, gn);  GroupNormBackward(s, x, gamma, stats, gn, dx, dgamma, dbeta)
	// recomputing n = (x − μ)·rstd·gamma[c] + beta[c] from x and the saved stats, so the backward needs
	// no buffer beyond what GroupNorm's does (and beta); it accumulates as GroupNormBackward.
	GroupNormSiLU(s NormShape, x, gamma, beta, y, stats Buf)
	GroupNormSiLUBackward(s NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta Buf)

	// Linear: y[n,o] = b[o] + Σ_i x[n,i]·w[o,i]; x [N, In], w [Out, In] (torch layout).
	Linear(n, in, out int, x, w, b, y Buf)
	LinearBackward(n, in, out int, x, w, dy, dx, dw, db Buf)

	// TimestepEmbedding: the sinusoidal embedding of diffusers' Timesteps (get_timestep_embedding):
	// for i < half = Dim/2, f_i = exp(−ln(10000)·i/(half − FreqShift)), a = t_n·f_i, and
	//   FlipSinToCos:  y[n,i] = cos(a), y[n,half+i] = sin(a)
	//   otherwise:     y[n,i] = sin(a), y[n,half+i] = cos(a)
	// with y[n,Dim−1] = 0 when Dim is odd. t holds N timesteps as float values. No
	// backward: t is not learned.
	TimestepEmbedding(s EmbedShape, t, y Buf)

	// Upsample2x: nearest ×2, x [N·C, H, W] → y [N·C, 2H, 2W], y[c,i,j] = x[c,i/2,j/2].
	Upsample2x(nc, h, w int, x, y Buf)
	// Upsample2xBackward: dx[c,i,j] += Σ of the four dy it fed.
	Upsample2xBackward(nc, h, w int, dy, dx Buf)

	// Concat along channels: a [N, Ca, HW], b [N, Cb, HW] → y [N, Ca+Cb, HW].
	Concat(n, ca, cb, hw int, a, b, y Buf)
	// ConcatBackward: da += dy[:, :Ca], db += dy[:, Ca:].
	ConcatBackward(n, ca, cb, hw int, dy, da, db Buf)

	// AddChannel: y[n,c,i] = x[n,c,i] + p[n·ld+c] (the time projection added per
	// sample and channel; y may alias x). p's rows are ld ≥ C apart: the U-Net's p is
	// one resnet's columns of the time projections of all its resnets, computed as one
	// matrix; p holds RowsLen(N, C, ld) elements.
	AddChannel(n, c, hw, ld int, x, p, y Buf)
	// ChannelSum: dp[n·ld+c] += Σ_i dy[n,c,i] (the backward of AddChannel for p).
	ChannelSum(n, c, hw, ld int, dy, dp Buf)

	// Transpose: batched 2-D transpose, x [N, R, C] → y [N, C, R] (NCHW ↔ N(HW)C).
	Transpose(n, r, c int, x, y Buf)
	// TransposeBackward: dx [N, R, C] += transpose of dy [N, C, R].
	TransposeBackward(n, r, c int, dy, dx Buf)

	// Attention: o = softmax(q·kᵀ/√D)·v per (sample, head), the softmax taken
	// after subtracting the row maximum; p saves the probabilities.
	Attention(s AttnShape, q, k, v, o, p Buf)
	AttentionBackward(s AttnShape, q, k, v, p, do, dq, dk, dv Buf)

	// Dropout with keep probability 1−rate and scale 1/(1−rate): element i is kept
	// when rng.Uniform(seed, rng.StreamDropout, offset+i) ≥ rate. The backward
	// recomputes the same mask: dx += mask·dy/(1−rate).
	Dropout(rate float32, seed, offset uint64, x, y Buf)
	DropoutBackward(rate float32, seed, offset uint64, dy, dx Buf)

	// MSE: loss[0] = (1/n)·Σ (a[i] − b[i])² over n = a.Len() elements.
	MSE(a, b, loss Buf)
	// MSEBackward: da[i] += scale·2·(a[i] − b[i])/n.
	MSEBackward(scale float32, a, b, da Buf)

	// Reductions, deterministic for a given length (fixed partition and order).
	// SumSquares: out[0] = Σ x[i]² (accumulated in float64 where the backend can).
	SumSquares(x, out Buf)

	// Optimizer over flat buffers (kernels/optim.cu).
	AdamWStep(h AdamW, p, g, m, v Buf)
	// EMA: e[i] = decay·e[i] + (1−decay)·p[i].
	EMA(decay float32, e, p Buf)

	// Diffusion (kernels/noise.cu, kernels/data.cu). t holds N timesteps
	// (float values) for N samples of d elements each.
	// Normal: y[i] = rng.Normal(seed, stream, offset+i).
	Normal(seed uint64, stream uint32, offset uint64, y Buf)
	// Timesteps: t[i] = rng.Intn(seed, stream, offset+i, T), as float values (the
	// training timesteps, drawn where they are used).
	Timesteps(seed uint64, stream uint32, offset uint64, T int, t Buf)
	// QSample: xt = √ᾱ_t·x0 + √(1−ᾱ_t)·eps, per sample.
	QSample(sch *Schedule, n, d int, t, x0, eps, xt Buf)
	// Posterior is the fused DDPM reverse step (Algorithm 2), replacing
	//   x̂0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂;  x̂0 = clip(x̂0, −1, 1) if clip;
	//   μ = c1(t)·x̂0 + c2(t)·x_t;  out = μ + σ_t·z  (z ignored where t = 0).
	Posterior(sch *Schedule, n, d int, clip bool, t, xt, epsHat, z, out Buf)
	// DDIMStep: from t to tPrev (−1 means ᾱ_prev = 1), all samples at the same t:
	//   x̂0 as above (clipped if clip, then ε̂ recomputed from it);
	//   σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev);
	//   out = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z.
	DDIMStep(alphaBar, alphaBarPrev, eta float32, clip bool, xt, epsHat, z, out Buf)
	// SamplerStep is the affine update of the other sampler steps (kernels/sampler.cu:
	// DDIM with the network's ε̂ kept, Euler, Euler–Maruyama, Heun, DPM-Solver++), per
	// element:
	//   x̂0 = RA·x − RM·e;  x̂0 = clamp(x̂0, −1, 1) if Clip
	//   out = CX·x + C0·x̂0 + CE·e + CZ·z + CP·p
	// A term whose coefficient is 0 is left out and its operand not read, so e (read
	// when C0 or CE is non-zero), z and p may be nil. Every buffer has x's length; out
	// may alias any input.
	SamplerStep(c StepCoef, x, e, z, p, out Buf)
}

// RowsLen is the length of a buffer of n rows of c elements whose rows start ld apart:
// (n−1)·ld + c, and 0 for no rows (AddChannel's p).
func RowsLen(n, c, ld int) int {
	if n == 0 {
		return 0
	}
	return (n-1)*ld + c
}
