// sampler.cu -- the affine update of the sampler loops (package sampler): DDIM with the network's eps^ kept
// (diffusers' default), Euler and Euler-Maruyama, Heun's predictor, half step and corrector, DPM-Solver++(2M), and
// the scalings between the VE state and the network's input. Package diffusion forms the coefficients in float64
// (diffusion.Update) and cuda/sampler.go passes them rounded to float32. A grid-stride loop, blocks of 256 threads.
#include "common.cuh"

// Per element i < n, replacing these unfused steps:
//   x0  = ra*x[i] - rm*e[i]                          (the data prediction from the state and eps^)
//   x0  = clamp(x0, -1, 1)                           if clip
//   out = cx*x[i] + c0*x0 + ce*e[i] + cz*z[i] + cp*p[i]
// A term whose coefficient is 0 is left out and its pointer not dereferenced (it may be null). out may alias any
// input: each element is read, then written, by one thread.
extern "C" __global__ void sampler_step_f32(const float* x, const float* e, const float* z, const float* p, float* out,
                                            long long n, float ra, float rm, float cx, float c0, float ce, float cz,
                                            float cp, int clip) {
  for (long long i = global_index(); i < n; i += global_stride()) {
    const float xv = x[i];
    float v = 0.0f;
    if (cx != 0.0f) v += cx * xv;
    if (c0 != 0.0f) {
      float x0 = ra * xv - rm * e[i];
      if (clip) x0 = fminf(1.0f, fmaxf(-1.0f, x0));
      v += c0 * x0;
    }
    if (ce != 0.0f) v += ce * e[i];
    if (cz != 0.0f) v += cz * z[i];
    if (cp != 0.0f) v += cp * p[i];
    out[i] = v;
  }
}
EMU_REGISTER(sampler_step_f32)
