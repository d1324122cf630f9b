// linear_bf16.cu -- gemm_bf16: linear.cu's strided batched GEMM on BF16 tensor cores (mma.sync m16n8k16 bf16, FP32
// accumulation), launched by cuda/linear.go (for Linear and attention's products) at precision bf16. A module of its
// own, like conv2d_bf16.cu: the compute_80 build (kernels/ptx/sm80/linear_bf16.ptx) holds the kernel, the compute_70
// build only the entry point with an empty body (never launched: package cuda refuses bf16 below compute capability
// 8.0). Compiling linear.cu itself for compute_80 instead would replace its FP32 kernels on sm_80+ devices too.
#include "common.cuh"
#include "gemm_epi.cuh"
#include "mma.cuh"

// The block tile: GBF_BM x GBF_BN outputs (the same 64 x 64 tiles as gemm_f32, so that the launch grid is the same),
// k-steps of GBF_BK, four warps in a 2 x 2 grid of 32 x 32 warp tiles (2 x 4 MMAs of m16n8 per 16 k).
#define GBF_BM 64
#define GBF_BN 64
#define GBF_BK 32
#define GBF_THREADS 128
// Resident blocks per SM that __launch_bounds__ asks for: 4 caps the registers at 128 per thread (136 on sm_90 and
// 142 on sm_80 without the cap: 3 blocks), with no spills.
#define GBF_MIN_BLOCKS 4
// Row length of a shared tile in 32-bit words (two bf16 each): the 16 words of a k-step plus 4, so that the 8 rows
// an ldmatrix phase reads (80 bytes apart) fall in 8 different 4-bank groups.
#define GBF_LDW 20
// Dynamic shared memory: two stages of the A tile [BM][LDW] and the B tile [BN][LDW] (20480 bytes); cuda/linear.go
// launches with this many (gemmBF16Smem).
#define GBF_SMEM (2 * (GBF_BM + GBF_BN) * GBF_LDW * 4)

// #pragma unroll for nvcc; g++ (the emulator) unrolls by its own judgement and would warn about the pragma.
#ifdef __CUDACC__
#define GBF_UNROLL _Pragma("unroll")
#else
#define GBF_UNROLL
#endif

#if HAVE_MMA_TF32
// One operand's share of a k-step in gemm_bf16: GBF_PER pairs (k, k + 1) of its rows (A's m, B's n), loaded from global
// memory into registers, then rounded to bf16x2 words and stored k-contiguous in the shared tile ([row][LDW] words).
// KF: the operand's k stride is 1, and consecutive threads take consecutive pairs of a row (16 pairs per row, so
// pair r of a thread is row row + 8r, k-pair kp); otherwise its rows are contiguous in memory, and consecutive
// threads take consecutive rows (pair r is row row, k-pair kp + 2r). Either way consecutive threads read
// consecutive addresses. Pairs at k ≥ K are zero; rows past the operand repeat its last row (see init).
#define GBF_PAIRS (GBF_BK / 2)                     // k-pairs per tile row
#define GBF_PER (GBF_BM * GBF_PAIRS / GBF_THREADS)  // pairs per thread and operand (8)
template <bool B>
struct GbfBool {  // std::integral_constant<bool, B> without <type_traits>
  static constexpr bool value = B;
};

template <bool KF>
struct GbfOperand {
  const float* base;  // the operand's element (row 0, k 0)
  int ld, sk;         // row and k strides (sk = 1 when KF)
  int row, kp;        // pair 0's row and k-pair within the tile
  int row0;           // pair 0's row in the operand (not KF: clamped to the last row; see init)
  int span;           // KF: rows from pair 0's row to the last (negative when pair 0's is past it)
  int k;              // pair 0's first k at the next k-step to load
  float v[GBF_PER][2];

  // b: the operand's element (row 0, k 0); r0: the tile's first row; nrows: M or N; ld_: the row stride. Rows past
  // the operand read its last row instead of zeros: a row of A (or B) meets only the same row of C (column of C),
  // which the epilogue does not store, so they need no bounds check in the loop; k past K must be zero.
  __device__ __forceinline__ void init(const float* b, int r0, int nrows, int ld_, int sk_, int tid) {
    base = b;
    ld = ld_;
    sk = KF ? 1 : sk_;
    row = KF ? tid / GBF_PAIRS : tid % GBF_BM;
    kp = KF ? tid % GBF_PAIRS : tid / GBF_BM;
    row0 = KF ? r0 + row : min(r0 + row, nrows - 1);  // KF: pair r's row is row0 + min(8r, span) ≤ nrows - 1
    span = nrows - 1 - (r0 + row);
    k = 2 * kp;
  }
  // Loads the next k-step's pairs into v and advances; EDGE: the k-step may reach past K, whose elements are zero
  // (else all of it lies below K, and the loads need no check). Offsets are 32-bit: cuda/linear.go checks that every
  // element of an operand, up to a k-step past K, lies within 2^31 of its matrix's start.
  template <bool EDGE>
  __device__ __forceinline__ void load(int K) {
    const int lim = K - k;  // pair r's elements are inside while their k offset from k is below lim
GBF_UNROLL
    for (int r = 0; r < GBF_PER; r++) {
      const int dr = KF ? min(r * (GBF_THREADS / GBF_PAIRS), span) : 0;  // row offset: KF pairs are 8 rows apart
      const int dk = KF ? 0 : 2 * (GBF_THREADS / GBF_BM) * r;             // k offset: other pairs 4 k apart
      const float* q = base + ((row0 + dr) * ld + (k + dk) * sk);
      v[r][0] = !EDGE || dk < lim ? __ldg(q) : 0.0f;
      v[r][1] = !EDGE || dk + 1 < lim ? __ldg(q + sk) : 0.0f;
    }
    k += GBF_BK;
  }
  // Rounds the loaded pairs to bfloat16 (to nearest even) and stores them in the tile.
  __device__ __forceinline__ void store(uint32_t* tile) const {
GBF_UNROLL
    for (int r = 0; r < GBF_PER; r++)
      tile[(row + (KF ? r * (GBF_THREADS / GBF_PAIRS) : 0)) * GBF_LDW + kp + (KF ? 0 : r * (GBF_THREADS / GBF_BM))] =
          bf16x2(v[r][0], v[r][1]);
  }
};

// The GEMM of one block, with A's and B's layouts as template arguments (gemm_bf16 picks one of four).
template <bool AKF, bool BKF>
__device__ __forceinline__ void gemm_bf16_tile(const float* a, const float* b, const GemmEpi& epi, int M, int N,
                                               int K, int a_sm, int a_sk, int b_sk, int b_sn) {
  DYNAMIC_SHARED(uint32_t, smem);  // [2][BM + BN][LDW] words: stage s's A tile at s·(BM + BN)·LDW, its B tile after
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int m0 = blockIdx.y * GBF_BM, n0 = blockIdx.x * GBF_BN;
  GbfOperand<AKF> opa;
  GbfOperand<BKF> opb;
  opa.init(a, m0, M, a_sm, a_sk, tid);  // A's rows are m: A[m, k] at m·a_sm + k·a_sk
  opb.init(b, n0, N, b_sn, b_sk, tid);  // B's rows are n: B[k, n] at n·b_sn + k·b_sk

  // Warp (wm, wn) computes rows wm .. wm + 31 and columns wn .. wn + 31 of the tile: acc[i][j] is the m16n8 MMA
  // tile at (wm + 16i, wn + 8j), in the C fragment layout (kernels/emu/mma.h).
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  float acc[2][4][4];
GBF_UNROLL
  for (int i = 0; i < 2; i++)
GBF_UNROLL
    for (int j = 0; j < 4; j++)
GBF_UNROLL
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;
  // ldmatrix row addresses: lane l gives row l % 8 of matrix l / 8. For A's 16 x 16 fragment the matrices are (rows
  // 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3; for two n8 B fragments (n
  // 0-7, k 0-7), (n 0-7, k 8-15) = b0, b1 of the first and (n 8-15, ...) of the second.
  const int la = (wm + lane % 8 + 8 * ((lane / 8) % 2)) * GBF_LDW + 4 * (lane / 16);
  const int lb = GBF_BM * GBF_LDW + (wn + lane % 8 + 8 * (lane / 16)) * GBF_LDW + 4 * ((lane / 8) % 2);

  // One k-step: the tiles of the loaded step into shared buffer `stage`, then (NEXT) the loads of the next step,
  // checked against K when EDGE, in flight while the warps multiply.
  auto step = [&](int stage, bool next, auto edge) {
    uint32_t* As = smem + stage * (GBF_BM + GBF_BN) * GBF_LDW;
    opa.store(As);
    opb.store(As + GBF_BM * GBF_LDW);
    __syncthreads();
    if (next) {
      opa.template load<decltype(edge)::value>(K);
      opb.template load<decltype(edge)::value>(K);
    }
GBF_UNROLL
    for (int ks = 0; ks < GBF_PAIRS; ks += 8) {  // 16 k = 8 words per MMA
      uint32_t af[2][4], bfr[2][4];
GBF_UNROLL
      for (int i = 0; i < 2; i++)
        ldmatrix_x4(af[i], reinterpret_cast<const float*>(As + la + 16 * i * GBF_LDW + ks));
GBF_UNROLL
      for (int j = 0; j < 2; j++)
        ldmatrix_x4(bfr[j], reinterpret_cast<const float*>(As + lb + 16 * j * GBF_LDW + ks));
GBF_UNROLL
      for (int i = 0; i < 2; i++)
GBF_UNROLL
        for (int j = 0; j < 4; j++) mma_bf16_m16n8k16_acc(acc[i][j], af[i], &bfr[j / 2][2 * (j % 2)]);
    }
  };
  // The k-steps: nfull of them lie below K, the last of nk may reach past it. The main loop runs the steps whose
  // next step is a full one (loads without checks); the last one or two steps follow it, unrolled.
  const int nk = (K + GBF_BK - 1) / GBF_BK, nfull = K / GBF_BK;
  if (nk > 0) {
    opa.template load<true>(K);
    opb.template load<true>(K);
  }
  int i = 0;
  for (; i + 1 < nfull; i++) step(i & 1, true, GbfBool<false>());
  if (i < nk) {
    step(i & 1, i + 1 < nk, GbfBool<true>());
    i++;
  }
  if (i < nk) step(i & 1, false, GbfBool<true>());

  // Epilogue, gemm_f32's (gemm_epi.cuh): alpha, then the bias, then the accumulation, in FP32. acc[i][j][q] is
  // row g (+8 for q ≥ 2), column 2t + q % 2 of its m16n8 tile (g = lane / 4, t = lane % 4).
  const int g = lane / 4, t = lane % 4;
GBF_UNROLL
  for (int i = 0; i < 2; i++)
GBF_UNROLL
    for (int j = 0; j < 4; j++)
GBF_UNROLL
      for (int q = 0; q < 4; q++) {
        const int m = m0 + wm + 16 * i + g + 8 * (q / 2), n = n0 + wn + 8 * j + 2 * t + q % 2;
        if (m < M && n < N) epi(m, n, acc[i][j][q]);
      }
}

// C_z[m, n] = alpha·Σ_{k<K} bf16(A_z[m, k])·bf16(B_z[k, n]) + (bias ? bias[n] : 0) + (accumulate ? C_z[m, n] : 0):
// gemm_f32 of kernels/linear.cu (the arguments, strides, batch levels and epilogue are the same; see there) with A
// and B rounded to bfloat16 (to nearest, ties to even: cvt.rn.bf16x2.f32) and FP32 sums. The products of two
// bfloat16 values are exact in FP32, so the result differs from an FP32 GEMM of the rounded inputs only by the
// order of the FP32 additions (the MMA's, then the k-steps' in k order).
//
// Each k-step of GBF_BK: every thread loads 8 pairs (k, k + 1) of A and 8 of B from global memory into registers
// (GbfOperand: consecutive threads at consecutive addresses, along k when the operand's k stride is 1, else along
// m or n), rounds each pair to one bf16x2 word and stores it in shared memory k-contiguous, row m of A's tile and
// row n of B's: the layout that a plain (untransposed) ldmatrix hands to mma's A (row-major) and B (column-major)
// fragments, whichever layout the operand has in global memory. The next k-step's loads are in flight while the
// warps multiply the current one; the tiles alternate between two shared buffers, so one barrier per k-step
// suffices (a buffer is rewritten only after every warp has passed the barrier that follows its last read). The main
// loop's loads have no bounds checks: rows past M (N) read the last row, whose products only reach unstored outputs,
// and only the last k-step, unrolled after the loop, can reach past K.
extern "C" __global__ void __launch_bounds__(GBF_THREADS, GBF_MIN_BLOCKS)
    gemm_bf16(const float* A, const float* B, float* C, const float* bias, int M, int N, int K, int a_sm, int a_sk,
              int b_sk, int b_sn, int c_sm, int zdiv, int a_s1, int a_s2, int b_s1, int b_s2, int c_s1, int c_s2,
              float alpha, int accumulate, const float* ax, float* ay, int act) {
  const int z = blockIdx.z, z1 = z / zdiv, z2 = z - z1 * zdiv;
  const float* a = A + (long long)z1 * a_s1 + (long long)z2 * a_s2;
  const float* b = B + (long long)z1 * b_s1 + (long long)z2 * b_s2;
  float* c = C + (long long)z1 * c_s1 + (long long)z2 * c_s2;
  const GemmEpi epi{c, bias, ax, ay, c_sm, accumulate, act, alpha};
  if (a_sk == 1 && b_sk == 1)
    gemm_bf16_tile<true, true>(a, b, epi, M, N, K, a_sm, a_sk, b_sk, b_sn);
  else if (a_sk == 1)
    gemm_bf16_tile<true, false>(a, b, epi, M, N, K, a_sm, a_sk, b_sk, b_sn);
  else if (b_sk == 1)
    gemm_bf16_tile<false, true>(a, b, epi, M, N, K, a_sm, a_sk, b_sk, b_sn);
  else
    gemm_bf16_tile<false, false>(a, b, epi, M, N, K, a_sm, a_sk, b_sk, b_sn);
}
#else
// The compute_70 build: the entry point with an empty body (see the file comment).
extern "C" __global__ void gemm_bf16(const float*, const float*, float*, const float*, int, int, int, int, int, int,
                                     int, int, int, int, int, int, int, int, int, float, int, const float*, float*,
                                     int) {}
#endif
EMU_REGISTER(gemm_bf16)
