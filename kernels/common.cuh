// common.cuh -- included by every kernels/*.cu: what differs between nvcc and the CPU emulator (kernels/emu/emu.h),
// and small index helpers.
#pragma once

#ifdef __CUDACC__
// Under nvcc the emulator's registration is not needed: the driver finds kernels by name in the PTX module.
#define EMU_REGISTER(name)
// Dynamic shared memory: `extern __shared__ T name[]` on the GPU; the emulator hands out a per-block buffer.
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#else
#ifndef EMU_CUDA_SHIM
#error "kernels/*.cu are compiled by nvcc or, for the CPU emulator, after kernels/emu/emu.h"
#endif
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::emu::dynamic_shared())
#endif

// A load of what other blocks of this launch wrote (a last block's reduction, after __threadfence and a ticket):
// from L2 (ld.global.cg), around the non-coherent L1. T: float or double.
template <class T>
__device__ __forceinline__ T ld_cg(const T* p) {
#ifdef __CUDACC__
  return __ldcg(p);
#else
  return *(const volatile T*)p;
#endif
}

// SiLU and its gradient, the one definition of silu_fwd_f32 / silu_bwd_f32 (kernels/elementwise.cu) and of the
// GEMM epilogue that fuses them (gemm_epi.cuh):
//   silu_f32(v) = v·σ(v) = v / (1 + e^−v)
//   silu_grad_acc(dx, dy, v) = dx + dy·s·(1 + v·(1 − s)), s = σ(v)   (the derivative of v·σ(v) is s + v·s·(1 − s))
__device__ __forceinline__ float silu_f32(float v) { return v / (1.0f + expf(-v)); }
__device__ __forceinline__ float silu_grad_acc(float dx, float dy, float v) {
  const float s = 1.0f / (1.0f + expf(-v));
  return dx + dy * s * (1.0f + v * (1.0f - s));
}

// Global index of this thread in a 1-D launch, as a 64-bit value so that n > 2^31 loops stay correct.
__device__ __forceinline__ long long global_index() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
// Total threads of a 1-D launch, the stride of a grid-stride loop.
__device__ __forceinline__ long long global_stride() { return (long long)gridDim.x * blockDim.x; }
