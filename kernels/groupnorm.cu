// groupnorm.cu -- group normalisation forward and backward. Launched by cuda/groupnorm.go
// with one block of GN_THREADS threads per (sample, group) and warp-shuffle block reductions (warp_reduce.cuh).
//
// The op is ops.Backend.GroupNorm (ops/ops.go). x, y, dy, dx are [N, C, HW]; group g of sample n is the contiguous
// run of M = (C/G)·HW elements of channels [g·C/G, (g+1)·C/G); stats[2(n·G+g)] = μ, stats[2(n·G+g)+1] = rstd.
#include "common.cuh"
#include "warp_reduce.cuh"

#define GN_THREADS 256

// Forward, block ng = n·G + g (two passes over the group, so the variance has no cancellation):
//   μ = Σx/M;  σ² = Σ(x−μ)²/M;  rstd = 1/√(σ²+eps)
//   y[n,c,i] = (x[n,c,i] − μ)·rstd·gamma[c] + beta[c]
// SILU: groupnorm_silu_fwd_f32 (ops.Backend.GroupNormSiLU), the fusion of
//   n = GroupNorm(x) as above;  y = SiLU(n) = n/(1 + exp(−n))      (silu_fwd_f32 of elementwise.cu)
// which writes y only: the backward recomputes n from x and stats.
template <bool SILU>
__device__ __forceinline__ void groupnorm_fwd(const float* x, const float* gamma, const float* beta, float* y,
                                              float* stats, int C, int HW, int G, float eps) {
  __shared__ float sh[32];
  const int ng = blockIdx.x, cpg = C / G, c0 = (ng % G) * cpg, M = cpg * HW;
  const float* xs = x + (long long)ng * M;
  float* ys = y + (long long)ng * M;
  float s = 0.0f;
  for (int i = threadIdx.x; i < M; i += GN_THREADS) s += xs[i];
  const float mu = block_sum_f32(s, sh) / (float)M;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < M; i += GN_THREADS) {
    const float d = xs[i] - mu;
    ss += d * d;
  }
  const float rstd = 1.0f / sqrtf(block_sum_f32(ss, sh) / (float)M + eps);
  if (threadIdx.x == 0) {
    stats[2 * ng] = mu;
    stats[2 * ng + 1] = rstd;
  }
  for (int i = threadIdx.x; i < M; i += GN_THREADS) {
    const int c = c0 + i / HW;
    const float n = (xs[i] - mu) * (rstd * gamma[c]) + beta[c];
    ys[i] = SILU ? n / (1.0f + expf(-n)) : n;
  }
}

extern "C" __global__ void __launch_bounds__(GN_THREADS)
    groupnorm_fwd_f32(const float* x, const float* gamma, const float* beta, float* y, float* stats, int C, int HW,
                      int G, float eps) {
  groupnorm_fwd<false>(x, gamma, beta, y, stats, C, HW, G, eps);
}
EMU_REGISTER(groupnorm_fwd_f32)

extern "C" __global__ void __launch_bounds__(GN_THREADS)
    groupnorm_silu_fwd_f32(const float* x, const float* gamma, const float* beta, float* y, float* stats, int C,
                           int HW, int G, float eps) {
  groupnorm_fwd<true>(x, gamma, beta, y, stats, C, HW, G, eps);
}
EMU_REGISTER(groupnorm_silu_fwd_f32)

// Backward, block ng = n·G + g, with x̂ = (x − μ)·rstd and the upstream gradient through gamma, gy = dy·gamma[c]:
//   per channel c of the group: a_c = Σ_i dy,  b_c = Σ_i dy·x̂      → sums[n·C+c] and sums[N·C + n·C+c] (if sums)
//   m1 = Σ_c gamma[c]·a_c / M = mean(gy),  m2 = Σ_c gamma[c]·b_c / M = mean(gy·x̂)
//   dx[n,c,i] += rstd·(gy − m1 − x̂·m2)                               (if dx; = 0 + … without accumulate)
// which is the derivative of y = x̂·gamma + beta through the group's μ and rstd. The per-sample a_c and b_c are then
// added over the batch into dbeta and dgamma (if either is given) by the block that finishes its sums last:
//   dbeta[c] += Σ_n sums[n·C+c],  dgamma[c] += Σ_n sums[N·C + n·C+c]
// (each warp of that block adds an eighth of the samples in increasing n, then the eight sums in warp order)
// (formerly a kernel of its own, groupnorm_param_grad_f32, one launch per norm): each block makes its sums visible
// (__threadfence) and takes a ticket from *done; the one that draws the last ticket reads every block's sums, in
// the same order whichever block it is, and sets *done back to 0 for the next launch. Deterministic, one launch.
// Warp w reduces channels w, w + GN_WARPS, ... with shuffles only (no block barrier per channel, which matters when
// HW is small); the per-warp m1, m2 are then added in warp order.
// SILU: groupnorm_silu_bwd_f32 (ops.Backend.GroupNormSiLUBackward), with beta, is the fusion of
//   gn = dy·s·(1 + n·(1−s)), s = σ(n), n = x̂·gamma[c] + beta[c]   (silu_bwd_f32 into zeros; n as in the forward)
//   the backward above with dy = gn
// n and gn are recomputed in both passes rather than stored.
// accumulate = 0 stores 0 + (the term) into dx instead of adding it, for a dx whose zero fill the launcher took
// over (cuda/fills.go): the fill's zeros are neither written nor read. With res (ops.GroupNormBackwardRes: a
// residual's gradient passed through), dx = (dx + res) + (the term): the sums of an Axpy before this kernel.
#define GN_WARPS (GN_THREADS / 32)
template <bool SILU>
__device__ __forceinline__ float gn_upstream(float d, float xv, float mu, float rstd, float g, float b) {
  if (!SILU) return d;
  const float n = (xv - mu) * (rstd * g) + b;
  const float s = 1.0f / (1.0f + expf(-n));
  return 0.0f + d * s * (1.0f + n * (1.0f - s));
}

template <bool SILU>
__device__ __forceinline__ void groupnorm_bwd(const float* x, const float* gamma, const float* beta,
                                              const float* stats, const float* dy, float* dx, float* sums, int N,
                                              int C, int HW, int G, int accumulate, float* dgamma, float* dbeta,
                                              unsigned* done, const float* res) {
  __shared__ float part[2][GN_WARPS];
  __shared__ bool last;
  const int ng = blockIdx.x, n = ng / G, cpg = C / G, c0 = (ng % G) * cpg, M = cpg * HW;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float mu = stats[2 * ng], rstd = stats[2 * ng + 1];
  const long long base = (long long)ng * M;
  float m1 = 0.0f, m2 = 0.0f;  // this warp's share, identical on its lanes
  for (int cc = warp; cc < cpg; cc += GN_WARPS) {
    const float* xs = x + base + (long long)cc * HW;
    const float* ds = dy + base + (long long)cc * HW;
    const int c = c0 + cc;
    const float gc = gamma[c], bc = SILU ? beta[c] : 0.0f;
    float a = 0.0f, b = 0.0f;
    for (int i = lane; i < HW; i += 32) {
      const float xv = xs[i];
      const float d = gn_upstream<SILU>(ds[i], xv, mu, rstd, gc, bc);
      a += d;
      b += d * ((xv - mu) * rstd);
    }
    a = warp_sum_f32(a);
    b = warp_sum_f32(b);
    if (sums && lane == 0) {
      sums[(long long)n * C + c] = a;
      sums[(long long)N * C + (long long)n * C + c] = b;
    }
    m1 += gc * a;
    m2 += gc * b;
  }
  if (dgamma || dbeta) {  // uniform over the grid (sums given with them by the launcher)
    __threadfence();      // this block's sums, visible before its ticket
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
    __syncthreads();
    __threadfence();  // the last block's reads stay behind its ticket
    if (last) {  // uniform over the block
      // Warp w adds samples [N·w/GN_WARPS, N·(w+1)/GN_WARPS) of 32 channels at a time (lane = channel: coalesced,
      // independent loads, 1/GN_WARPS of the batch in sequence), then warp 0 adds the warps' sums in warp order.
      __shared__ float wa[GN_WARPS][32], wb[GN_WARPS][32];
      const int k0 = N * warp / GN_WARPS, k1 = N * (warp + 1) / GN_WARPS;
      for (int cb = 0; cb < C; cb += 32) {
        const int c = cb + lane;
        float sa = 0.0f, sb = 0.0f;
        if (c < C)
          for (int k = k0; k < k1; k++) {
            sa += ld_cg(sums + (long long)k * C + c);
            sb += ld_cg(sums + (long long)N * C + (long long)k * C + c);
          }
        wa[warp][lane] = sa;
        wb[warp][lane] = sb;
        __syncthreads();
        if (warp == 0 && c < C) {
          float ta = 0.0f, tb = 0.0f;
          for (int w = 0; w < GN_WARPS; w++) ta += wa[w][lane], tb += wb[w][lane];
          if (dbeta) dbeta[c] += ta;
          if (dgamma) dgamma[c] += tb;
        }
        __syncthreads();
      }
      if (threadIdx.x == 0) *done = 0;
    }
  }
  if (!dx) return;  // uniform over the block: no barrier is skipped by some threads only
  if (lane == 0) {
    part[0][warp] = m1;
    part[1][warp] = m2;
  }
  __syncthreads();
  m1 = 0.0f;
  m2 = 0.0f;
  for (int w = 0; w < GN_WARPS; w++) {
    m1 += part[0][w];
    m2 += part[1][w];
  }
  m1 /= (float)M;
  m2 /= (float)M;
  for (int i = threadIdx.x; i < M; i += GN_THREADS) {
    const int c = c0 + i / HW;
    const float xv = x[base + i];
    const float d = gn_upstream<SILU>(dy[base + i], xv, mu, rstd, gamma[c], SILU ? beta[c] : 0.0f);
    const float xh = (xv - mu) * rstd;
    const float v = rstd * (d * gamma[c] - m1 - xh * m2);
    float d0 = accumulate ? dx[base + i] : 0.0f;
    if (res) d0 += res[base + i];
    dx[base + i] = d0 + v;
  }
}

extern "C" __global__ void __launch_bounds__(GN_THREADS)
    groupnorm_bwd_f32(const float* x, const float* gamma, const float* stats, const float* dy, float* dx, float* sums,
                      int N, int C, int HW, int G, int accumulate, float* dgamma, float* dbeta, unsigned* done,
                      const float* res) {
  groupnorm_bwd<false>(x, gamma, nullptr, stats, dy, dx, sums, N, C, HW, G, accumulate, dgamma, dbeta, done, res);
}
EMU_REGISTER(groupnorm_bwd_f32)

extern "C" __global__ void __launch_bounds__(GN_THREADS)
    groupnorm_silu_bwd_f32(const float* x, const float* gamma, const float* beta, const float* stats, const float* dy,
                           float* dx, float* sums, int N, int C, int HW, int G, int accumulate, float* dgamma,
                           float* dbeta, unsigned* done, const float* res) {
  groupnorm_bwd<true>(x, gamma, beta, stats, dy, dx, sums, N, C, HW, G, accumulate, dgamma, dbeta, done, res);
}
EMU_REGISTER(groupnorm_silu_bwd_f32)

