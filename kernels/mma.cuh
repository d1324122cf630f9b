// mma.cuh -- the PTX instructions of the tensor-core convolutions as small device functions: inline PTX under nvcc
// for sm_80 and newer, the emulator's definitions (kernels/emu/mma.h, kernels/emu/cp_async.h) under the CPU shim.
//
//   f32_to_tf32(x)                 cvt.rna.tf32.f32: x rounded to a 10-bit mantissa, to nearest, ties away from zero
//   mma_tf32_m16n8k8(d, a, b, c)   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (fragment layout: emu/mma.h);
//   mma_tf32_m16n8k8_acc(d, a, b)  the same with c = d
//   mma_tf32_m16n8k4_acc(d, a, b)  mma.sync.aligned.m16n8k4.row.col.f32.tf32.tf32.f32 with c = d
//   f32_to_bf16(x)                 x rounded to bfloat16 (8-bit significand), to nearest, ties to even, as an FP32
//                                  value (its low 16 bits zero): what cvt.rn.bf16.f32 keeps of x
//   bf16x2(lo, hi)                 cvt.rn.bf16x2.f32: lo and hi rounded to bfloat16 (to nearest even), lo in the low
//                                  half -- one register of an MMA's bf16 fragment
//   mma_bf16_m16n8k16(d, a, b, c)  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (fragment layout: emu/mma.h);
//   mma_bf16_m16n8k16_acc(d, a, b) the same with c = d
//   ldmatrix_x4(d, row)            ldmatrix.sync.aligned.m8n8.x4.shared.b16 (this lane's row address; rows of four
//                                  floats or of eight bfloat16 bit patterns, uint16_t)
//   ldmatrix_x4_trans(d, row)      ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 (rows of eight bfloat16)
//   saddr(p)                       shared pointer p as an integer address (saddr_t): cvta.to.shared's 32-bit address
//                                  under nvcc, the host address in the emulator; byte offsets add to it
//   ldmatrix_x4_at(d, a), ldmatrix_x4_trans_at(d, a)   the same two on bfloat16 rows at integer address a
//   saddr_pin(a)                   keeps a in a register as it is: the compiler may not recompute it from its inputs
//   cp_async_16(dst, src, bytes)   cp.async.cg.shared.global, 16 bytes: the first `bytes` (0 or 16) from src, zeros
//                                  after; with bytes = 0 src is not read
//   cp_async_commit()              cp.async.commit_group
//   cp_async_wait<N>()             cp.async.wait_group N
//
// The tensor-core functions exist for sm_80 and newer only (and in the emulator); f32_to_tf32 everywhere (before
// sm_80 by the same bit operation that cvt.rna.tf32.f32 performs, so that the packing kernels compile for compute_70).
#pragma once
#include "common.cuh"
#ifndef __CUDACC__
#include <cstdint>
#include "emu/cp_async.h"
#include "emu/mma.h"
#else
#include <stdint.h>
#endif

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define HAVE_MMA_TF32 1
#else
#define HAVE_MMA_TF32 0
#endif

// cvt.rna.tf32.f32. NaN and infinity pass unchanged (the bit operation below would carry into the exponent).
__device__ __forceinline__ float f32_to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
#else
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return __uint_as_float(u);
#endif
}

// x rounded to bfloat16, to nearest with ties to even, kept as an FP32 value. NaN becomes the canonical NaN
// 0x7fff0000 as cvt.rn.bf16.f32 makes it; a finite value past the largest bfloat16 rounds to infinity. The same bit
// operation on every architecture (the packing kernels compile for compute_70 too) and in the emulator
// (emu/mma.h bf16_rn_bits, which cvt.rn.bf16x2.f32 uses): kernels/emu's tests pin it to the instruction.
__device__ __forceinline__ float f32_to_bf16(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __uint_as_float(0x7fff0000u);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return __uint_as_float(u);
}

#if HAVE_MMA_TF32
// cvt.rn.bf16x2.f32 d, hi, lo: the low half of d is lo rounded to bfloat16, the high half hi.
__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
#ifdef __CUDACC__
  uint32_t d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
#else
  return ::emu::cvt_rn_bf16x2_f32(hi, lo);
#endif
}

// d = a·b + c for m16n8k16 with bf16 A (a[4]: 8 elements) and B (b[2]: 4 elements), FP32 C and D.
__device__ __forceinline__ void mma_bf16_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
#ifdef __CUDACC__
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  ::emu::mma_bf16_m16n8k16(d, a, b, c);
#endif
}

// d += a·b for m16n8k16 bf16, the accumulators read-write (as mma_tf32_m16n8k8_acc).
__device__ __forceinline__ void mma_bf16_m16n8k16_acc(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#ifdef __CUDACC__
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  ::emu::mma_bf16_m16n8k16(d, a, b, d);
#endif
}

// d = a·b + c for one warp (all 32 lanes, converged).
__device__ __forceinline__ void mma_tf32_m16n8k8(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
#ifdef __CUDACC__
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  ::emu::mma_tf32_m16n8k8(d, a, b, c);
#endif
}

// d += a·b: mma_tf32_m16n8k8(d, a, b, d) with the accumulators as read-write operands, so that the compiler keeps
// them in place instead of copying them around each instruction.
__device__ __forceinline__ void mma_tf32_m16n8k8_acc(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#ifdef __CUDACC__
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  ::emu::mma_tf32_m16n8k8(d, a, b, d);
#endif
}

// d += a·b for m16n8k4 (fragment layout: emu/mma.h).
__device__ __forceinline__ void mma_tf32_m16n8k4_acc(float d[4], const uint32_t a[2], uint32_t b) {
#ifdef __CUDACC__
  asm volatile("mma.sync.aligned.m16n8k4.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(b));
#else
  ::emu::mma_tf32_m16n8k4(d, a, b, d);
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8i .. 8i + 7 give the rows (16 bytes each) of matrix i; lane l gets
// in d[i] the 32-bit word l % 4 of row l / 4 of matrix i. For 32-bit data: matrix i is an 8x4 block, and lane
// (g, t) = (l / 4, l % 4) gets its element (g, t).
__device__ __forceinline__ void ldmatrix_x4(uint32_t d[4], const float* row) {
#ifdef __CUDACC__
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(s));
#else
  ::emu::ldmatrix_x4(d, row);
#endif
}

// The same on rows of eight 16-bit elements (bfloat16 bit patterns): lane (g, t) = (l / 4, l % 4) gets in d[i] the
// elements (g, 2t) (low half) and (g, 2t + 1) (high half) of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t d[4], const uint16_t* row) {
#ifdef __CUDACC__
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(s));
#else
  ::emu::ldmatrix_x4(d, row);
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: the rows as ldmatrix_x4's, each 8x8 matrix transposed: lane
// (g, t) gets in d[i] the elements (2t, g) (low half) and (2t + 1, g) (high half) of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t d[4], const uint16_t* row) {
#ifdef __CUDACC__
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(s));
#else
  ::emu::ldmatrix_x4_trans(d, row);
#endif
}

#ifdef __CUDACC__
typedef uint32_t saddr_t;
__device__ __forceinline__ saddr_t saddr(const void* p) { return static_cast<saddr_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void saddr_pin(saddr_t& a) { asm("" : "+r"(a)); }
#else
typedef uintptr_t saddr_t;
inline saddr_t saddr(const void* p) { return reinterpret_cast<uintptr_t>(p); }
inline void saddr_pin(saddr_t&) {}
#endif

__device__ __forceinline__ void ldmatrix_x4_at(uint32_t d[4], saddr_t a) {
#ifdef __CUDACC__
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(a));
#else
  ::emu::ldmatrix_x4(d, reinterpret_cast<const void*>(a));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans_at(uint32_t d[4], saddr_t a) {
#ifdef __CUDACC__
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(a));
#else
  ::emu::ldmatrix_x4_trans(d, reinterpret_cast<const void*>(a));
#endif
}

__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
#ifdef __CUDACC__
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes) : "memory");
#else
  ::emu::cp_async_cg(dst, src, src_bytes);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDACC__
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  ::emu::cp_async_commit();
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef __CUDACC__
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  ::emu::cp_async_wait_group(N);
#endif
}
#endif  // HAVE_MMA_TF32
