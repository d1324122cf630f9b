// igemm.cuh -- the implicit-GEMM main loops of the convolutions (kernels/conv2d.cu).
//
// A block computes the BM x IG_BN tile at (m0, n0) = (blockIdx.y·BM, blockIdx.x·IG_BN) of
//   C[m, n] = Σ_k A[m, k]·B[k, n]
// over its share of k, and hands each element to the store functor that st.ready() returns after the main loop, as
// out(m, n, v) (what the store needs beyond the kernel's arguments is computed there, so that it occupies no
// registers during the loop). The operands are read in 16-byte chunks (four consecutive floats, or eight bfloat16
// for the BF16 loops) from the packed copies that conv2d.cu makes (NHWC activations on a padded grid, tap-major
// weights), through a source that knows the addresses: for the thread's chunk j at the current k-step it gives a
// pointer and whether the chunk is inside the k range (else it is zero), and next() moves it to the next k-step. Two
// layouts of the operands exist, and each has an FP32, a TF32 and a BF16 tensor-core loop:
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
// (BM/2) x 64; the K-major loops with BM = 64 slice k instead: 2x2 warps of 64 x 64 over half the k-step each, see
// IG_SLICED_K), an IG_STAGES-stage cp.async pipeline into dynamic shared memory (one barrier per k-step), mma.sync
// TF32 with FP32 accumulators; the operands must already be TF32 values (the packing kernels round them). Fragments
// go from shared memory straight into the MMA's registers: by ldmatrix (K-major, mma m16n8k8) or by 128-bit loads
// of consecutive floats after renaming the rows and columns of C (MN-major, mma m16n8k4); an XOR swizzle of the
// 16-byte chunks keeps both the loads and the copies free of bank conflicts (see each loop).
//
// BF16 loops (sm_80 and the emulator): the same threads, warps and pipeline on bfloat16 operands (16-bit patterns
// that the packing kernels round to nearest even), kept as bfloat16 in shared memory: BK = IG_BK_BF16 = 64 elements,
// the TF32 loops' 128-byte rows and stage size; fragments by ldmatrix (K-major) and ldmatrix.trans (MN-major) of
// 16-bit elements straight into mma m16n8k16 bf16, FP32 accumulators, no conversion in the loop.
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
#define IG_BK_TC 32       // k-step of the tensor-core loops (TF32)
#define IG_BK_BF16 64     // k-step of the BF16 tensor-core loops (bfloat16 elements: the same 128-byte rows)
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

// The pipeline of the K-major loops (TF32 and BF16) and of the BF16 MN-major loop: ig_tc_pipeline's schedule
// (IG_STAGES stages, one commit per k-step slot, one barrier per k-step), unrolled by IG_STAGES so that the stage of
// every call is a constant: the shared addresses of the copies and of the ldmatrix rows are then a per-thread
// register plus an immediate, with no stage arithmetic in the loop.
template <class ISSUE, class COMPUTE>
__device__ __forceinline__ void ig_tc_pipeline_unrolled(int ksteps, const ISSUE& issue, const COMPUTE& compute) {
  IG_UNROLL
  for (int s = 0; s < IG_STAGES - 1; s++) {
    if (s < ksteps) issue(s);
    cp_async_commit();
  }
  for (int s0 = 0; s0 < ksteps; s0 += IG_STAGES) {
    IG_UNROLL
    for (int u = 0; u < IG_STAGES; u++) {  // k-step s0 + u in stage u
      if (u > 0 && s0 + u >= ksteps) break;
      cp_async_wait<IG_STAGES - 2>();  // this thread's copies of k-step s0 + u are complete
      __syncthreads();  // everyone's are; and everyone has finished the k-step before, whose stage is reused
      if (s0 + u + IG_STAGES - 1 < ksteps) issue((u + IG_STAGES - 1) % IG_STAGES);
      cp_async_commit();
      compute(u);
    }
  }
  cp_async_wait<0>();  // the trailing (empty) groups
}

// Sliced k (every tensor-core loop with BM = 64): the 2x2 warps are (k half kh, n half wn), each with the whole 64 x 64
// tile of its n half over the sub-blocks of its k half of every k-step, so that a warp's MMAs per ldmatrix are those
// of the 128-row tiles' 64 x 64 warp tiles (32 per 8 instead of 16 per 6 with 32 x 64 tiles). After the main loop
// the two k halves' partial tiles are added through shared memory in a fixed order (half 0 + half 1), so the result
// depends on the shape only.
#define IG_SLICED_K(BM) ((BM) == 64)

// The sliced-k reduction: the k half 1 warps leave their accumulators in shared memory (the pipeline's stages, all
// copies complete and read; 32 KiB of the 72), each at its (wn, fragment, lane) place, 16 bytes per lane, so that a
// warp's stores and loads are 512 contiguous bytes (no bank conflicts); the k half 0 warps add them to theirs.
// Returns whether this warp holds the sums (and stores them). Every thread reaches both barriers.
template <int MT, int NT>
__device__ __forceinline__ bool ig_sliced_k_sum(float (&acc)[MT][NT][4], float* red, int kh, int wn, int lane) {
  float4* part = reinterpret_cast<float4*>(red) + wn * MT * NT * 32 + lane;
  __syncthreads();  // every warp has finished reading the stages
  if (kh == 1) {
    IG_UNROLL
    for (int i = 0; i < MT; i++)
      IG_UNROLL
      for (int j = 0; j < NT; j++)
        part[(i * NT + j) * 32] = make_float4(acc[i][j][0], acc[i][j][1], acc[i][j][2], acc[i][j][3]);
  }
  __syncthreads();
  if (kh == 1) return false;
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++) {
      const float4 p = part[(i * NT + j) * 32];
      acc[i][j][0] += p.x, acc[i][j][1] += p.y, acc[i][j][2] += p.z, acc[i][j][3] += p.w;
    }
  return true;
}

// K-major tensor-core loop. Stage layout: As[BM][32] then Bs[IG_BN][32], rows of one k-step; 16-byte chunk c of row
// r is stored at chunk c ^ (r & 7), so that the eight rows of an 8x4 block that ldmatrix reads at one chunk lie in
// eight different bank groups. H = 1: thread tid copies chunk cc = tid % 8 of rows r0 + 16j (r0 = tid / 8) of A
// (j < BM/16) and B (j < 8). H = 2: the two adjacent chunks 2cc and 2cc + 1 (cc = tid % 4; in the source the second
// is 16 bytes after the first: one address, an immediate apart) of rows r0 + 32j (r0 = tid / 4). The copies are free
// of bank conflicts too: a row is 128 bytes, so a chunk's bank group is its place in the row, and the eight threads
// tid = 8u .. 8u + 7 of one copy instruction store (H = 1) the eight chunks of one row, or (H = 2, chunk 2cc + h) the
// four places with lowest bit h ^ (r & 1) in each of two rows r = 2u + 32j and 2u + 1 + 32j, which differ in r & 1:
// eight distinct places either way.
//
// Fragments (m16n8k8, k-slots in their natural order: k-step sub-block kb covers k = 8kb .. 8kb + 7 = chunks 2kb and
// 2kb + 1): one ldmatrix.x4 gives the four A registers of an m-tile (8x4 blocks: rows 0-7 and 8-15 of chunk 2kb, then
// of chunk 2kb + 1, in the order a0, a1, a2, a3), and one gives b0, b1 of two n-tiles (rows 0-7 of the first tile at
// chunks 2kb, 2kb + 1, then of the second).
template <int BM, int H, class SRC, class ST>
__device__ __forceinline__ void ig_tc_kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr bool SK = IG_SLICED_K(BM);
  constexpr int WM = SK ? BM : BM / 2, MT = WM / 16, NT = 8, KS = SK ? 2 : 4, TPR = 8 / H, RS = IG_TC_THREADS / TPR,
                CA = BM / RS, CB = IG_BN / RS;
  constexpr int STAGE = (BM + IG_BN) * IG_BK_TC;
  DYNAMIC_SHARED(float, sm);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wn = warp & 1;
  const int wm = SK ? 0 : warp >> 1, kh = SK ? warp >> 1 : 0;  // the warp's m half, or (sliced k) its k half
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
        cp_async_16(As + r * IG_BK_TC + 4 * ((H * cc + h) ^ (r & 7)), src.aptr(j, h), src.ok(h) ? 16 : 0);
    }
    IG_UNROLL
    for (int j = 0; j < CB; j++) {
      const int r = r0 + RS * j;
      IG_UNROLL
      for (int h = 0; h < H; h++)
        cp_async_16(Bs + r * IG_BK_TC + 4 * ((H * cc + h) ^ (r & 7)), src.bptr(j, h), src.ok(h) ? 16 : 0);
    }
    src.next();
  };
  // This lane's ldmatrix rows: A m-tile i: row wm·WM + 16i + 8(q & 1) + rr at chunk 2kb + (q >> 1); B n-tiles 2jj,
  // 2jj + 1: row wn·64 + 16jj + 8(q >> 1) + rr at chunk 2kb + (q & 1). All these rows have row & 7 = rr. The warp's
  // sub-blocks are kb = KS·kh + kk (kk < KS): all four, or with sliced k its half of them.
  // Offsets (floats, within a stage) of the sub-block kb: computed once, so that each ldmatrix address is a stage
  // base plus one of these plus a constant.
  // Pinned (saddr_pin), and with the pipeline unrolled by stage, each address is a register plus an immediate.
  saddr_t aaddr[KS], baddr[KS];
  IG_UNROLL
  for (int kk = 0; kk < KS; kk++) {
    const int kb = KS * kh + kk;
    aaddr[kk] = saddr(sm + (wm * WM + 8 * (q & 1) + rr) * IG_BK_TC + 4 * ((2 * kb + (q >> 1)) ^ rr));
    baddr[kk] = saddr(sm + BM * IG_BK_TC + (wn * 64 + 8 * (q >> 1) + rr) * IG_BK_TC + 4 * ((2 * kb + (q & 1)) ^ rr));
    saddr_pin(aaddr[kk]);
    saddr_pin(baddr[kk]);
  }
  auto compute = [&](int stage) {
    IG_UNROLL
    for (int kk = 0; kk < KS; kk++) {
      uint32_t fa[MT][4];
      IG_UNROLL
      for (int i = 0; i < MT; i++) ldmatrix_x4_at(fa[i], aaddr[kk] + 4 * (stage * STAGE + 16 * i * IG_BK_TC));
      IG_UNROLL
      for (int jj = 0; jj < NT / 2; jj++) {
        uint32_t fb[4];
        ldmatrix_x4_at(fb, baddr[kk] + 4 * (stage * STAGE + 16 * jj * IG_BK_TC));
        IG_UNROLL
        for (int i = 0; i < MT; i++) {
          mma_tf32_m16n8k8_acc(acc[i][2 * jj], fa[i], fb);
          mma_tf32_m16n8k8_acc(acc[i][2 * jj + 1], fa[i], fb + 2);
        }
      }
    }
  };
  ig_tc_pipeline_unrolled(ksteps, issue, compute);
  if (SK && !ig_sliced_k_sum(acc, sm, kh, wn, lane)) return;  // the k half 1 warps are done

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
// modulo 8 (the rows are 256 or 512 bytes long, so every row starts at bank 0).
//
// With BM = 64 the loop slices k (IG_SLICED_K): warp (kh, wn) renames the whole 64-row tile (WM = 64, MT = 4, L = 2,
// the 128-row tile's warp layout) and multiplies sub-steps 4kh .. 4kh + 3 of every k-step, 32 MMAs per 4 shared
// loads instead of 16 per 3; ig_sliced_k_sum adds the halves after the loop.
__device__ __forceinline__ int ig_swz(int row, int L) {
  const int t = row & 3;
  return L == 1 ? t << 1 : ((t & 1) | ((t & 2) << 1));
}

template <int BM, class SRC, class ST>
__device__ __forceinline__ void ig_tc_mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr bool SK = IG_SLICED_K(BM);
  constexpr int WM = SK ? BM : BM / 2, MT = WM / 16, NT = 8, CA = BM / 16, CB = IG_BN / 16, KS = SK ? 4 : 8;
  constexpr int LA = 2 * MT / 4, LB = 2;
  constexpr int STAGE = (BM + IG_BN) * IG_BK_TC;
  DYNAMIC_SHARED(float, sm);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wn = warp & 1;
  const int wm = SK ? 0 : warp >> 1, kh = SK ? warp >> 1 : 0;  // the warp's m half, or (sliced k) its k half
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
  // This lane's chunks: A at (wm·WM)/4 + g·LA + l, B at wn·16 + g·LB + l, swizzled by its rows' t, in the rows of
  // the warp's first sub-step KS·kh (with sliced k: k-rows 16kh .. 16kh + 15 are its half of the k-step).
  const int sa = ig_swz(t, LA), sb = ig_swz(t, LB);
  int aoff[LA], boff[LB];
  IG_UNROLL
  for (int l = 0; l < LA; l++) aoff[l] = (4 * KS * kh + t) * BM + 4 * (((wm * WM) / 4 + g * LA + l) ^ sa);
  IG_UNROLL
  for (int l = 0; l < LB; l++) boff[l] = (4 * KS * kh + t) * IG_BN + 4 * ((wn * 16 + g * LB + l) ^ sb);
  auto compute = [&](int stage) {
    const float* As = sm + stage * STAGE;
    const float* Bs = As + BM * IG_BK_TC;
    IG_UNROLL
    for (int s = 0; s < KS; s++) {
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
  };
  // Not ig_tc_pipeline_unrolled: with it, CUDA 11.8's NVVM numbers this loop's PTX registers differently from run
  // to run (the committed PTX must be reproducible, make ptx-check), though it raised the MMA share by 7-8 points.
  ig_tc_pipeline(ksteps, issue, compute);
  if (SK && !ig_sliced_k_sum(acc, sm, kh, wn, lane)) return;  // the k half 1 warps are done

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
// ---- BF16: bfloat16 operands in shared memory, mma m16n8k16 bf16 ----------------------------------------------------
// The packing kernels write the BF16 kernels' operands as bfloat16 (conv2d_pack_*_bf16: 16-bit patterns, uint16_t,
// rounded to nearest even), 16-byte chunks of eight elements. The loops keep the TF32 loops' threads, warps, stages
// and 128-byte shared rows: a k-step is IG_BK_BF16 = 64 elements (twice the TF32 k-step, in the same bytes), so that a
// stage is the TF32 stage's size (IG_TC_SMEM) and each barrier, pipeline turn and source advance covers 64 k-indices,
// which halves that overhead per MMA. (The alternative, a k-step of 32 with half the shared memory, would not place
// more blocks on an SM: the tiles' registers (150-250 per thread) already limit them to two or three.) Fragments
// come from ldmatrix on 16-bit elements straight into the m16n8k16 layout: no conversion in the loop.

// K-major BF16 loop: ig_tc_kmajor's stage layout, copies and swizzle (As[BM][64] then Bs[IG_BN][64] bfloat16, chunk
// c of row r at chunk c ^ (r & 7); H = 1: chunk tid % 8 of rows tid / 8 + 16j; H = 2: chunks 2cc and 2cc + 1,
// cc = tid % 4, of rows tid / 4 + 32j, adjacent in the source). Fragments (m16n8k16, k16 group kb = chunks 2kb and 2kb + 1): the
// 8x8 b16 matrices of one ldmatrix.x4 are rows 0-7 and 8-15 of chunk 2kb, then of chunk 2kb + 1 -- exactly a0, a1,
// a2, a3 of an m-tile (lane (g, t): row g or g + 8, k = 2t, 2t + 1 or 2t + 8, 2t + 9) -- and, on B's rows (n),
// b0, b1 of n-tile 2jj (rows 0-7 at chunks 2kb, 2kb + 1) then of n-tile 2jj + 1: the TF32 loop's addresses.
template <int BM, int H, class SRC, class ST>
__device__ __forceinline__ void ig_bf16_kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr bool SK = IG_SLICED_K(BM);
  constexpr int WM = SK ? BM : BM / 2, MT = WM / 16, NT = 8, KS = SK ? 2 : 4, TPR = 8 / H, RS = IG_TC_THREADS / TPR,
                CA = BM / RS, CB = IG_BN / RS, BK = IG_BK_BF16;
  constexpr int STAGE = (BM + IG_BN) * BK;
  DYNAMIC_SHARED(uint16_t, smh);  // a name of its own: extern __shared__ arrays of one name share a type
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wn = warp & 1;
  const int wm = SK ? 0 : warp >> 1, kh = SK ? warp >> 1 : 0;  // the warp's m half, or (sliced k) its k half
  const int g = lane >> 2, t = lane & 3, cc = tid % TPR, r0 = tid / TPR;
  const int q = lane >> 3, rr = lane & 7;  // this lane's ldmatrix row: row rr of matrix q
  float acc[MT][NT][4];
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++)
      IG_UNROLL
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  auto issue = [&](int stage) {
    uint16_t* As = smh + stage * STAGE;
    uint16_t* Bs = As + BM * BK;
    IG_UNROLL
    for (int j = 0; j < CA; j++) {
      const int r = r0 + RS * j;
      IG_UNROLL
      for (int h = 0; h < H; h++)
        cp_async_16(As + r * BK + 8 * ((H * cc + h) ^ (r & 7)), src.aptr(j, h), src.ok(h) ? 16 : 0);
    }
    IG_UNROLL
    for (int j = 0; j < CB; j++) {
      const int r = r0 + RS * j;
      IG_UNROLL
      for (int h = 0; h < H; h++)
        cp_async_16(Bs + r * BK + 8 * ((H * cc + h) ^ (r & 7)), src.bptr(j, h), src.ok(h) ? 16 : 0);
    }
    src.next();
  };
  // Shared addresses in stage 0 of this lane's ldmatrix rows for the k16 group kb = KS·kh + kk (kk < KS: all four
  // groups, or with sliced k the warp's half of them): A m-tile 0: row wm·WM + 8(q & 1) + rr at chunk 2kb + (q >> 1);
  // B n-tile pair 0: row wn·64 + 8(q >> 1) + rr at chunk 2kb + (q & 1).
  // Pinned (saddr_pin), so that the loop adds only immediates (stage, tile) instead of recomputing the swizzle.
  saddr_t aaddr[KS], baddr[KS];
  IG_UNROLL
  for (int kk = 0; kk < KS; kk++) {
    const int kb = KS * kh + kk;
    aaddr[kk] = saddr(smh + (wm * WM + 8 * (q & 1) + rr) * BK + 8 * ((2 * kb + (q >> 1)) ^ rr));
    baddr[kk] = saddr(smh + BM * BK + (wn * 64 + 8 * (q >> 1) + rr) * BK + 8 * ((2 * kb + (q & 1)) ^ rr));
    saddr_pin(aaddr[kk]);
    saddr_pin(baddr[kk]);
  }
  auto compute = [&](int stage) {
    IG_UNROLL
    for (int kk = 0; kk < KS; kk++) {
      uint32_t fa[MT][4];
      IG_UNROLL
      for (int i = 0; i < MT; i++) ldmatrix_x4_at(fa[i], aaddr[kk] + 2 * (stage * STAGE + 16 * i * BK));
      IG_UNROLL
      for (int jj = 0; jj < NT / 2; jj++) {
        uint32_t fb[4];
        ldmatrix_x4_at(fb, baddr[kk] + 2 * (stage * STAGE + 16 * jj * BK));
        IG_UNROLL
        for (int i = 0; i < MT; i++) {
          mma_bf16_m16n8k16_acc(acc[i][2 * jj], fa[i], fb);
          mma_bf16_m16n8k16_acc(acc[i][2 * jj + 1], fa[i], fb + 2);
        }
      }
    }
  };
  ig_tc_pipeline_unrolled(ksteps, issue, compute);
  if (SK && !ig_sliced_k_sum(acc, reinterpret_cast<float*>(smh), kh, wn, lane)) return;  // the k half 1 warps are done

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

// The MN-major BF16 swizzle: chunk c of k-row r is stored at chunk c ^ ig_swz_bf16(r). A bijection of r & 7, so the
// eight consecutive rows that an ldmatrix matrix reads at one chunk lie in eight bank groups; and a quarter-warp's
// copies (rows 4u .. 4u + 3, chunks 2j and 2j + 1 of each) land on eight distinct chunks modulo 8.
__device__ __forceinline__ int ig_swz_bf16(int r) { return ((r & 3) << 1) | ((r >> 2) & 1); }

// MN-major BF16 loop. Stage layout: As[64][BM] then Bs[64][IG_BN] bfloat16, one row per k (pixel), chunks swizzled by
// ig_swz_bf16. Thread tid copies row tid / 2: chunks (tid % 2) + 2j of A (j < BM/16), and chunks 8(tid % 2) + j of B
// (j < 8), eight consecutive chunks, so that the source can address them from one base with immediates (WSrc, B
// linear; the launcher makes every thread's 64 columns lie in one kernel tap). The copies stay free of bank
// conflicts: a warp's sixteen rows at one j land on chunk j ^ ig_swz_bf16(r) modulo 8, each of the eight twice per
// c0, four 16-byte stores per bank group for 512 bytes, the least possible.
//
// Fragments by ldmatrix.x4.trans (m16n8k16: A(m, k) needs lane (g, t) to hold (g, 2t), (g, 2t + 1) and B(k, n)
// (2t, g), (2t + 1, g); in shared memory both are stored k-row by k-row, so each 8x8 matrix is transposed on the
// way): m-tile i of the warp's A is the matrices (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15)
// = a0, a1, a2, a3; n-tiles 2jj, 2jj + 1 of B are (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
// = b0, b1 of each. C keeps its natural rows and columns (unlike the TF32 MN-major loop, no renaming). With BM = 64
// the loop slices k (IG_SLICED_K): warp (kh, wn) takes all four m-tiles over k16 groups 2kh, 2kh + 1 of each k-step
// (32 MMAs per 8 ldmatrix instead of 16 per 6).
template <int BM, class SRC, class ST>
__device__ __forceinline__ void ig_bf16_mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
  constexpr bool SK = IG_SLICED_K(BM);
  constexpr int WM = SK ? BM : BM / 2, MT = WM / 16, NT = 8, BK = IG_BK_BF16, KS = SK ? BK / 32 : BK / 16,
                TPR = IG_TC_THREADS / BK, CA = BM / (8 * TPR), CB = IG_BN / (8 * TPR);
  constexpr int STAGE = (BM + IG_BN) * BK;
  DYNAMIC_SHARED(uint16_t, smh);  // a name of its own: extern __shared__ arrays of one name share a type
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wn = warp & 1;
  const int wm = SK ? 0 : warp >> 1, kh = SK ? warp >> 1 : 0;  // the warp's m half, or (sliced k) its k half
  const int g = lane >> 2, t = lane & 3, r = tid / TPR, c0 = tid % TPR;
  const int q = lane >> 3, rr = lane & 7;  // this lane's ldmatrix row: row rr of matrix q
  float acc[MT][NT][4];
  IG_UNROLL
  for (int i = 0; i < MT; i++)
    IG_UNROLL
    for (int j = 0; j < NT; j++)
      IG_UNROLL
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

  auto issue = [&](int stage) {
    uint16_t* As = smh + stage * STAGE;
    uint16_t* Bs = As + BM * BK;
    const int sw = ig_swz_bf16(r);
    IG_UNROLL
    for (int j = 0; j < CA; j++)
      cp_async_16(As + r * BM + 8 * ((c0 + TPR * j) ^ sw), src.aptr(j), src.aok(j) ? 16 : 0);
    IG_UNROLL
    for (int j = 0; j < CB; j++)
      cp_async_16(Bs + r * IG_BN + 8 * ((CB * c0 + j) ^ sw), src.bptr(j), src.bok(j) ? 16 : 0);
    src.next();
  };
  // Shared addresses in stage 0 of this lane's ldmatrix rows in the warp's first k16 group KS·kh (group kk adds 16kk
  // rows; without sliced k every warp has all four groups, with it groups 2kh, 2kh + 1): A m-tile i: k-row
  // 8(q >> 1) + rr, chunk wm·WM/8 + 2i + (q & 1); B n-tiles 2jj, 2jj + 1: k-row 8(q & 1) + rr, chunk
  // wn·8 + 2jj + (q >> 1). Every such row has row & 7 = rr. Pinned (saddr_pin), as in ig_bf16_kmajor.
  const int sw = ig_swz_bf16(rr), kr = 16 * KS * kh;
  saddr_t aaddr[MT], baddr[NT / 2];
  IG_UNROLL
  for (int i = 0; i < MT; i++) {
    aaddr[i] = saddr(smh + (kr + 8 * (q >> 1) + rr) * BM + 8 * ((wm * WM / 8 + 2 * i + (q & 1)) ^ sw));
    saddr_pin(aaddr[i]);
  }
  IG_UNROLL
  for (int jj = 0; jj < NT / 2; jj++) {
    baddr[jj] = saddr(smh + BM * BK + (kr + 8 * (q & 1) + rr) * IG_BN + 8 * ((wn * 8 + 2 * jj + (q >> 1)) ^ sw));
    saddr_pin(baddr[jj]);
  }
  auto compute = [&](int stage) {
    IG_UNROLL
    for (int kk = 0; kk < KS; kk++) {
      uint32_t fa[MT][4];
      IG_UNROLL
      for (int i = 0; i < MT; i++) ldmatrix_x4_trans_at(fa[i], aaddr[i] + 2 * (stage * STAGE + 16 * kk * BM));
      IG_UNROLL
      for (int jj = 0; jj < NT / 2; jj++) {
        uint32_t fb[4];
        ldmatrix_x4_trans_at(fb, baddr[jj] + 2 * (stage * STAGE + 16 * kk * IG_BN));
        IG_UNROLL
        for (int i = 0; i < MT; i++) {
          mma_bf16_m16n8k16_acc(acc[i][2 * jj], fa[i], fb);
          mma_bf16_m16n8k16_acc(acc[i][2 * jj + 1], fa[i], fb + 2);
        }
      }
    }
  };
  ig_tc_pipeline_unrolled(ksteps, issue, compute);
  if (SK && !ig_sliced_k_sum(acc, reinterpret_cast<float*>(smh), kh, wn, lane)) return;  // the k half 1 warps are done

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
#endif  // HAVE_MMA_TF32
