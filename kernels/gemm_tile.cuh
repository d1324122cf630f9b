// gemm_tile.cuh -- the shared-memory tiled GEMM core of linear.cu (strided GEMM).
//
// One block of GEMM_THREADS threads computes the GEMM_BM x GEMM_BN tile at (blockIdx.y·BM, blockIdx.x·BN) of
//   C[m, n] = Σ_{k0 ≤ k < k1} A(m, k)·B(k, n)        (0 ≤ m < M, 0 ≤ n < N)
// where A and B are functors that read one element, and hands each result to a store functor st(m, n, value). k
// advances in steps of GEMM_BK: each thread loads its share of the next A and B tiles into registers while the block
// multiplies the current tiles from shared memory. Tile elements outside [0, M) x [k0, k1) or [k0, k1) x [0, N) are
// zero, so any sizes work.
//
// The multiply core (template argument Core), GemmCoreFP32: thread (ty, tx) = (tid/16, tid%16) accumulates C rows
// ty+16i and columns tx+16j (i, j < 4) in FP32 FMAs; the strided columns make the shared-memory reads of B
// conflict-free and those of A broadcasts. (The convolutions have their own tiles: kernels/igemm.cuh.)
#pragma once
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256
// Row length of the shared tiles: BM (= BN) plus 8 floats, which staggers the banks of the transposed stores.
#define GEMM_LDS (GEMM_BM + 8)

// #pragma unroll for nvcc; g++ (the emulator) unrolls by its own judgement and would warn about the pragma.
#ifdef __CUDACC__
#define GEMM_UNROLL _Pragma("unroll")
#else
#define GEMM_UNROLL
#endif

// FP32 core: 4x4 accumulators per thread.
struct GemmCoreFP32 {
  float acc[4][4];
  __device__ __forceinline__ void init() {
GEMM_UNROLL
    for (int i = 0; i < 4; i++)
GEMM_UNROLL
      for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
  }
  __device__ __forceinline__ static float prep(float v) { return v; }
  __device__ __forceinline__ void step(const float (*As)[GEMM_LDS], const float (*Bs)[GEMM_LDS]) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
GEMM_UNROLL
    for (int k = 0; k < GEMM_BK; k++) {
      float a[4], b[4];
GEMM_UNROLL
      for (int i = 0; i < 4; i++) a[i] = As[k][ty + 16 * i];
GEMM_UNROLL
      for (int j = 0; j < 4; j++) b[j] = Bs[k][tx + 16 * j];
GEMM_UNROLL
      for (int i = 0; i < 4; i++)
GEMM_UNROLL
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
  template <class ST>
  __device__ __forceinline__ void finish(int M, int N, const ST& st) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
GEMM_UNROLL
    for (int i = 0; i < 4; i++)
GEMM_UNROLL
      for (int j = 0; j < 4; j++) {
        const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
        if (m < M && n < N) st(m, n, acc[i][j]);
      }
  }
};

// The tiled loop. a_kfast says which index of A varies fastest in memory (k if true, m otherwise), b_kfast the same
// for B; consecutive threads then load consecutive addresses. Must be called by all GEMM_THREADS threads of the block.
template <class Core, class LA, class LB, class ST>
__device__ __forceinline__ void gemm_tile(int M, int N, int k0, int k1, bool a_kfast, bool b_kfast, const LA& la,
                                          const LB& lb, const ST& st) {
  alignas(32) __shared__ float As[GEMM_BK][GEMM_LDS];  // As[k][m]
  alignas(32) __shared__ float Bs[GEMM_BK][GEMM_LDS];  // Bs[k][n]
  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
  constexpr int PER = GEMM_BM * GEMM_BK / GEMM_THREADS;  // elements of each tile per thread (4)
  // Element e = tid + GEMM_THREADS·r of a tile, r < PER, sits at (m, k) = (am + r·dam, ak + r·dak) of A's tile (and
  // likewise for B): with the fast index innermost, consecutive threads read consecutive addresses.
  const int am = a_kfast ? tid / GEMM_BK : tid % GEMM_BM, ak = a_kfast ? tid % GEMM_BK : tid / GEMM_BM;
  const int dam = a_kfast ? GEMM_THREADS / GEMM_BK : 0, dak = a_kfast ? 0 : GEMM_THREADS / GEMM_BM;
  const int bn = b_kfast ? tid / GEMM_BK : tid % GEMM_BN, bk = b_kfast ? tid % GEMM_BK : tid / GEMM_BN;
  const int dbn = b_kfast ? GEMM_THREADS / GEMM_BK : 0, dbk = b_kfast ? 0 : GEMM_THREADS / GEMM_BN;
  float ra[PER], rb[PER];
  auto fetch = [&](int kt) {
GEMM_UNROLL
    for (int r = 0; r < PER; r++) {
      const int m = m0 + am + r * dam, ka = kt + ak + r * dak, n = n0 + bn + r * dbn, kb = kt + bk + r * dbk;
      ra[r] = (m < M && ka < k1) ? la(m, ka) : 0.0f;
      rb[r] = (n < N && kb < k1) ? lb(kb, n) : 0.0f;
    }
  };
  Core core;
  core.init();
  if (k0 < k1) fetch(k0);
  for (int kt = k0; kt < k1; kt += GEMM_BK) {
GEMM_UNROLL
    for (int r = 0; r < PER; r++) {
      As[ak + r * dak][am + r * dam] = Core::prep(ra[r]);
      Bs[bk + r * dbk][bn + r * dbn] = Core::prep(rb[r]);
    }
    __syncthreads();
    if (kt + GEMM_BK < k1) fetch(kt + GEMM_BK);  // global loads in flight during the multiply
    core.step(As, Bs);
    __syncthreads();
  }
  core.finish(M, N, st);
}
