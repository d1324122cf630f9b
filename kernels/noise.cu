// noise.cu -- the diffusion kernels: normal draws from the counter-based RNG, the forward noising q_sample, the fused
// DDPM reverse step and the DDIM step. Launched by cuda/noise.go.
// Per-sample timesteps t are float values (as ops.Backend passes them) indexing schedule tables resident on the
// device; a t outside [0, T) writes NaN, so that the error cannot pass unseen.
#include "common.cuh"
#include "philox.cuh"

// y[i] = philox_normal(seed, stream, offset + i) for i < n: bit for bit rng.Normal of the Go package rng.
extern "C" __global__ void rng_normal_f32(float* y, long long n, unsigned long long seed, unsigned int stream,
                                          unsigned long long offset) {
  for (long long i = global_index(); i < n; i += global_stride()) y[i] = philox_normal(seed, stream, offset + i);
}
EMU_REGISTER(rng_normal_f32)

// y[i] = philox_uniform(seed, stream, offset + i) for i < n: bit for bit rng.Uniform.
extern "C" __global__ void rng_uniform_f32(float* y, long long n, unsigned long long seed, unsigned int stream,
                                           unsigned long long offset) {
  for (long long i = global_index(); i < n; i += global_stride()) y[i] = philox_uniform(seed, stream, offset + i);
}
EMU_REGISTER(rng_uniform_f32)

// Timestep of sample s as a table index, or -1 when it is not an integer in [0, T).
__device__ __forceinline__ int timestep_index(const float* t, int s, int T) {
  const float v = t[s];
  const int i = (int)v;
  return (v >= 0.0f && v < (float)T && (float)i == v) ? i : -1;
}

// q_sample: for element j of sample s = j / d, with i = t[s],
//   xt[j] = sqrt_ab[i] * x0[j] + sqrt_1mab[i] * eps[j]        (sqrt_ab = √ᾱ, sqrt_1mab = √(1−ᾱ))
extern "C" __global__ void qsample_f32(const float* sqrt_ab, const float* sqrt_1mab, const float* t, const float* x0,
                                       const float* eps, float* xt, int n, int d, int T) {
  const long long total = (long long)n * d;
  for (long long j = global_index(); j < total; j += global_stride()) {
    const int i = timestep_index(t, (int)(j / d), T);
    xt[j] = i < 0 ? NAN : sqrt_ab[i] * x0[j] + sqrt_1mab[i] * eps[j];
  }
}
EMU_REGISTER(qsample_f32)

// The fused DDPM reverse step (Ho et al. 2020, Algorithm 2, in its x̂0 form), per element j of sample s = j / d,
// i = t[s]; it replaces these unfused steps:
//   x̂0 = ra[i]·xt − rm[i]·ε̂            (ra = √(1/ᾱ), rm = √(1/ᾱ − 1))
//   x̂0 = clamp(x̂0, −1, 1)              if clip
//   μ  = c1[i]·x̂0 + c2[i]·xt            (posterior mean coefficients)
//   out = μ + σ[i]·z                     (no noise term at i = 0)
extern "C" __global__ void posterior_f32(const float* ra, const float* rm, const float* c1, const float* c2,
                                         const float* sigma, const float* t, const float* xt, const float* eps_hat,
                                         const float* z, float* out, int n, int d, int T, int clip) {
  const long long total = (long long)n * d;
  for (long long j = global_index(); j < total; j += global_stride()) {
    const int i = timestep_index(t, (int)(j / d), T);
    if (i < 0) {
      out[j] = NAN;
      continue;
    }
    const float x = xt[j];
    float x0 = ra[i] * x - rm[i] * eps_hat[j];
    if (clip) x0 = fminf(1.0f, fmaxf(-1.0f, x0));
    float mu = c1[i] * x0 + c2[i] * x;
    if (i > 0) mu += sigma[i] * z[j];
    out[j] = mu;
  }
}
EMU_REGISTER(posterior_f32)

// One DDIM step (Song et al. 2021, eq. 12) for all elements at the same t; the host forms the scalars in float64:
//   ra = √(1/ᾱ), rm = √(1/ᾱ − 1), sab = √ᾱ, s1ab = √(1−ᾱ), sabp = √ᾱ_prev,
//   sigma = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev), dir = √max(0, 1−ᾱ_prev−σ²). Per element:
//   x̂0 = ra·xt − rm·ε̂;  if clip: x̂0 = clamp(x̂0, −1, 1), ε̂ = (xt − sab·x̂0)/s1ab
//   out = sabp·x̂0 + dir·ε̂ + sigma·z
extern "C" __global__ void ddim_f32(const float* xt, const float* eps_hat, const float* z, float* out, long long n,
                                    float ra, float rm, float sab, float s1ab, float sabp, float dir, float sigma,
                                    int clip) {
  for (long long j = global_index(); j < n; j += global_stride()) {
    const float x = xt[j];
    float e = eps_hat[j];
    float x0 = ra * x - rm * e;
    if (clip) {
      x0 = fminf(1.0f, fmaxf(-1.0f, x0));
      e = (x - sab * x0) / s1ab;
    }
    out[j] = sabp * x0 + dir * e + sigma * z[j];
  }
}
EMU_REGISTER(ddim_f32)
