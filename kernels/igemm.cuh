// igemm.cuh -- the implicit-GEMM main loops of the convolutions (kernels/conv2d.cu).
//
// A block computes the BM x IG_BN tile at (m0, n0) = (blockIdx.y·BM, blockIdx.x·IG_BN) of
//   C[m, n] = Σ_k A[m, k]·B[k, n]
// over its share of k, and hands each element to the store functor that st.ready() returns after the main loop, as
// out(m, n, v) (what the store needs beyond the kernel's arguments is computed there, so that it occupies no
// registers during the loop). The operands are read in 16-byte chunks (four consecutive floats) from the packed
// copies that conv2d.cu makes (NHWC activations on a padded grid, tap-major weights), through a source that knows
// the addresses: for the thread's chunk j at the current k-step it gives a pointer and whether the chunk is inside
// the k range (else it is zero), and next() moves it to the next k-step. Two layouts of the operands exist, and each
// has an FP32 and a TF32 tensor-core loop:
//
//   K-major (forward, backward-data): chunks run along k: A[m][k] (weights), B[n][k] (activations at pixel n).
//   MN-major (backward-weight): chunks run along m or n: A[k][m] (dy at pixel k), B[k][n] (activations).
//
// FP32 loops (any architecture): BK = IG_BK_F32, BM·IG_BN/64 threads, each accumulating an 8x8 block of C with FMAs
// (rows 4ty + {0..3} and BM/2 + 4ty + {0..3}, columns 4tx + {0..3} and 64 + 4tx + {0..3}) from shared tiles As[k][m]
// and Bs[k][n] read with 128-bit loads. Register double-buffering: each thread loads its chunks of the next k-step
// into registers before the multiply of the current one and stores them to the other of two shared buffers after
// it, so one barrier per k-step suffices. K-major chunks are transposed on the way into shared memory. (A deeper
// k-step costs registers for the prefetched chunks: at 8 the 256-thread tile fits 128 registers, two blocks per SM.)
//
// Tensor-core loops (sm_80 and the emulator): BK = IG_BK_TC = 32, IG_TC_THREADS = 128 threads (2x2 warps of
// (BM/2) x 64), an IG_STAGES-stage cp.async pipeline into dynamic shared memory (one barrier per k-step), mma.sync
// TF32 with FP32 accumulators; the operands must already be TF32 values (the packing kernels round them). Fragments
// go from shared memory straight into the MMA's registers: by ldmatrix (K-major, mma m16n8k8) or by 128-bit loads
// of consecutive floats after renaming the rows and columns of C (MN-major, mma m16n8k4); an XOR swizzle of the
// 16-byte chunks keeps both the loads and the copies free of bank conflicts (see each loop).
#pragma once
#include "common.cuh"
#include "mma.cuh"

#ifdef __CUDACC__
#define IG_UNROLL _Pragma("unroll")
#else
#define IG_UNROLL
#endif

#define IG_BN 128         // N tile of every variant
#define IG_BK_F32 8       // k-step of the FP32 loops
#define IG_BK_TC 32       // k-step of the tensor-core loops
#define IG_STAGES 3       // cp.async pipeline depth
#define IG_TC_THREADS 128

// Threads of the FP32 loops: one per 8x8 block of the tile.
#define IG_F32_THREADS(BM) ((BM) * IG_BN / 64)
// Dynamic shared memory of the tensor-core loops, in bytes.
#define IG_TC_SMEM(BM) (IG_STAGES * ((BM) + IG_BN) * IG_BK_TC * 4)
// Blocks per SM that the kernels are compiled for (__launch_bounds__): two, which caps the registers of the
// 128-thread tiles at 255 and of the 256-thread FP32 tile at 128 -- except in the compute_80 module, whose FP32 tile
// would spill a few registers on sm_90 under that cap (sm_80 stays within it, so keeps two blocks per SM).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define IG_MIN_BLOCKS(BM, TC) ((TC) || (BM) == 64 ? 2 : 1)
#else
#define IG_MIN_BLOCKS(BM, TC) 2
#endif

// 16-byte global load (read-only path), or zeros.
__device__ __forceinline__ float4 ig_load4(const float* p, bool ok) {
  return ok ? __ldg(reinterpret_cast<const float4*>(p)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

// ---- FP32 multiply: 8x8 per thread ---------------------------------------------------------------------------------
template <int BM>
struct IgF32Acc {
  float c[8][8];
  __device__ __forceinline__ void zero() {
    IG_UNROLL
    for (int i = 0; i < 8; i++)
      IG_UNROLL
      for (int j = 0; j < 8; j++) c[i][j] = 0.0f;
  }
  // As: [BK][BM + 4], Bs: [BK][IG_BN + 4].
  template <int BK>
  __device__ __forceinline__ void step(const float (*As)[BM + 4], const float (*Bs)[IG_BN + 4], int ty, int tx) {
    IG_UNROLL
    for (int k = 0; k < BK; k++) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[k][4 * ty]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[k][BM / 2 + 4 * ty]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][4 * tx]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][64 + 4 * tx]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
      IG_UNROLL
      for (int i = 0; i < 8; i++)
        IG_UNROLL
        for (int j = 0; j < 8; j++) c[i][j] = fmaf(a[i], b[j], c[i][j]);
    }
  }
  template <class ST>
  __device__ __forceinline__ void store(int m0, int n0, int M, int N, int ty, int tx, const ST& st) const {
    const auto out = st.ready();
    IG_UNROLL
    for (int i = 0; i < 8; i++) {
      const int m = m0 + (i < 4 ? 4 * ty + i : BM / 2 + 4 * ty + i - 4);
      IG_UNROLL
      for (int j = 0; j < 8; j++) {
        const int n = n0 + (j < 4 ? 4 * tx + j : 64 + 4 * tx + j - 4);
        if (m < M && n < N) out(m, n, c[i][j]);
      }
    }
  }
};

// FP32 loop over the K-major layout. Thread tid owns chunk column cc = tid % TPR of the k-step (k = 4cc .. 4cc + 3;
// TPR = IG_BK_F32/4 chunks per row) in rows r0 + j·RS (r0 = tid / TPR, RS = threads / TPR) of A (j < BM/RS) and of B
// (j < IG_BN/RS); the sources were made for exactly that assignment (conv2d.cu). ksteps k-steps of IG_BK_F32.
template <int BM, class SRC, class ST>
__device__ __forceinline__ void ig_f32_kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr int T = IG_F32_THREADS(BM), TPR = IG_BK_F32 / 4, RS = T / TPR, CA = BM / RS, CB = IG_BN / RS;
  alignas(16) __shared__ float As[2][IG_BK_F32][BM + 4];
  alignas(16) __shared__ float Bs[2][IG_BK_F32][IG_BN + 4];
  const int tid = threadIdx.x, cc = tid % TPR, r0 = tid / TPR, tx = tid % 16, ty = tid / 16;
  float4 ra[CA], rb[CB];
  auto fetch = [&]() {
    IG_UNROLL
    for (int j = 0; j < CA; j++) ra[j] = ig_load4(src.aptr(j, 0), src.ok(0));
    IG_UNROLL
    for (int j = 0; j < CB; j++) rb[j] = ig_load4(src.bptr(j, 0), src.ok(0));
    src.next();
  };
  auto stash = [&](int buf) {  // transpose: As[k][m] for the chunk's four k
    IG_UNROLL
    for (int j = 0; j < CA; j++) {
      const int r = r0 + j * RS;
      As[buf][4 * cc + 0][r] = ra[j].x;
      As[buf][4 * cc + 1][r] = ra[j].y;
      As[buf][4 * cc + 2][r] = ra[j].z;
      As[buf][4 * cc + 3][r] = ra[j].w;
    }
    IG_UNROLL
    for (int j = 0; j < CB; j++) {
      const int r = r0 + j * RS;
      Bs[buf][4 * cc + 0][r] = rb[j].x;
      Bs[buf][4 * cc + 1][r] = rb[j].y;
      Bs[buf][4 * cc + 2][r] = rb[j].z;
      Bs[buf][4 * cc + 3][r] = rb[j].w;
    }
  };
  IgF32Acc<BM> acc;
  acc.zero();
  if (ksteps > 0) {
    fetch();
    stash(0);
  }
  __syncthreads();
  for (int s = 0; s < ksteps; s++) {
    const int buf = s & 1;
    if (s + 1 < ksteps) fetch();  // global loads in flight during the multiply
    acc.template step<IG_BK_F32>(As[buf], Bs[buf], ty, tx);
    if (s + 1 < ksteps) stash(buf ^ 1);
    __syncthreads();
  }
  acc.store(blockIdx.y * BM, blockIdx.x * IG_BN, M, N, ty, tx, st);
}

// FP32 loop over the MN-major layout. Thread tid owns row r = tid / TPR of the k-step (TPR = threads / IG_BK_F32
// threads per row) and chunk columns c0 + j·TPR (c0 = tid % TPR) of A (j < BM/(4·TPR)) and of B (j < IG_BN/(4·TPR)).
template <int BM, class SRC, class ST>
__device__ __forceinline__ void ig_f32_mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr int T = IG_F32_THREADS(BM), TPR = T / IG_BK_F32, CA = BM / (4 * TPR), CB = IG_BN / (4 * TPR);
  alignas(16) __shared__ float As[2][IG_BK_F32][BM + 4];
  alignas(16) __shared__ float Bs[2][IG_BK_F32][IG_BN + 4];
  const int tid = threadIdx.x, r = tid / TPR, c0 = tid % TPR, tx = tid % 16, ty = tid / 16;
  float4 ra[CA], rb[CB];
  auto fetch = [&]() {
    IG_UNROLL
    for (int j = 0; j < CA; j++) ra[j] = ig_load4(src.aptr(j), src.aok(j));
    IG_UNROLL
    for (int j = 0; j < CB; j++) rb[j] = ig_load4(src.bptr(j), src.bok(j));
    src.next();
  };
  auto stash = [&](int buf) {
    IG_UNROLL
    for (int j = 0; j < CA; j++) *reinterpret_cast<float4*>(&As[buf][r][4 * (c0 + j * TPR)]) = ra[j];
    IG_UNROLL
    for (int j = 0; j < CB; j++) *reinterpret_cast<float4*>(&Bs[buf][r][4 * (c0 + j * TPR)]) = rb[j];
  };
  IgF32Acc<BM> acc;
  acc.zero();
  if (ksteps > 0) {
    fetch();
    stash(0);
  }
  __syncthreads();
  for (int s = 0; s < ksteps; s++) {
    const int buf = s & 1;
    if (s + 1 < ksteps) fetch();
    acc.template step<IG_BK_F32>(As[buf], Bs[buf], ty, tx);
    if (s + 1 < ksteps) stash(buf ^ 1);
    __syncthreads();
  }
  acc.store(blockIdx.y * BM, blockIdx.x * IG_BN, M, N, ty, tx, st);
}

#if HAVE_MMA_TF32
// ---- tensor cores ----------------------------------------------------------------------------------------------------
__device__ __forceinline__ float4 ig_lds4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// The pipeline shared by both layouts: issue(stage) starts the copies of the sources' current k-step into a stage
// and advances them; compute(stage) multiplies a stage. One commit per k-step slot keeps the group count uniform.
template <class ISSUE, class COMPUTE>
__device__ __forceinline__ void ig_tc_pipeline(int ksteps, const ISSUE& issue, const COMPUTE& compute) {
  IG_UNROLL
  for (int s = 0; s < IG_STAGES - 1; s++) {
    if (s < ksteps) issue(s);
    cp_async_commit();
  }
  for (int s = 0; s < ksteps; s++) {
    cp_async_wait<IG_STAGES - 2>();  // this thread's copies of k-step s are complete
    __syncthreads();                 // everyone's are; and everyone has finished k-step s − 1, whose stage is reused
    if (s + IG_STAGES - 1 < ksteps) issue((s + IG_STAGES - 1) % IG_STAGES);
    cp_async_commit();
    compute(s % IG_STAGES);
  }
  cp_async_wait<0>();  // the trailing (empty) groups
}

// ---- BF16: the tensor-core loops' stages multiplied with mma m16n8k16 bf16 -----------------------------------------
// The BF16 kernels keep the TF32 kernels' pipeline, shared-memory layout and fragment loads: their operands are FP32
// values already rounded to bfloat16 by the packing kernels (f32_to_bf16), and the fragments that the TF32 loops load
// for two k8 MMAs (K-major) or four k4 MMAs (MN-major) are converted (cvt.rn.bf16x2.f32, exact on these values) into
// those of one m16n8k16 MMA. The k-slots are permuted, the same way for A and B (a sum does not depend on the order of
// its terms): the m16n8k16 slots 2t, 2t + 1, 2t + 8, 2t + 9 of lane (g, t) take the k-indices that the lane holds.
//   K-major, a k16 group = sub-blocks kb = 2p, 2p + 1 (m16n8k8 fragments, k = 8kb + t in a0/a1/b0 and 8kb + 4 + t in
//     a2/a3/b1): slots 2t, 2t + 1 ← 8·2p + t, 8·2p + 4 + t; slots 2t + 8, 2t + 9 ← 8·(2p + 1) + t, 8·(2p + 1) + 4 + t.
//   MN-major, a k16 group = sub-steps s = 4p .. 4p + 3 (m16n8k4 fragments, k = 4s + t): slots 2t, 2t + 1 ← sub-steps
//     4p, 4p + 1; slots 2t + 8, 2t + 9 ← 4p + 2, 4p + 3.
// Each is a bijection of the group's 16 k-indices (t < 4), so each MMA adds the same 16 products per output as the
// TF32 path's two or four do. (Not done: bfloat16 in shared memory, which would halve the copies' bytes and need
// ldmatrix fragments of 16-bit elements.)
template <int MT, int NT>
__device__ __forceinline__ void ig_bf16_kmajor_stage(float (&acc)[MT][NT][4], const float* St, const int (&aoff)[4],
                                                     const int (&boff)[4]) {
  IG_UNROLL
  for (int p = 0; p < 2; p++) {
    uint32_t ha[MT][4];
    IG_UNROLL
    for (int h = 0; h < 2; h++)
      IG_UNROLL
      for (int i = 0; i < MT; i++) {
        uint32_t f[4];
        ldmatrix_x4(f, St + aoff[2 * p + h] + 16 * i * IG_BK_TC);
        ha[i][2 * h] = bf16x2(__uint_as_float(f[0]), __uint_as_float(f[2]));      // row g
        ha[i][2 * h + 1] = bf16x2(__uint_as_float(f[1]), __uint_as_float(f[3]));  // row g + 8
      }
    IG_UNROLL
    for (int jj = 0; jj < NT / 2; jj++) {
      uint32_t hb[2][2];
      IG_UNROLL
      for (int h = 0; h < 2; h++) {
        uint32_t f[4];
        ldmatrix_x4(f, St + boff[2 * p + h] + 16 * jj * IG_BK_TC);
        hb[0][h] = bf16x2(__uint_as_float(f[0]), __uint_as_float(f[1]));  // n-tile 2jj
        hb[1][h] = bf16x2(__uint_as_float(f[2]), __uint_as_float(f[3]));  // n-tile 2jj + 1
      }
      IG_UNROLL
      for (int i = 0; i < MT; i++) {
        mma_bf16_m16n8k16_acc(acc[i][2 * jj], ha[i], hb[0]);
        mma_bf16_m16n8k16_acc(acc[i][2 * jj + 1], ha[i], hb[1]);
      }
    }
  }
}

// ig_lds4_pinned: d[0..3] = the 16 bytes at p in shared memory, by one ld.shared.v4 in inline PTX: with the plain
// load, NVVM (CUDA 11.8) split some of the BF16 loop's vector loads differently from run to run, which made the
// committed PTX irreproducible (make ptx-check).
__device__ __forceinline__ void ig_lds4_pinned(float d[4], const float* p) {
#ifdef __CUDACC__
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]) : "r"(a));
#else
  const float4 v = ig_lds4(p);
  d[0] = v.x, d[1] = v.y, d[2] = v.z, d[3] = v.w;
#endif
}

template <int BM, int MT, int NT, int LA, int LB>
__device__ __forceinline__ void ig_bf16_mnmajor_stage(float (&acc)[MT][NT][4], const float* As, const float* Bs,
                                                      const int (&aoff)[LA], const int (&boff)[LB]) {
  IG_UNROLL
  for (int p = 0; p < IG_BK_TC / 16; p++) {
    uint32_t ha[MT][4], hb[NT][2];
    IG_UNROLL
    for (int h = 0; h < 2; h++) {  // sub-steps 4p + 2h and 4p + 2h + 1 give registers h (A: 2h, 2h + 1)
      float va[2][4 * LA], vb[2][4 * LB];
      IG_UNROLL
      for (int e = 0; e < 2; e++) {
        const int s = 4 * p + 2 * h + e;
        IG_UNROLL
        for (int l = 0; l < LA; l++) ig_lds4_pinned(va[e] + 4 * l, As + 4 * s * BM + aoff[l]);
        IG_UNROLL
        for (int l = 0; l < LB; l++) ig_lds4_pinned(vb[e] + 4 * l, Bs + 4 * s * IG_BN + boff[l]);
      }
      IG_UNROLL
      for (int i = 0; i < MT; i++) {
        ha[i][2 * h] = bf16x2(va[0][2 * i], va[1][2 * i]);              // row g (a0 of sub-steps e = 0, 1)
        ha[i][2 * h + 1] = bf16x2(va[0][2 * i + 1], va[1][2 * i + 1]);  // row g + 8 (a1)
      }
      IG_UNROLL
      for (int j = 0; j < NT; j++) hb[j][h] = bf16x2(vb[0][j], vb[1][j]);
    }
    IG_UNROLL
    for (int i = 0; i < MT; i++)
      IG_UNROLL
      for (int j = 0; j < NT; j++) mma_bf16_m16n8k16_acc(acc[i][j], ha[i], hb[j]);
  }
}

// The BF16 stages behind a specialization, so that the TF32 kernels (BF false) do not instantiate them: their dead
// presence made CUDA 11.8's NVVM emit the TF32 backward-weight kernels differently from run to run.
template <bool BF>
struct IgBf16Stage {
  template <int MT, int NT>
  __device__ __forceinline__ static void kmajor(float (&)[MT][NT][4], const float*, const int (&)[4],
                                                const int (&)[4]) {}
  template <int BM, int MT, int NT, int LA, int LB>
  __device__ __forceinline__ static void mnmajor(float (&)[MT][NT][4], const float*, const float*, const int (&)[LA],
                                                 const int (&)[LB]) {}
};
template <>
struct IgBf16Stage<true> {
  template <int MT, int NT>
  __device__ __forceinline__ static void kmajor(float (&acc)[MT][NT][4], const float* St, const int (&aoff)[4],
                                                const int (&boff)[4]) {
    ig_bf16_kmajor_stage<MT, NT>(acc, St, aoff, boff);
  }
  template <int BM, int MT, int NT, int LA, int LB>
  __device__ __forceinline__ static void mnmajor(float (&acc)[MT][NT][4], const float* As, const float* Bs,
                                                 const int (&aoff)[LA], const int (&boff)[LB]) {
    ig_bf16_mnmajor_stage<BM, MT, NT, LA, LB>(acc, As, Bs, aoff, boff);
  }
};

// K-major tensor-core loop. Stage layout: As[BM][32] then Bs[IG_BN][32], rows of one k-step; 16-byte chunk c of row
// r is stored at chunk c ^ (r & 7), so that the eight rows of an 8x4 block that ldmatrix reads at one chunk lie in
// eight different bank groups. H = 1: thread tid copies chunk cc = tid % 8 of rows r0 + 16j (r0 = tid / 8) of A
// (j < BM/16) and B (j < 8). H = 2 (the sources' chunks cc and cc + 4 of a row are 16 floats apart): chunks cc and
// cc + 4 (cc = tid % 4) of rows r0 + 32j (r0 = tid / 4), one address for both.
//
// Fragments (m16n8k8, k-slots in their natural order: k-step sub-block kb covers k = 8kb .. 8kb + 7 = chunks 2kb and
// 2kb + 1): one ldmatrix.x4 gives the four A registers of an m-tile (8x4 blocks: rows 0-7 and 8-15 of chunk 2kb, then
// of chunk 2kb + 1, in the order a0, a1, a2, a3), and one gives b0, b1 of two n-tiles (rows 0-7 of the first tile at
// chunks 2kb, 2kb + 1, then of the second).
template <int BM, int H, bool BF, class SRC, class ST>
__device__ __forceinline__ void ig_tc_kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr int WM = BM / 2, MT = WM / 16, NT = 8, TPR = 8 / H, RS = IG_TC_THREADS / TPR, CA = BM / RS,
                CB = IG_BN / RS;
  constexpr int STAGE = (BM + IG_BN) * IG_BK_TC;
  DYNAMIC_SHARED(float, sm);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wm = warp >> 1, wn = warp & 1;
  const int g = lane >> 2, t = lane & 3, cc = tid % TPR, r0 = tid / TPR;
  const int q = lane >> 3, rr = lane & 7;  // this lane's ldmatrix row: row rr of block q
  float acc[MT][NT][4];
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++)
      IG_UNROLL
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  auto issue = [&](int stage) {
    float* As = sm + stage * STAGE;
    float* Bs = As + BM * IG_BK_TC;
    IG_UNROLL
    for (int j = 0; j < CA; j++) {
      const int r = r0 + RS * j;
      IG_UNROLL
      for (int h = 0; h < H; h++)
        cp_async_16(As + r * IG_BK_TC + 4 * ((cc + 4 * h) ^ (r & 7)), src.aptr(j, h), src.ok(h) ? 16 : 0);
    }
    IG_UNROLL
    for (int j = 0; j < CB; j++) {
      const int r = r0 + RS * j;
      IG_UNROLL
      for (int h = 0; h < H; h++)
        cp_async_16(Bs + r * IG_BK_TC + 4 * ((cc + 4 * h) ^ (r & 7)), src.bptr(j, h), src.ok(h) ? 16 : 0);
    }
    src.next();
  };
  // This lane's ldmatrix rows: A m-tile i: row wm·WM + 16i + 8(q & 1) + rr at chunk 2kb + (q >> 1); B n-tiles 2jj,
  // 2jj + 1: row wn·64 + 16jj + 8(q >> 1) + rr at chunk 2kb + (q & 1). All these rows have row & 7 = rr.
  // Offsets (floats, within a stage) of the sub-block kb: computed once, so that each ldmatrix address is a stage
  // base plus one of these plus a constant.
  int aoff[4], boff[4];
  IG_UNROLL
  for (int kb = 0; kb < 4; kb++) {
    aoff[kb] = (wm * WM + 8 * (q & 1) + rr) * IG_BK_TC + 4 * ((2 * kb + (q >> 1)) ^ rr);
    boff[kb] = BM * IG_BK_TC + (wn * 64 + 8 * (q >> 1) + rr) * IG_BK_TC + 4 * ((2 * kb + (q & 1)) ^ rr);
  }
  auto compute = [&](int stage) {
    const float* St = sm + stage * STAGE;
    if (BF) {
      IgBf16Stage<BF>::template kmajor<MT, NT>(acc, St, aoff, boff);
    } else {
      IG_UNROLL
      for (int kb = 0; kb < 4; kb++) {
        uint32_t fa[MT][4];
        IG_UNROLL
        for (int i = 0; i < MT; i++) ldmatrix_x4(fa[i], St + aoff[kb] + 16 * i * IG_BK_TC);
        IG_UNROLL
        for (int jj = 0; jj < NT / 2; jj++) {
          uint32_t fb[4];
          ldmatrix_x4(fb, St + boff[kb] + 16 * jj * IG_BK_TC);
          IG_UNROLL
          for (int i = 0; i < MT; i++) {
            mma_tf32_m16n8k8_acc(acc[i][2 * jj], fa[i], fb);
            mma_tf32_m16n8k8_acc(acc[i][2 * jj + 1], fa[i], fb + 2);
          }
        }
      }
    }
  };
  ig_tc_pipeline(ksteps, issue, compute);

  const int m0 = blockIdx.y * BM + wm * WM, n0 = blockIdx.x * IG_BN + wn * 64;
  const auto out = st.ready();
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++)
      IG_UNROLL
      for (int e = 0; e < 4; e++) {
        const int m = m0 + 16 * i + g + (e >= 2 ? 8 : 0), n = n0 + 8 * j + 2 * t + (e & 1);
        if (m < M && n < N) out(m, n, acc[i][j][e]);
      }
}

// MN-major tensor-core loop. Stage layout: As[32][BM] then Bs[32][IG_BN], one row per k; 16-byte chunk c of row r is
// stored at chunk c ^ swz_L(r) (below). Thread tid copies row r = tid / 4, chunk columns (tid % 4) + 4j of A
// (j < BM/16) and B (j < 8).
//
// Fragments (m16n8k4: a0 = (row g, k-slot t), a1 = (row g + 8, t), b0 = (t, column g); k-slot t of sub-step s is row
// 4s + t). The rows and columns of C are renamed: in warp (wm, wn), MMA row g of m-tile i is channel
// wm·WM + 2MT·g + 2i of the tile and row g + 8 the next channel; MMA column g of n-tile j is column wn·64 + 8g + j.
// A lane then finds the register pair a0, a1 of every m-tile in the 2MT consecutive floats at channel wm·WM + 2MT·g
// of row 4s + t, and b0 of all eight n-tiles in the eight floats at column wn·64 + 8g: L = 2MT/4 resp. 2 chunks, read
// straight into the MMA's registers. The quarter-warp's lanes read chunks g·L + l (g of one pair) in rows with
// t = row & 3: swz_L spreads t over the chunk bits other than g's lowest, which makes the eight chunks distinct
// modulo 8.
__device__ __forceinline__ int ig_swz(int row, int L) {
  const int t = row & 3;
  return L == 1 ? t << 1 : ((t & 1) | ((t & 2) << 1));
}

template <int BM, bool BF, class SRC, class ST>
__device__ __forceinline__ void ig_tc_mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr int WM = BM / 2, MT = WM / 16, NT = 8, CA = BM / 16, CB = IG_BN / 16;
  constexpr int LA = 2 * MT / 4, LB = 2;
  constexpr int STAGE = (BM + IG_BN) * IG_BK_TC;
  DYNAMIC_SHARED(float, sm);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wm = warp >> 1, wn = warp & 1;
  const int g = lane >> 2, t = lane & 3, r = tid / 4, c0 = tid % 4;
  float acc[MT][NT][4];
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++)
      IG_UNROLL
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  auto issue = [&](int stage) {
    float* As = sm + stage * STAGE;
    float* Bs = As + BM * IG_BK_TC;
    const int sa = ig_swz(r, LA), sb = ig_swz(r, LB);
    IG_UNROLL
    for (int j = 0; j < CA; j++)
      cp_async_16(As + r * BM + 4 * ((c0 + 4 * j) ^ sa), src.aptr(j), src.aok(j) ? 16 : 0);
    IG_UNROLL
    for (int j = 0; j < CB; j++)
      cp_async_16(Bs + r * IG_BN + 4 * ((c0 + 4 * j) ^ sb), src.bptr(j), src.bok(j) ? 16 : 0);
    src.next();
  };
  // This lane's chunks: A at (wm·WM)/4 + g·LA + l, B at wn·16 + g·LB + l, swizzled by its rows' t.
  const int sa = ig_swz(t, LA), sb = ig_swz(t, LB);
  int aoff[LA], boff[LB];
  IG_UNROLL
  for (int l = 0; l < LA; l++) aoff[l] = t * BM + 4 * (((wm * WM) / 4 + g * LA + l) ^ sa);
  IG_UNROLL
  for (int l = 0; l < LB; l++) boff[l] = t * IG_BN + 4 * ((wn * 16 + g * LB + l) ^ sb);
  auto compute = [&](int stage) {
    const float* As = sm + stage * STAGE;
    const float* Bs = As + BM * IG_BK_TC;
    if (BF) {
      IgBf16Stage<BF>::template mnmajor<BM, MT, NT, LA, LB>(acc, As, Bs, aoff, boff);
    } else {
      IG_UNROLL
      for (int s = 0; s < IG_BK_TC / 4; s++) {
        uint32_t va[4 * LA], vb[4 * LB];
        IG_UNROLL
        for (int l = 0; l < LA; l++) {
          const float4 v = ig_lds4(As + 4 * s * BM + aoff[l]);
          va[4 * l] = __float_as_uint(v.x), va[4 * l + 1] = __float_as_uint(v.y);
          va[4 * l + 2] = __float_as_uint(v.z), va[4 * l + 3] = __float_as_uint(v.w);
        }
        IG_UNROLL
        for (int l = 0; l < LB; l++) {
          const float4 v = ig_lds4(Bs + 4 * s * IG_BN + boff[l]);
          vb[4 * l] = __float_as_uint(v.x), vb[4 * l + 1] = __float_as_uint(v.y);
          vb[4 * l + 2] = __float_as_uint(v.z), vb[4 * l + 3] = __float_as_uint(v.w);
        }
        IG_UNROLL
        for (int i = 0; i < MT; i++)
          IG_UNROLL
          for (int j = 0; j < NT; j++) mma_tf32_m16n8k4_acc(acc[i][j], va + 2 * i, vb[j]);
      }
    }
  };
  ig_tc_pipeline(ksteps, issue, compute);

  const int m0 = blockIdx.y * BM + wm * WM, n0 = blockIdx.x * IG_BN + wn * 64;
  const auto out = st.ready();
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++)
      IG_UNROLL
      for (int e = 0; e < 4; e++) {
        const int m = m0 + 2 * MT * g + 2 * i + (e >= 2 ? 1 : 0), n = n0 + 8 * (2 * t + (e & 1)) + j;
        if (m < M && n < N) out(m, n, acc[i][j][e]);
      }
}
#endif  // HAVE_MMA_TF32
