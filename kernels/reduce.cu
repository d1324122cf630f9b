// reduce.cu -- deterministic reductions (sum of squares = squared global norm, MSE loss) and the MSE gradient.
// Launched by cuda/reduce.go.
//
// Determinism: pass 1 runs a grid whose size depends only on n (cuda/reduce.go: reduceGrid); thread k of block b
// accumulates elements b·256+k, b·256+k+stride, ... in double, and the block adds its 256 thread sums by a fixed tree
// into partial[b]. Pass 2 (the last block to finish, in the same launch) adds the partials by a fixed tree. No
// atomic sums (an atomic counter only picks the block that adds), so the same n gives the same bits on every run
// and every GPU.
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
// partial[blockIdx.x] receives this block's share. blockDim.x must be REDUCE_THREADS. Pass 2, in the same launch
// by the block that finishes last (a ticket, tickets[0], splitk_last's protocol, set back to 0):
// out[0] = scale · Σ_{b < gridDim.x} partial[b] (thread k adds b = k, k+256, ..., then the fixed tree) -- the
// sums of the former second launch (reduce_final_f32), whichever block is last.
extern "C" __global__ void reduce_partial_f32(const float* a, const float* b, double* partial, long long n, int mode,
                                              double scale, float* out, unsigned* tickets) {
  __shared__ double s[REDUCE_THREADS];
  __shared__ bool last;
  double acc = 0.0;
  for (long long i = global_index(); i < n; i += global_stride()) {
    const double v = mode == 2 ? (double)a[i] - (double)b[i] : (double)a[i];
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = s[0];
    __threadfence();  // this block's partial, visible before its ticket
    last = atomicAdd(tickets, 1u) == gridDim.x - 1;
    if (last) *tickets = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  acc = 0.0;
  for (unsigned p = threadIdx.x; p < gridDim.x; p += REDUCE_THREADS) acc += ld_cg(partial + p);
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) out[0] = (float)(s[0] * scale);
}
EMU_REGISTER(reduce_partial_f32)

// MSE gradient, accumulating: da[i] += c·(a[i] − b[i]) with c = 2·scale/n formed on the host (the derivative of
// scale·(1/n)·Σ (a−b)² with respect to a); accumulate = 0 stores 0 + c·(a[i] − b[i]) instead, for a da whose zero
// fill the launcher took over (cuda/fills.go).
extern "C" __global__ void mse_bwd_f32(const float* a, const float* b, float* da, float c, long long n,
                                       int accumulate) {
  for (long long i = global_index(); i < n; i += global_stride())
    da[i] = (accumulate ? da[i] : 0.0f) + c * (a[i] - b[i]);
}
EMU_REGISTER(mse_bwd_f32)
