// dropout.cu -- inverted dropout with masks from the counter-based RNG (philox.cuh), so that the backward pass
// recomputes the mask instead of storing it and every backend draws the same mask. Launched by cuda/dropout.go
// (grid-stride, DROPOUT_THREADS per block).
#include "common.cuh"
#include "philox.cuh"

#define DROPOUT_THREADS 256

// Element i is kept when u_i = philox_uniform(seed, PHILOX_STREAM_DROPOUT, offset + i) ≥ rate (float32 comparison,
// u_i bit for bit rng.Uniform), and then scaled by scale = 1/(1 − rate) (formed in double on the host):
//   v_i = u_i ≥ rate ? x[i]·scale : 0
//   y[i] = v_i           (accumulate = 0: Dropout, x the input)
//   y[i] += v_i          (accumulate = 1: DropoutBackward, x = dy, y = dx)
extern "C" __global__ void __launch_bounds__(DROPOUT_THREADS)
    dropout_f32(const float* x, float* y, long long n, float rate, float scale, unsigned long long seed,
                unsigned long long offset, int accumulate) {
  for (long long i = global_index(); i < n; i += global_stride()) {
    const float u = philox_uniform(seed, PHILOX_STREAM_DROPOUT, offset + (unsigned long long)i);
    const float v = u >= rate ? x[i] * scale : 0.0f;
    y[i] = accumulate ? y[i] + v : v;
  }
}
EMU_REGISTER(dropout_f32)
