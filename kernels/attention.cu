// attention.cu -- the row-wise parts of multi-head self-attention; the products (q·kᵀ, P·v and their gradients) are
// gemm_f32 launches (linear.cu), all issued by cuda/attention.go. Per (sample, head), with S = q·kᵀ/√D [L, L]:
//   forward:   P = softmax(S) row by row (attention_softmax_f32), o = P·v
//   backward:  dv += Pᵀ·do,  dP = do·vᵀ,  dS = P∘(dP − rowsum(P∘dP)) (attention_softmax_bwd_f32),
//              dq += dS·k/√D,  dk += dSᵀ·q/√D
// Both row kernels give each row of L elements to one warp (ATTN_ROWS_PER_BLOCK warps per block) and reduce with
// warp shuffles in a fixed order.
#include "common.cuh"
#include "warp_reduce.cuh"

#define ATTN_ROWS_PER_BLOCK 4

// In place on p [rows, L]: p[r, j] = exp(p[r, j] − max_l p[r, l]) / Σ_j exp(p[r, j] − max_l p[r, l]).
// Subtracting the row maximum keeps every exponent ≤ 0, so nothing overflows and the largest term is exactly 1 (the
// sum is ≥ 1, no division by an underflowed 0).
extern "C" __global__ void __launch_bounds__(32 * ATTN_ROWS_PER_BLOCK)
    attention_softmax_f32(float* p, int rows, int L) {
  const int r = blockIdx.x * ATTN_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;  // whole warps leave together
  float* row = p + (long long)r * L;
  float mx = -INFINITY;
  for (int j = lane; j < L; j += 32) mx = fmaxf(mx, row[j]);
  mx = warp_max_f32(mx);
  float sum = 0.0f;
  for (int j = lane; j < L; j += 32) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / warp_sum_f32(sum);
  for (int j = lane; j < L; j += 32) row[j] *= inv;
}
EMU_REGISTER(attention_softmax_f32)

// In place on ds [rows, L] holding dP: ds[r, j] = P[r, j]·(dP[r, j] − Σ_l P[r, l]·dP[r, l]), the gradient of the
// softmax inputs given that of its outputs (P from the forward pass).
extern "C" __global__ void __launch_bounds__(32 * ATTN_ROWS_PER_BLOCK)
    attention_softmax_bwd_f32(const float* p, float* ds, int rows, int L) {
  const int r = blockIdx.x * ATTN_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float* pr = p + (long long)r * L;
  float* dr = ds + (long long)r * L;
  float dot = 0.0f;
  for (int j = lane; j < L; j += 32) dot += pr[j] * dr[j];
  dot = warp_sum_f32(dot);
  for (int j = lane; j < L; j += 32) dr[j] = pr[j] * (dr[j] - dot);
}
EMU_REGISTER(attention_softmax_bwd_f32)
