// reduce.cu -- deterministic reductions (sum of squares = squared global norm, MSE loss) and the MSE gradient.
// Launched by cuda/reduce.go.
//
// Determinism: pass 1 runs a grid whose size depends only on n (cuda/reduce.go: reduceGrid); thread k of block b
// accumulates elements b·256+k, b·256+k+stride, ... in double, and the block adds its 256 thread sums by a fixed tree
// into partial[b]. Pass 2 (one block) adds the partials by a fixed tree. No atomics, so the same n gives the same
// bits on every run and every GPU.
#include "common.cuh"

#define REDUCE_THREADS 256

// Fixed-order tree sum of s[0..REDUCE_THREADS) into s[0]; all threads of the block must call it.
__device__ __forceinline__ void block_tree_sum(double* s) {
  for (int w = REDUCE_THREADS / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
}

// Pass 1. mode 1: Σ a[i]²;  mode 2: Σ (a[i] − b[i])²  (b unused unless mode 2), in double.
// partial[blockIdx.x] receives this block's share. blockDim.x must be REDUCE_THREADS.
extern "C" __global__ void reduce_partial_f32(const float* a, const float* b, double* partial, long long n, int mode) {
  __shared__ double s[REDUCE_THREADS];
  double acc = 0.0;
  for (long long i = global_index(); i < n; i += global_stride()) {
    const double v = mode == 2 ? (double)a[i] - (double)b[i] : (double)a[i];
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}
EMU_REGISTER(reduce_partial_f32)

// Pass 2, one block of REDUCE_THREADS: out[0] = scale · Σ_{b < nparts} partial[b] (thread k adds b = k, k+256, ...).
extern "C" __global__ void reduce_final_f32(const double* partial, int nparts, double scale, float* out) {
  __shared__ double s[REDUCE_THREADS];
  double acc = 0.0;
  for (int b = threadIdx.x; b < nparts; b += REDUCE_THREADS) acc += partial[b];
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) out[0] = (float)(s[0] * scale);
}
EMU_REGISTER(reduce_final_f32)

// MSE gradient, accumulating: da[i] += c·(a[i] − b[i]) with c = 2·scale/n formed on the host (the derivative of
// scale·(1/n)·Σ (a−b)² with respect to a).
extern "C" __global__ void mse_bwd_f32(const float* a, const float* b, float* da, float c, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) da[i] += c * (a[i] - b[i]);
}
EMU_REGISTER(mse_bwd_f32)
