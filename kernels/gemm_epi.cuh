// gemm_epi.cuh -- the epilogue of gemm_f32 (kernels/linear.cu) and gemm_bf16 (kernels/linear_bf16.cu).
#pragma once
#include "common.cuh"

// For the GEMM's value v of C's element (m, n), at i = m·c_sm + n:
//   r = alpha·v + (bias ? bias[n] : 0),  C[i] = accumulate ? C[i] + r : r
// and then, by act (cuda/linear.go, ops.LinearFuser):
//   1  ay[i] = silu_f32(C[i])                       (ops.LinearSiLU: Linear, then SiLU of its output)
//   2  ay[i] = silu_grad_acc(ay[i], C[i], ax[i])     (ops.LinearBackwardSiLU: LinearBackward's dx, then
//                                                     SiLUBackward(ax, dx, ay))
// -- what silu_fwd_f32 and silu_bwd_f32 would compute from C afterwards, in one launch fewer each. ax and ay are in
// C's layout (one GEMM of the batch only: the launcher checks).
struct GemmEpi {
  float* c;
  const float* bias;
  const float* ax;
  float* ay;
  int c_sm, accumulate, act;
  float alpha;
  __device__ __forceinline__ void operator()(int m, int n, float v) const {
    const long long i = (long long)m * c_sm + n;
    v *= alpha;
    if (bias) v += bias[n];
    const float r = accumulate ? c[i] + v : v;
    c[i] = r;
    if (act == 1)
      ay[i] = silu_f32(r);
    else if (act == 2)
      ay[i] = silu_grad_acc(ay[i], r, ax[i]);
  }
};
