// embed.cu -- the sinusoidal timestep embedding. Launched by cuda/embed.go (grid-stride, EMBED_THREADS per block).
#include "common.cuh"

#define EMBED_THREADS 256

// diffusers' Timesteps(dim, flip_sin_to_cos = flip, downscale_freq_shift = shift) (ops.EmbedShape), for t [n] and
// y [n, dim], half = dim/2:
//   f_i = exp(−ln(10000)·i/(half − shift)),  a = t_s·f_i,
//   flip:  y[s, i] = cos(a), y[s, half+i] = sin(a);   not flip:  y[s, i] = sin(a), y[s, half+i] = cos(a)   (i < half)
//   y[s, dim−1] = 0 when dim is odd.
// The phase t·f is formed and reduced in double: for t near 1000 a float32 phase would already be off by ~6e-5 rad
// from rounding alone. The kernel is tiny (n·dim elements once per step), so the double maths costs nothing.
extern "C" __global__ void __launch_bounds__(EMBED_THREADS)
    timestep_embedding_f32(const float* t, float* y, int n, int dim, int flip, double shift) {
  const int half = dim / 2;
  const long long total = (long long)n * dim;
  for (long long e = global_index(); e < total; e += global_stride()) {
    const int s = (int)(e / dim), j = (int)(e - (long long)s * dim);
    if (j >= 2 * half) {
      y[e] = 0.0f;
      continue;
    }
    const int i = j < half ? j : j - half;
    const double f = exp(-9.210340371976184 * (double)i / ((double)half - shift));  // ln(10000)
    const double ph = (double)t[s] * f;
    const bool first = j < half;  // the first half holds cos when flip, sin otherwise
    y[e] = (float)(first == (flip != 0) ? cos(ph) : sin(ph));
  }
}
EMU_REGISTER(timestep_embedding_f32)
