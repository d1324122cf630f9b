// linear.cu -- a strided, batched FP32 GEMM (used by Linear, its backward, and the products of attention.cu's op)
// and the bias gradient of Linear. Launched by cuda/linear.go and cuda/attention.go.
#include "common.cuh"
#include "gemm_epi.cuh"
#include "gemm_tile.cuh"

// Batched strided GEMM, one GEMM_BM x GEMM_BN tile per block (grid: ceil(N/BN), ceil(M/BM), batch):
//   C_z[m, n] = alpha·Σ_{k<K} A_z[m, k]·B_z[k, n] + (bias ? bias[n] : 0) + (accumulate ? C_z[m, n] : 0)
// with A_z[m, k] = A[offA(z) + m·a_sm + k·a_sk], B_z[k, n] = B[offB(z) + k·b_sk + n·b_sn], C_z[m, n] at
// C[offC(z) + m·c_sm + n], and off*(z) = (z / zdiv)·s1 + (z % zdiv)·s2 (two batch levels: attention's (sample, head)).
// Transposes are strides: Linear's y = x·wᵀ reads w[o, i] as B[k = i, n = o] with b_sk = 1, b_sn = In.
// With accumulate = 0, C is only written (it may hold NaN before). act, ax, ay: the fused SiLU (gemm_epi.cuh).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_f32(const float* A, const float* B, float* C, const float* bias, int M, int N, int K, int a_sm, int a_sk,
             int b_sk, int b_sn, int c_sm, int zdiv, int a_s1, int a_s2, int b_s1, int b_s2, int c_s1, int c_s2,
             float alpha, int accumulate, const float* ax, float* ay, int act) {
  const int z = blockIdx.z, z1 = z / zdiv, z2 = z - z1 * zdiv;
  const float* a = A + (long long)z1 * a_s1 + (long long)z2 * a_s2;
  const float* b = B + (long long)z1 * b_s1 + (long long)z2 * b_s2;
  float* c = C + (long long)z1 * c_s1 + (long long)z2 * c_s2;
  auto la = [&](int m, int k) { return __ldg(a + (long long)m * a_sm + (long long)k * a_sk); };
  auto lb = [&](int k, int n) { return __ldg(b + (long long)k * b_sk + (long long)n * b_sn); };
  const GemmEpi st{c, bias, ax, ay, c_sm, accumulate, act, alpha};
  gemm_tile<GemmCoreFP32>(M, N, 0, K, a_sk == 1, b_sk == 1, la, lb, st);
}
EMU_REGISTER(gemm_f32)

// Linear's bias gradient db[o] += Σ_{r<n} dy[r, o] (dy [n, out]) in two levels, so that a few hundred columns of
// many rows (attention's projections: n = batch·pixels) still give enough blocks to fill the GPU, while the sums
// depend on the shape only (no atomic sums, the same order on every run and device):
//   split s of S (grid y) covers rows [s·chunk, min(n, (s + 1)·chunk)); in a block of LBG_THREADS, lane c of warp w
//   sums column o = blockIdx.x·32 + c over the rows start + w, start + w + LBG_WARPS, ... in increasing order (a
//   warp reads 32 consecutive floats of one row), then warp 0 adds the LBG_WARPS partial sums in warp order;
//   with one split (part null) the block adds that to db[o]; otherwise it writes part[s·out + o], and the last
//   block of its columns to finish (tickets[blockIdx.x], counted to S: splitk_last's protocol, set back to 0)
//   adds the S partials in split order, db[o] += ((part[0·out + o] + part[1·out + o]) + ...), in the same launch.
// cuda/linear.go chooses S and chunk from n and out (S > 1 only for fewer column blocks than tickets).
#define LBG_WARPS 8
#define LBG_THREADS (32 * LBG_WARPS)
extern "C" __global__ void __launch_bounds__(LBG_THREADS)
    linear_bias_grad_f32(const float* dy, float* db, float* part, int n, int out, int chunk, unsigned* tickets) {
  __shared__ float red[LBG_WARPS][32];
  __shared__ bool last;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int o = blockIdx.x * 32 + lane, s = blockIdx.y;
  const int r1 = min(n, (s + 1) * chunk);
  float acc = 0.0f;
  if (o < out)
    for (int r = s * chunk + w; r < r1; r += LBG_WARPS) acc += dy[(long long)r * out + o];
  red[w][lane] = acc;
  __syncthreads();
  if (w == 0 && o < out) {
    float v = red[0][lane];
    for (int i = 1; i < LBG_WARPS; i++) v += red[i][lane];
    if (part)
      part[(long long)s * out + o] = v;
    else
      db[o] += v;
  }
  if (!part) return;
  __threadfence();  // this block's partials, visible before its ticket
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(tickets + blockIdx.x, 1u) == gridDim.y - 1;
    if (last) tickets[blockIdx.x] = 0;  // every split of these columns has taken its ticket
  }
  __syncthreads();
  __threadfence();
  if (last && w == 0 && o < out) {
    float v = 0.0f;
    for (unsigned z = 0; z < gridDim.y; z++) v += ld_cg(part + (long long)z * out + o);
    db[o] += v;
  }
}
EMU_REGISTER(linear_bias_grad_f32)
