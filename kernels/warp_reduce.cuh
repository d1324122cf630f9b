// warp_reduce.cuh -- warp-shuffle and block reductions in a fixed order, shared by groupnorm.cu, conv2d.cu,
// linear.cu, attention.cu and concat.cu. Every lane (or thread) gets the same bits back, so the result is
// deterministic and uniform: a xor butterfly adds a and b on one lane and b and a on its partner, which is the same
// float sum.
#pragma once
#include "common.cuh"

// Σ v over the 32 lanes of a full warp; every lane returns the total.
__device__ __forceinline__ float warp_sum_f32(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// max v over the 32 lanes of a full warp; every lane returns it.
__device__ __forceinline__ float warp_max_f32(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Σ v over a 1-D block whose size is a multiple of 32 (≤ 1024); every thread returns the total. sh is __shared__
// scratch of 32 floats; every thread of the block must call this (it has two __syncthreads).
__device__ __forceinline__ float block_sum_f32(float v, float* sh) {
  v = warp_sum_f32(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();  // a previous call's readers are done with sh
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return warp_sum_f32(lane < nwarps ? sh[lane] : 0.0f);  // each warp adds the partials in the same order
}
