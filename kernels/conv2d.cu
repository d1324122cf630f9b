// conv2d.cu -- 2-D convolution (NCHW, square kernel K, stride S, zero padding P) as implicit GEMM over packed
// operands. Launched by cuda/conv2d.go, the only place that knows the argument order and picks the variants.
//
// Shapes: x [N, Cin, H, W], w [Cout, Cin, K, K], y and dy [N, Cout, OH, OW], OH = (H + 2P + E − K)/S + 1 (OW alike),
// where E (ops.ConvShape.PadEnd) pads zeros after x only; KK = K·K taps, tap = p·K + q. E enters through OH and OW
// and the padded grid's size (Hp = H + 2P + E, which the launcher passes): the pack writes zeros there, and
// backward-data's dyq drops the rows and columns of dy past H + K − 1 (outputs that read padding only).
//
// The launcher first packs the operands (conv2d_pack_act_f32, conv2d_pack_w_f32; for BF16 conv2d_pack_act_bf16,
// conv2d_pack_w_bf16) into its scratch:
//   activations NCHW → "NHWC on a padded grid": a[n][h'][w'][c], zero outside the image and for c ≥ C, the channel
//     count rounded up to Cp, a multiple of 4 (8 for BF16), so that every 16-byte chunk of four floats (eight
//     bfloat16) is aligned -- for the tensor-core kernels a multiple of two chunks, and K·Cp at least a k-step for
//     K ≥ 2 (cuda/conv2d.go, convChannels; see KSrcTC);
//   weights → tap-major rows: wk[o][tap][c] (c < Cp) -- unless the weights were packed for the whole forward pass
//     beforehand (conv2d_pack_w_batch_f32/_bf16, cuda/packw.go: the same values, both layouts, one launch);
// and, for the TF32 kernels, rounds them to TF32 (cvt.rna.tf32.f32) on the way; for the BF16 kernels it writes them
// as bfloat16 (16-bit patterns, rounded to nearest even), which halves the packed bytes. The main loops
// (kernels/igemm.cuh) then read 16-byte chunks from precomputed row offsets plus a per-k-step offset: no division
// or bounds test per element, and no dependence on the stride inside the loop.
//
//   forward          y[n,o,i,j] = b[o] + Σ_{p,q,c} w[o,c,p,q]·xp[n, i·S+p, j·S+q, c]   (xp = x padded by P, P + E)
//                    K-major GEMM: M = Cout, N = batch·OH·OW, k = (tap, c) over KK·Cp.
//   backward-data    dx[n,c,h,v] += Σ_{p',q',o} w[o,c,K−1−p',K−1−q']·dyq[n, h+p', v+q', o]
//                    where dyq is dy with S−1 zeros between its elements and K−1−P zeros of padding: the
//                    stride-1 forward convolution of dyq with the flipped, transposed weights (packed by
//                    conv2d_pack_w_f32 with flip = 1). Same kernels, M = Cin, N = batch·H·W, k over KK·Coutp.
//   backward-weight  dw[o,c,p,q] += Σ_{n,i,j} dy[n,o,i,j]·xp[n, i·S+p, j·S+q, c]
//                    MN-major GEMM: M = Cout, N = (tap, c) over KK·Cp, k = pixel (n, i, j); dy packed NHWC.
// Each may be split over k (blockIdx.z, kchunk k-indices each, a multiple of 32; of 64 for BF16) into partial sums
// part[z] in the output's layout, which the tile's last block to finish adds in z order and stores as the unsplit
// kernel would (splitk_last, conv_splitk_finish): the results do not depend on scheduling, and a split GEMM is one
// launch.
//
// Entry points: conv2d_igemm_{f32,tf32,bf16}_m{64,128}_k{1,n} (forward and backward-data: block tile M 64 or 128;
// kernel 1x1, or KxK with at most one kernel-row change per k-step: see KSrc) and
// conv2d_wgrad_{f32,tf32,bf16}_m{64,128} (backward-weight); the _tf32 and _bf16 ones (mma.sync m16n8k8/m16n8k4 TF32,
// m16n8k16 bf16; FP32 accumulation) only for sm_80 and newer (kernels/ptx/sm80) and the emulator. The stride does not
// enter the main loops (only the rows' offsets, computed before them), so no variant depends on it.
#include "common.cuh"
#include "igemm.cuh"
#include "warp_reduce.cuh"

// The BF16 entry points live in a module of their own under nvcc: kernels/conv2d_bf16.cu compiles this file with
// CONV_BF16_MODULE defined, which keeps them and drops the rest; so do the TF32 backward-weight kernels,
// kernels/conv2d_wgrad_tf32.cu with CONV_WGRAD_TF32_MODULE. (Compiled in one module with other kernels, CUDA 11.8's
// NVVM emitted the PTX of the TF32 backward-weight kernels differently from run to run -- with the BF16 kernels, and
// again with this file's later kernels -- which made the committed PTX irreproducible; alone they compile the same
// nearly every time, 7 tries in 8, and make ptx-check tries up to 5 times.) The emulator compiles everything once,
// from this file.
#if defined(CONV_BF16_MODULE) || defined(CONV_WGRAD_TF32_MODULE)
#define CONV_SPLIT_MODULE
#endif
#if defined(CONV_BF16_MODULE) || !defined(__CUDACC__)
#define CONV_BF16_ENTRIES HAVE_MMA_TF32
#else
#define CONV_BF16_ENTRIES 0
#endif
#if defined(CONV_WGRAD_TF32_MODULE) || !defined(__CUDACC__)
#define CONV_WGRAD_TF32_ENTRIES HAVE_MMA_TF32
#else
#define CONV_WGRAD_TF32_ENTRIES 0
#endif

#ifndef CONV_SPLIT_MODULE
// ---- packing ---------------------------------------------------------------------------------------------------------
// out[n][a][b][c] for a < Hp, b < Wp, c < Cp: with ra = a − off and rb = b − off, in[n][c][ra/Z][rb/Z] when c < C and
// ra, rb ≥ 0, divisible by Z, ra/Z < H and rb/Z < W; 0 otherwise. Rounded as round says (conv_round), or written
// as bfloat16 (conv2d_pack_act_bf16). The forward's xp is (off, Z) = (P, 1); backward-data's dyq is (K−1−P, S);
// NHWC dy is (0, 1) with Hp = OH, Wp = OW. One block of 32x8 threads per output row (n, a), moving 32x32 tiles
// (channels x columns) through shared memory so that the reads (along w) and the writes (along c) are both
// coalesced.
#define CONV_PACK_TILE 32
// The elements after each packed operand in the launcher's scratch (cuda/conv2d.go convSlack; at least 4·CONV_SLACK
// bytes). The packing writes them as zeros: backward-weight's A chunks past dy's width read there for the last
// pixel rows (they feed only rows of C that are not stored), and zeros keep those reads free of whatever an earlier
// launcher left in the scratch -- an unrounded float there is not a TF32 value, which the emulator's mma refuses.
#define CONV_SLACK 256

// The bias gradient folded into backward-weight's packing of dy (layout (off, Z) = (0, 1), Hp = H: block bx = n·H + i
// of the job's N·H blocks packs image row i of sample n; 256 threads), replacing conv2d_bias_grad_f32's launch there,
// and the channel sums of dy (a resnet's time-projection gradient), replacing channel_sum_f32's:
//   part[r][c] = Σ_{j<W} dy[n][c][i][j]                   (r = bx; j increasing; every block of the job)
//   db[c] += Σ_{w<8} Σ_{r ∈ R_w} part[r][c]                (the job's last block to finish, by a ticket)
//   dchan[n·ld + c] += Σ_{i<H} part[n·H + i][c]            (sample n's last block to finish, by a ticket; i increasing)
// where R_w is warp w's eighth of the rows, summed in increasing r (lane = channel, so the loads are coalesced and
// independent: 1/8 of the rows in sequence, not all of them), and the eight warp sums are added in warp order. The
// orders are fixed by the shape. The ticket protocol is splitk_last's: tickets[0] for db, counted to the job's N·H
// blocks, tickets[1 + n] for sample n's sums, counted to H; each set back to 0 by the last block it counts (the
// launcher checks that N + 1 tickets exist).
__device__ __forceinline__ void conv_bias_grad_rows(const float* dy, float* part, float* db, float* dchan, int ld,
                                                    unsigned* tickets, int C, int H, int W, int bx, unsigned rows) {
  __shared__ bool last, lastOfSample;
  __shared__ float wsum[8][32];
  const int n = bx / H, i = bx % H;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {  // the row was just read by the packing: in cache
    const float* row = dy + (((long long)n * C + c) * H + i) * W;
    float acc = 0.0f;
    for (int j = 0; j < W; j++) acc += row[j];
    part[(long long)bx * C + c] = acc;
  }
  __threadfence();  // this block's partials, visible before its tickets
  __syncthreads();
  if (threadIdx.x == 0) {
    last = db && atomicAdd(tickets, 1u) == rows - 1;
    if (last) *tickets = 0;  // every block has taken its ticket
    lastOfSample = dchan && atomicAdd(tickets + 1 + n, 1u) == (unsigned)H - 1;
    if (lastOfSample) tickets[1 + n] = 0;
  }
  __syncthreads();
  __threadfence();
  if (lastOfSample)
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      float acc = 0.0f;
      for (int r = 0; r < H; r++) acc += ld_cg(part + ((long long)n * H + r) * C + c);
      dchan[(long long)n * ld + c] += acc;
    }
  if (!last) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned r0 = rows * warp / 8, r1 = rows * (warp + 1) / 8;
  for (int c0 = 0; c0 < C; c0 += 32) {
    const int c = c0 + lane;
    float acc = 0.0f;
    if (c < C)
      for (unsigned r = r0; r < r1; r++) acc += ld_cg(part + (long long)r * C + c);
    wsum[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < C) {
      float s = 0.0f;
      for (int w = 0; w < 8; w++) s += wsum[w][lane];
      db[c] += s;
    }
    __syncthreads();
  }
}
// The rounding of the packed operands, by the precision of the kernels that read them (cuda/conv2d.go convRound):
// 0 none (FP32), 1 TF32 (cvt.rna.tf32.f32: 10-bit significand, ties away), 2 bfloat16 (8-bit significand, to nearest
// even, as cvt.rn.bf16.f32; the launcher packs the BF16 kernels' operands with the _bf16 kernels instead, which
// store the rounded values as 16-bit patterns).
__device__ __forceinline__ float conv_round(float v, int round) {
  return round == 1 ? f32_to_tf32(v) : round == 2 ? f32_to_bf16(v) : v;
}
// The packed element: floats for the FP32 and TF32 kernels (rounded as conv_round says), bfloat16 bit patterns for
// the BF16 kernels (f32_to_bf16's upper half: to nearest even).
__device__ __forceinline__ void conv_put(float* p, float v, int round) { *p = conv_round(v, round); }
__device__ __forceinline__ void conv_put(uint16_t* p, float v, int) {
  *p = (uint16_t)(__float_as_uint(f32_to_bf16(v)) >> 16);
}
// One packing job: in [N][C][H][W] to out [N][Hp][Wp][Cp] at (off, Z), as above.
struct ConvPackJob {
  const float* in;
  void* out;
  int C, H, W, Cp, Hp, Wp, off, Z;
};
// Block bx of the job's N·Hp blocks packs row (n, a) = (bx / Hp, bx % Hp); the job's last block writes the slack.
template <class T>
__device__ __forceinline__ void conv_pack_act(const ConvPackJob& j, int N, int bx, int round) {
  __shared__ float tile[CONV_PACK_TILE][CONV_PACK_TILE + 1];
  const float* in = j.in;
  T* out = (T*)j.out;
  const int C = j.C, H = j.H, W = j.W, Cp = j.Cp, Hp = j.Hp, Wp = j.Wp, off = j.off, Z = j.Z;
  const int n = bx / Hp, a = bx % Hp, tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int ra = a - off;
  const bool row_ok = ra >= 0 && ra % Z == 0 && ra / Z < H;
  const int h = row_ok ? ra / Z : 0;
  // The rows' bases once (indexing from the operands' bases in the loop made ptxas spill on sm_80).
  T* orow = out + ((long long)n * Hp + a) * Wp * Cp;
  const float* irow = in + ((long long)n * C * H + h) * W;
  for (int b0 = 0; b0 < Wp; b0 += CONV_PACK_TILE)
    for (int c0 = 0; c0 < Cp; c0 += CONV_PACK_TILE) {
      const int b = b0 + tx, rb = b - off;
      const bool col_ok = row_ok && b < Wp && rb >= 0 && rb % Z == 0 && rb / Z < W;
      for (int cc = ty; cc < CONV_PACK_TILE; cc += 8) {
        const int c = c0 + cc;
        float v = 0.0f;
        if (col_ok && c < C) v = __ldg(irow + (long long)c * H * W + rb / Z);
        tile[cc][tx] = v;
      }
      __syncthreads();
      for (int bb = ty; bb < CONV_PACK_TILE; bb += 8) {
        const int bo = b0 + bb, c = c0 + tx;
        if (bo < Wp && c < Cp) conv_put(orow + (long long)bo * Cp + c, tile[tx][bb], round);
      }
      __syncthreads();
    }
  if (bx == N * Hp - 1) {
    T* tail = out + (long long)N * Hp * Wp * Cp;
    for (int i = threadIdx.x; i < CONV_SLACK; i += blockDim.x) conv_put(tail + i, 0.0f, round);
  }
}
// Up to three packings of one convolution in one launch (backward: backward-data's dyq, backward-weight's xp and its
// dy, each what a launch of its own would write): job blockIdx.y < gridDim.y of (j0, j1, j2), blockIdx.x < N·Hp of
// that job (gridDim.x is the jobs' largest N·Hp; the other blocks return). With db, the last job (gridDim.y − 1, the
// (0, 1) layout of dy) adds the bias gradient too, and with dchan the channel sums (conv_bias_grad_rows).
template <class T>
__device__ __forceinline__ void conv_pack_acts(int N, int round, ConvPackJob j0, ConvPackJob j1, ConvPackJob j2,
                                               float* part, float* db, float* dchan, int ld,
                                               unsigned* tickets) {
  const int y = blockIdx.y;
#define CONV_PACK_SEL(f) (y == 0 ? j0.f : y == 1 ? j1.f : j2.f)
  // Field by field: selecting the whole struct made ptxas keep a copy on the stack (sm_70: 16 bytes of spills).
  const ConvPackJob j{CONV_PACK_SEL(in), CONV_PACK_SEL(out), CONV_PACK_SEL(C),  CONV_PACK_SEL(H),   CONV_PACK_SEL(W),
                      CONV_PACK_SEL(Cp), CONV_PACK_SEL(Hp),  CONV_PACK_SEL(Wp), CONV_PACK_SEL(off), CONV_PACK_SEL(Z)};
#undef CONV_PACK_SEL
  const int bx = blockIdx.x;
  if (bx >= N * j.Hp) return;
  conv_pack_act<T>(j, N, bx, round);
  if ((db || dchan) && blockIdx.y == gridDim.y - 1)
    conv_bias_grad_rows(j.in, part, db, dchan, ld, tickets, j.C, j.H, j.W, bx, N * j.H);
}
#define CONV_PACK_JOB_PARAMS(i)                                                                                    \
  const float *in##i, void *out##i, int C##i, int H##i, int W##i, int Cp##i, int Hp##i, int Wp##i, int off##i, \
      int Z##i
#define CONV_PACK_JOB(i) ConvPackJob{in##i, out##i, C##i, H##i, W##i, Cp##i, Hp##i, Wp##i, off##i, Z##i}
extern "C" __global__ void __launch_bounds__(256)
    conv2d_pack_act_f32(int N, int round, CONV_PACK_JOB_PARAMS(0), CONV_PACK_JOB_PARAMS(1), CONV_PACK_JOB_PARAMS(2),
                        float* part, float* db, float* dchan, int ld, unsigned* tickets) {
  conv_pack_acts<float>(N, round, CONV_PACK_JOB(0), CONV_PACK_JOB(1), CONV_PACK_JOB(2), part, db, dchan, ld, tickets);
}
EMU_REGISTER(conv2d_pack_act_f32)
// The BF16 kernels' packing: out holds bfloat16 (Cp a multiple of 8, so that a 16-byte chunk is eight channels).
extern "C" __global__ void __launch_bounds__(256)
    conv2d_pack_act_bf16(int N, CONV_PACK_JOB_PARAMS(0), CONV_PACK_JOB_PARAMS(1), CONV_PACK_JOB_PARAMS(2),
                         float* part, float* db, float* dchan, int ld, unsigned* tickets) {
  conv_pack_acts<uint16_t>(N, 2, CONV_PACK_JOB(0), CONV_PACK_JOB(1), CONV_PACK_JOB(2), part, db, dchan, ld,
                           tickets);
}
EMU_REGISTER(conv2d_pack_act_bf16)

// Weights, tap-major. flip = 0 (forward, backward-weight's layout): out[o][tap][c] = w[o][c][tap] for c < Cin, 0 for
// Cin ≤ c < Cp. flip = 1 (backward-data): out[c][tap][o] = w[o][c][KK−1−tap] for o < Cout, 0 for Cout ≤ o < Cp.
// Rounded as round says (conv_round). Grid-stride over the rows·KK·Cp outputs.
template <class T>
__device__ __forceinline__ void conv_pack_w(const float* w, T* out, int Cout, int Cin, int KK, int Cp, int flip,
                                            int round) {
  const long long n = (long long)(flip ? Cin : Cout) * KK * Cp;
  for (long long e = global_index(); e < n; e += global_stride()) {
    const int cc = (int)(e % Cp), tap = (int)(e / Cp % KK), r = (int)(e / ((long long)Cp * KK));
    float v = 0.0f;
    if (!flip && cc < Cin) v = w[((long long)r * Cin + cc) * KK + tap];
    if (flip && cc < Cout) v = w[((long long)cc * Cin + r) * KK + (KK - 1 - tap)];
    conv_put(out + e, v, round);
  }
}
extern "C" __global__ void conv2d_pack_w_f32(const float* w, float* out, int Cout, int Cin, int KK, int Cp, int flip,
                                             int round) {
  conv_pack_w(w, out, Cout, Cin, KK, Cp, flip, round);
}
EMU_REGISTER(conv2d_pack_w_f32)
// The BF16 kernels' weights: bfloat16, Cp a multiple of 8.
extern "C" __global__ void conv2d_pack_w_bf16(const float* w, uint16_t* out, int Cout, int Cin, int KK, int Cp,
                                              int flip) {
  conv_pack_w(w, out, Cout, Cin, KK, Cp, flip, 2);
}
EMU_REGISTER(conv2d_pack_w_bf16)

// Every convolution weight of a forward pass packed in one launch (cuda/packw.go, PackConvWeights): entry
// blockIdx.y of the table is conv_pack_w(w, out, Cout, Cin, KK, Cp, flip, round) -- the same values as
// conv2d_pack_w_f32 / conv2d_pack_w_bf16 would write -- over a grid-stride of the blockIdx.x blocks. The launcher
// lays the table out as this struct (five 8-byte words). wfloats (Σ Cout·Cin·KK over the weights) and packed (Σ
// rows·KK·Cp over the entries, the elements written) are not read: they put the launch's size into the launch
// records (train/testdata/launches_tiny_step.golden, internal/gpureport).
struct ConvPackEntry {
  const float* w;
  void* out;
  int Cout, Cin, KK, Cp, flip, pad_;
};
extern "C" __global__ void conv2d_pack_w_batch_f32(const ConvPackEntry* table, int entries, long long wfloats,
                                                   long long packed, int round) {
  if ((int)blockIdx.y >= entries) return;
  const ConvPackEntry e = table[blockIdx.y];
  conv_pack_w(e.w, (float*)e.out, e.Cout, e.Cin, e.KK, e.Cp, e.flip, round);
}
EMU_REGISTER(conv2d_pack_w_batch_f32)
extern "C" __global__ void conv2d_pack_w_batch_bf16(const ConvPackEntry* table, int entries, long long wfloats,
                                                    long long packed) {
  if ((int)blockIdx.y >= entries) return;
  const ConvPackEntry e = table[blockIdx.y];
  conv_pack_w(e.w, (uint16_t*)e.out, e.Cout, e.Cin, e.KK, e.Cp, e.flip, 2);
}
EMU_REGISTER(conv2d_pack_w_batch_bf16)


#endif  // CONV_SPLIT_MODULE

// ---- geometry helpers ------------------------------------------------------------------------------------------------
// n / d and n % d by a multiply and a shift (0 ≤ n < 2^31, 1 ≤ d < 2^31): m = ⌊2^32·(2^s − d)/d⌋ + 1 with
// s = ⌈log2 d⌉, n / d = (umulhi(n, m) + n) >> s (the sum stays below 2^32 for n < 2^31).
struct IntDiv {
  unsigned d, m, s;
  __device__ __forceinline__ explicit IntDiv(int dv) : d((unsigned)dv) {
    s = 0;
    while ((1ull << s) < d) s++;
    m = (unsigned)(((1ull << 32) * ((1ull << s) - d)) / d + 1);
  }
  __device__ __forceinline__ int div(int n) const { return (int)((__umulhi((unsigned)n, m) + (unsigned)n) >> s); }
};

// Modes of the stores: set (forward: y = acc + b), add (accumulate into dx, dw), part (split-K partials).
#define CONV_SET 0
#define CONV_ADD 1
#define CONV_PART 2

// ---- split-K in one launch ---------------------------------------------------------------------------------------
// A GEMM cut along k into gridDim.z chunks: each block stores its tile's partial sums to part[z] (the output's layout,
// z·zstride further), then takes a ticket for its tile (tickets[tile], one word per tile of the grid's x·y, zero
// before the launch); the block that draws the last one adds the tile's gridDim.z partials in z order and stores
// the sum as the unsplit kernel would (mode set: + the bias; add: into out), and sets the ticket back to 0 for the
// next launch. This replaces a reduction kernel of its own (conv2d_splitk_reduce_f32, conv2d_splitk_bias_f32,
// which computed the same sums in the same order: acc = Σ_z part[z], then out = acc + bias or out += acc).
// __threadfence before the ticket makes the block's partials visible to the last block; the one after it keeps the
// last block's reads behind its ticket; the partials are read from L2 (ld_cg, around the non-coherent L1).
__device__ __forceinline__ bool splitk_last(unsigned* tickets) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* t = tickets + blockIdx.y * gridDim.x + blockIdx.x;
    last = atomicAdd(t, 1u) == gridDim.z - 1;
    if (last) *t = 0;  // every other block of the tile has taken its ticket
  }
  __syncthreads();
  __threadfence();
  return last;
}

// The last block's sums: for each e < elems of the tile (threads striding), at(e, i, m) gives the output index i
// and row m of element e, or false when it is outside the output; set(acc, i, m) is the value the unsplit kernel
// stores in mode set (the epilogue: ConvEpi for the forward GEMM).
template <class AT, class SET>
__device__ __forceinline__ void conv_splitk_finish(const float* part, float* out, long long zstride, int elems,
                                                   int mode, AT at, SET set) {
  for (int e = threadIdx.x; e < elems; e += blockDim.x) {
    long long i;
    int m;
    if (!at(e, i, m)) continue;
    float acc = 0.0f;
    for (unsigned z = 0; z < gridDim.z; z++) acc += ld_cg(part + z * zstride + i);
    if (mode == CONV_SET)
      out[i] = set(acc, i, m);
    else
      out[i] += acc;
  }
}

// Backward-weight's value in mode set (conv_splitk_finish): the sum as it is (+ 0, as the bias-less forward).
struct ConvSetSum {
  __device__ __forceinline__ float operator()(float acc, long long, int) const { return acc + 0.0f; }
};

// The forward GEMM's epilogue in mode set (ops.Conv2DAdd, cuda/conv2d.go): what Conv2D, AddChannel and Add compute
// one after the other, in their order,
//   y[i] = ((acc + bias[m]) + chan[img·ld + m]) + res[i]          (i = (img, m, pixel) in y; each term when given)
// so that the sums are those of the three launches, bit for bit.
struct ConvEpi {
  const float* bias;
  const float* chan;
  const float* res;
  int ld;
  __device__ __forceinline__ float set(float v, long long i, int img, int m) const {
    float r = v + (bias ? bias[m] : 0.0f);
    if (chan) r += chan[(long long)img * ld + m];
    if (res) r += res[i];
    return r;
  }
};

// K-major operands of element T (float, or uint16_t bfloat16 for BF16; E = 4 or 8 elements per 16-byte chunk): this
// thread's rows r0 + j·RS of the A tile (weights, j < CA) and of the B tile (activations, j < CB) start arow[j] and
// brow[j] elements after their operand's base; the chunk of the current k-step lies E·kc elements further in A and
// bkoff elements further in B. Rows past an operand's end read its row 0 instead: they only feed rows or columns of
// C that are not stored. Chunks past the end of the block's k range are zero (ok false): they meet the other
// operand's chunks of the same k, which may hold anything. The thread's chunk index along k is kc (k = E·kc ..
// E·kc + E − 1, advancing by STEP chunks per k-step) within [.., kcEnd). KSrc serves the FP32 loops, one chunk per
// row and thread (H = 1); KSrcTC (below) the tensor-core loops, two adjacent chunks (H = 2).
//
// Weights: k is linear within a row ([M][KK][Cp]). Activations: k = (p, q, c) over KK·Cp, and in the packed NHWC
// input the k of one kernel row p (taps q = 0..K−1, all channels) are K·Cp consecutive elements:
// bkoff = p·Win·Cp + E·(chunk within the row). So bkoff advances by E·STEP per k-step and jumps by (Win − K)·Cp
// where the k-step leaves a kernel row (left counts the row's chunks still ahead). Variants (TAPS):
//   1  K = 1: linear too, bkoff = E·kc;
//   2  K ≥ 2 with at most one kernel-row change per k-step, a kernel row (rowlen = K·Cp/E chunks) being at least
//      STEP chunks long: for FP32 always (K·Cp ≥ 8 floats, the k-step); for the tensor-core kernels the launcher
//      pads Cp so (cuda/conv2d.go, convChannels): one test.
template <class T, int CA, int CB, int STEP, int TAPS>
struct KSrc {
  static constexpr int E = 16 / sizeof(T);  // elements per chunk
  const T *abase, *bbase;
  const T *ak, *bk;                      // abase + E·kc, bbase + bkoff (the bases past the k range)
  unsigned arow[CA], brow[CB];           // unsigned: base + offset is one wide multiply-add
  int kc, kcEnd, bkoff;
  int left = 0, K = 1, Cp = 0, Win = 0;  // kernel arguments: the compiler reads them where used

  // The second argument is the thread's chunk of the row: always 0 here.
  __device__ __forceinline__ bool ok(int) const { return kc < kcEnd; }
  __device__ __forceinline__ const T* aptr(int j, int) const { return ak + arow[j]; }
  __device__ __forceinline__ const T* bptr(int j, int) const { return bk + brow[j]; }
  __device__ __forceinline__ void settle() {
    const bool in = kc < kcEnd;
    ak = abase + (in ? E * kc : 0);
    bk = bbase + (in ? bkoff : 0);
  }
  __device__ __forceinline__ void start(int kc0, int kcEnd_, int Cp_, int K_, int Win_) {
    kc = kc0;
    kcEnd = kcEnd_;
    K = K_, Cp = Cp_, Win = Win_;
    if (TAPS == 1) {
      bkoff = E * kc0;
    } else {
      const int rowlen = K * (Cp / E), p = kc0 / rowlen, rem = kc0 - p * rowlen;
      bkoff = p * Win * Cp + E * rem;
      left = rowlen - rem;
    }
    settle();
  }
  __device__ __forceinline__ void next() {
    kc += STEP;
    bkoff += E * STEP;
    if (TAPS == 2) {
      left -= STEP;
      if (left <= 0) left += K * (Cp / E), bkoff += (Win - K) * Cp;
    }
    settle();
  }
};

// The tensor-core kernels' K-major source (H = 2): KSrc's addresses, with the k-step's bases advanced in place and
// the kernel-row jump precomputed, so that a k-step costs a few additions; the row change is found by comparing kc
// with rowEnd, the chunk where the thread's current kernel row ends (kc is advanced anyway, for ok). The thread
// copies two adjacent chunks of each of its rows, kc and kc + 1 (one address, the second 16 bytes after the first),
// with kc even: the k range starts at a multiple of the k-step (STEP = 8 chunks), the thread at chunk 2cc of it. The
// launcher pads the channels (cuda/conv2d.go, convChannels) so that Cp is a multiple of two chunks (2E) and, for
// K ≥ 2, rowlen = K·Cp/E ≥ STEP: a kernel row is then an even number of chunks, so that a pair never straddles two
// rows (both chunks are at bk), and at least a k-step long, so that the thread changes rows at most once per k-step
// (TAPS 2: one test). The k range's ends are even chunk counts as well (KK·Cp, and the split-K chunks, multiples of
// the k-step), so kc < kcEnd holds for both chunks of a pair or for neither: one test serves both.
//
// The bases are not clamped at the end of the k range: a chunk past it has src-size 0 (nothing is read; ok false),
// and its address lies less than a k-step (128 bytes) past the operand's row (A: the weights' row; B: the pixel's
// channels, or with TAPS 2 its last kernel row, for the jump to the next kernel row is not taken past the range: it
// would lead a whole image row further), inside the row after it or the scratch's slack.
template <class T, int CA, int CB, int STEP, int TAPS>
struct KSrcTC {
  static constexpr int E = 16 / sizeof(T);  // elements per chunk
  const T *abase, *bbase;
  const T *ak, *bk;  // abase + E·kc, bbase + bkoff
  unsigned arow[CA], brow[CB];
  int kc, kcEnd, rowEnd = 0, rowlen = 0, jump = 0;

  __device__ __forceinline__ bool ok(int) const { return kc < kcEnd; }
  __device__ __forceinline__ const T* aptr(int j, int h) const { return ak + arow[j] + E * h; }
  __device__ __forceinline__ const T* bptr(int j, int h) const { return bk + brow[j] + E * h; }
  __device__ __forceinline__ void start(int kc0, int kcEnd_, int Cp, int K, int Win) {
    kc = kc0;
    kcEnd = kcEnd_;
    ak = abase + E * kc0;
    if (TAPS == 1) {
      bk = bbase + E * kc0;
    } else {
      rowlen = K * (Cp / E), jump = (Win - K) * Cp;
      const int p = kc0 / rowlen, rem = kc0 - p * rowlen;
      bk = bbase + p * Win * Cp + E * rem;
      rowEnd = kc0 - rem + rowlen;
    }
  }
  __device__ __forceinline__ void next() {
    kc += STEP;
    ak += E * STEP;
    bk += E * STEP;
    if (TAPS == 2 && kc >= rowEnd && kc < kcEnd) rowEnd += rowlen, bk += jump;
  }
};
// The K-major source of each kernel: KSrcTC for the tensor-core loops (H = 2), KSrc for the FP32 ones (H = 1).
template <class E, int CA, int CB, int STEP, int TAPS, int H>
struct KSrcOf {
  typedef KSrcTC<E, CA, CB, STEP, TAPS> type;
};
template <class E, int CA, int CB, int STEP, int TAPS>
struct KSrcOf<E, CA, CB, STEP, TAPS, 1> {
  typedef KSrc<E, CA, CB, STEP, TAPS> type;
};

// Store of the K-major GEMM element (m, n): n is a pixel (img, pix) of the output, pix < OHW; out[img][m][pix].
// KStore holds kernel arguments only; ready() makes the functor, after the main loop.
struct KStoreReady {
  float* out;
  ConvEpi epi;
  int M, OHW, mode;
  long long zoff;
  IntDiv dOHW;
  __device__ __forceinline__ void operator()(int m, int n, float v) const {
    const int img = dOHW.div(n);
    const long long i = ((long long)img * M + m) * OHW + (n - img * OHW);
    if (mode == CONV_SET)
      out[i] = epi.set(v, i, img, m);
    else if (mode == CONV_ADD)
      out[i] += v;
    else
      out[zoff + i] = v;
  }
};
struct KStore {
  float* out;
  ConvEpi epi;
  int M, Npix, OHW, mode;
  __device__ __forceinline__ KStoreReady ready() const {
    return KStoreReady{out, epi, M, OHW, mode, (long long)blockIdx.z * Npix * M, IntDiv(OHW)};
  }
};

// The main loop of each precision (kernels/igemm.cuh).
template <bool TC, bool BF>
struct IgLoop {
  template <int BM, int H, class SRC, class ST>
  __device__ __forceinline__ static void kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
    ig_f32_kmajor<BM>(src, ksteps, M, N, st);
  }
  template <int BM, class SRC, class ST>
  __device__ __forceinline__ static void mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
    ig_f32_mnmajor<BM>(src, ksteps, M, N, st);
  }
};
#if HAVE_MMA_TF32
template <>
struct IgLoop<true, false> {  // TF32 tensor cores
  template <int BM, int H, class SRC, class ST>
  __device__ __forceinline__ static void kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
    ig_tc_kmajor<BM, H>(src, ksteps, M, N, st);
  }
  template <int BM, class SRC, class ST>
  __device__ __forceinline__ static void mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
    ig_tc_mnmajor<BM>(src, ksteps, M, N, st);
  }
};
template <>
struct IgLoop<true, true> {  // BF16 tensor cores on bfloat16 operands
  template <int BM, int H, class SRC, class ST>
  __device__ __forceinline__ static void kmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
    ig_bf16_kmajor<BM, H>(src, ksteps, M, N, st);
  }
  template <int BM, class SRC, class ST>
  __device__ __forceinline__ static void mnmajor(SRC& src, int ksteps, int M, int N, const ST& st) {
    ig_bf16_mnmajor<BM>(src, ksteps, M, N, st);
  }
};
#endif
// The packed operands' element and the k-step of each precision: floats (k-step IG_BK_F32 or IG_BK_TC) or, for
// BF16, bfloat16 bit patterns (IG_BK_BF16).
template <bool TC, bool BF>
struct IgElem {
  typedef float T;
  static constexpr int BK = TC ? IG_BK_TC : IG_BK_F32;
};
template <>
struct IgElem<true, true> {
  typedef uint16_t T;
  static constexpr int BK = IG_BK_BF16;
};

// ---- forward and backward-data ---------------------------------------------------------------------------------------
// out[img][m][pix] (mode) Σ_{tap, c} wk[m][tap][c]·in[img][i·S + p][j·S + q][c] for output pixel pix = i·OW + j,
// k over this block's split [z·kchunk, min(KK·Cp, (z+1)·kchunk)). in: [N][Hin][Win][Cp] packed, wk: [M][KK][Cp].
// In mode set the epilogue adds bias, chan (rows ld apart) and res (ConvEpi; each may be null).
template <int BM, int TAPS, bool TC, bool BF, class E>
__device__ __forceinline__ void conv_igemm(const E* in, const E* wk, const float* bias, float* out, float* part,
                                           unsigned* tickets, int M, int Npix, int OH, int OW, int Hin, int Win,
                                           int S, int K, int Cp, int kchunk, int mode, const float* chan,
                                           int ld, const float* res) {
  // H chunks per row and thread: two adjacent ones on the tensor-core path (KSrcTC), the thread's first at 2cc.
  constexpr int BK = IgElem<TC, BF>::BK, T = TC ? IG_TC_THREADS : IG_F32_THREADS(BM),
                STEP = BK / (16 / (int)sizeof(E));
  constexpr int H = TC ? 2 : 1, TPR = STEP / H, RS = T / TPR, CA = BM / RS, CB = IG_BN / RS;
  const int tid = threadIdx.x, cc = tid % TPR, r0 = tid / TPR;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * IG_BN;
  const int ldk = K * K * Cp, OHW = OH * OW;
  const int k0 = blockIdx.z * kchunk, k1 = min(ldk, k0 + kchunk);
  const int ksteps = (k1 - k0 + BK - 1) / BK;

  typename KSrcOf<E, CA, CB, STEP, TAPS, H>::type src;
  src.abase = wk;
  src.bbase = in;
  IG_UNROLL
  for (int j = 0; j < CA; j++) {
    const int m = m0 + r0 + j * RS;
    src.arow[j] = m < M ? (unsigned)(m * ldk) : 0u;
  }
  const IntDiv dOHW(OHW), dOW(OW);
  IG_UNROLL
  for (int j = 0; j < CB; j++) {
    const int u = n0 + r0 + j * RS;
    const int img = dOHW.div(u), rem = u - img * OHW, i = dOW.div(rem), jj = rem - i * OW;
    src.brow[j] = u < Npix ? (unsigned)(((img * Hin + i * S) * Win + jj * S) * Cp) : 0u;
  }
  src.start(k0 / src.E + H * cc, k1 / src.E, Cp, K, Win);

  const bool split = gridDim.z > 1;
  const ConvEpi epi{bias, chan, res, ld};
  const KStore st{split ? part : out, epi, M, Npix, OHW, split ? CONV_PART : mode};
  IgLoop<TC, BF>::template kmajor<BM, H>(src, ksteps, M, Npix, st);
  if (split && splitk_last(tickets)) {
    const IntDiv dOHW2(OHW);
    int img = 0;  // of the element at() last placed
    conv_splitk_finish(part, out, (long long)Npix * M, BM * IG_BN, mode, [&](int e, long long& i, int& m) {
      m = m0 + e / IG_BN;
      const int n = n0 + e % IG_BN;  // consecutive threads, consecutive pixels
      if (m >= M || n >= Npix) return false;
      img = dOHW2.div(n);
      i = ((long long)img * M + m) * OHW + (n - img * OHW);
      return true;
    }, [&](float acc, long long i, int m) { return epi.set(acc, i, img, m); });
  }
}

#define CONV_IGEMM_ENTRY(NAME, BM, TAPS, TC, BF)                                                                     \
  extern "C" __global__ void __launch_bounds__(TC ? IG_TC_THREADS : IG_F32_THREADS(BM), IG_MIN_BLOCKS(BM, TC))       \
      NAME(const IgElem<TC, BF>::T* in, const IgElem<TC, BF>::T* wk, const float* bias, float* out, float* part,       \
           unsigned* tickets, int M, int Npix, int OH, int OW, int Hin, int Win, int S, int K, int Cp, int kchunk,      \
           int mode, const float* chan, int ld, const float* res) {                                                    \
    conv_igemm<BM, TAPS, TC, BF>(in, wk, bias, out, part, tickets, M, Npix, OH, OW, Hin, Win, S, K, Cp, kchunk,      \
                                 mode, chan, ld, res);                                                                \
  }                                                                                                                   \
  EMU_REGISTER(NAME)

// FP32: a kernel row (K·Cp ≥ 8 floats for K ≥ 2) is at least a k-step (two chunks) long, so _kn serves every K ≥ 2;
// the tensor-core kernels' launcher pads Cp until it is so there too (KSrcTC).
#ifndef CONV_SPLIT_MODULE
CONV_IGEMM_ENTRY(conv2d_igemm_f32_m128_k1, 128, 1, false, false)
CONV_IGEMM_ENTRY(conv2d_igemm_f32_m128_kn, 128, 2, false, false)
CONV_IGEMM_ENTRY(conv2d_igemm_f32_m64_k1, 64, 1, false, false)
CONV_IGEMM_ENTRY(conv2d_igemm_f32_m64_kn, 64, 2, false, false)
#if HAVE_MMA_TF32
CONV_IGEMM_ENTRY(conv2d_igemm_tf32_m128_k1, 128, 1, true, false)
CONV_IGEMM_ENTRY(conv2d_igemm_tf32_m128_kn, 128, 2, true, false)
CONV_IGEMM_ENTRY(conv2d_igemm_tf32_m64_k1, 64, 1, true, false)
CONV_IGEMM_ENTRY(conv2d_igemm_tf32_m64_kn, 64, 2, true, false)
#endif
#endif  // CONV_SPLIT_MODULE
#if defined(CONV_BF16_MODULE) && !HAVE_MMA_TF32
// The compute_70 build of the BF16 module: the entry points with empty bodies (never launched: package cuda refuses
// BF16 below compute capability 8.0, where the compute_80 module replaces them).
#undef CONV_IGEMM_ENTRY
#define CONV_IGEMM_ENTRY(NAME, BM, TAPS, TC, BF)                                                                     \
  extern "C" __global__ void NAME(const float*, const float*, const float*, float*, float*, unsigned*, int, int, int, \
                                  int, int, int, int, int, int, int, int, const float*, int, const float*) {}
#undef CONV_BF16_ENTRIES
#define CONV_BF16_ENTRIES 1
#endif
#if CONV_BF16_ENTRIES
// BF16: bfloat16 operands (conv2d_pack_*_bf16) through the BF16 loops (kernels/igemm.cuh, mma m16n8k16 bf16).
CONV_IGEMM_ENTRY(conv2d_igemm_bf16_m128_k1, 128, 1, true, true)
CONV_IGEMM_ENTRY(conv2d_igemm_bf16_m128_kn, 128, 2, true, true)
CONV_IGEMM_ENTRY(conv2d_igemm_bf16_m64_k1, 64, 1, true, true)
CONV_IGEMM_ENTRY(conv2d_igemm_bf16_m64_kn, 64, 2, true, true)
#endif

// ---- backward-weight -------------------------------------------------------------------------------------------------
// MN-major operands at the pixel row u of the current k-step (u = this thread's row; u advances by BK per k-step):
//   A chunk j: dyh[u][m0 + E(c0 + j·CS) ..]            dyh = NHWC dy [Npix][Mp]
//   B chunk j: xp[img][i·S + p][jj·S + q][c ..]         for the column (tap, c) = n0 + E(c0 + j·CS), u = (img, i, jj)
// The columns' tap offsets are fixed per thread. The pixel is decoded once, by division, and then advanced: BK
// pixels are da images, di rows and dj columns (BK = da·OH·OW + di·OW + dj, di < OH, dj < OW), so a k-step adds those
// to (img, i, jj) with at most one carry from jj into i and one from i into img, and the matching offsets to the
// pixel's offset in xp (rowB = ((img·Hp + i·S)·Wp + jj·S)·Cp, unsigned: the carries' terms may be negative) -- a few
// additions instead of two divisions and five multiplies per k-step. Columns past the operand's width read inside
// its row (A, within the scratch's slack) or at column 0 (B): they only feed columns or rows of C that are not
// stored. Rows past the block's k range have ok false (zeros, and the tensor-core copies' src-size 0: their
// addresses, up to a k-step past the operands, are never read).
//
// BLIN (B linear): the thread's B chunks are consecutive, columns n0 + E(c0·CB + j), and lie in one tap (the
// launcher's Cp is a multiple of E·CB), so chunk j is E·j elements after chunk 0: one base and immediates, where
// separate offsets cost a wide add per chunk and k-step.
template <class T, int CA, int CB, int CS, int BK, bool BLIN>
struct WSrc {
  static constexpr int E = 16 / sizeof(T);  // elements per chunk
  const T* abase;  // dyh + u·Mp + acol0
  const T* bbase;  // xp + rowB
  const T* xp;
  unsigned boff[BLIN ? 1 : CB];  // unsigned: bbase + boff is one wide multiply-add
  int left;                   // the rows of the block's k range from u on (u < uEnd while left > 0)
  int i, jj, OH, OW, di, dj;  // the pixel's row and column, the output's size, the advance's rows and columns
  unsigned rowB, step, carryJ, carryI, astep;  // rowB's advance, its carries from jj and from i; abase's advance

  __device__ __forceinline__ bool aok(int) const { return left > 0; }
  __device__ __forceinline__ bool bok(int) const { return left > 0; }
  __device__ __forceinline__ const T* aptr(int j) const { return abase + E * CS * j; }
  __device__ __forceinline__ const T* bptr(int j) const { return BLIN ? bbase + E * j : bbase + boff[j]; }
  // Row u of dyh (acol0 its first column) and of xp [N][Hp][Wp][Cp] for the output OH x OW at stride S; the rows from
  // uEnd on are outside the block's k range.
  __device__ __forceinline__ void start(int u, int uEnd, const T* dyh, int Mp, int acol0, const T* xp_, int Hp,
                                        int Wp, int S, int Cp, int OH_, int OW_) {
    left = uEnd - u, xp = xp_, OH = OH_, OW = OW_;
    const int OHW = OH * OW, img = u / OHW, rem = u - img * OHW, da = BK / OHW;
    i = rem / OW, jj = rem - i * OW;
    di = BK % OHW / OW, dj = BK % OW;
    const unsigned sJ = (unsigned)S * Cp, sI = sJ * Wp, sN = (unsigned)Hp * Wp * Cp;  // a column, row, image of xp
    step = da * sN + di * sI + dj * sJ;
    carryJ = sI - OW * sJ;  // jj wraps: one row more, OW columns less
    carryI = sN - OH * sI;  // i wraps: one image more, OH rows less
    astep = (unsigned)BK * Mp;
    rowB = img * sN + i * sI + jj * sJ + (BLIN ? boff[0] : 0u);  // with BLIN, rowB includes the chunks' offset
    abase = dyh + ((unsigned)u * Mp + acol0);
    bbase = xp + rowB;
  }
  __device__ __forceinline__ void next() {
    left -= BK;
    abase += astep;
    jj += dj, i += di, rowB += step;
    if (jj >= OW) jj -= OW, i++, rowB += carryJ;
    if (i >= OH) i -= OH, rowB += carryI;
    bbase = xp + rowB;
  }
};

// Store of (m, n) = (o, column (tap, c)): dw[o][c][tap] (mode add) or part[z][o][c][tap] (mode part), c < Cin.
// WStore holds kernel arguments only; ready() makes the functor, after the main loop.
struct WStoreReady {
  float* out;
  int Cin, Cp, KK, mode;
  long long zoff;
  IntDiv dCp;
  __device__ __forceinline__ void operator()(int m, int n, float v) const {
    const int tap = dCp.div(n), c = n - tap * Cp;
    if (c >= Cin) return;
    const long long i = ((long long)m * Cin + c) * KK + tap;
    if (mode == CONV_ADD)
      out[i] += v;
    else
      out[zoff + i] = v;
  }
};
struct WStore {
  float* out;
  int Cout, Cin, Cp, KK, mode;
  __device__ __forceinline__ WStoreReady ready() const {
    return WStoreReady{out, Cin, Cp, KK, mode, (long long)blockIdx.z * Cout * Cin * KK, IntDiv(Cp)};
  }
};

// out (mode) dw[o][c][p][q] = Σ_u dyh[u][o]·xp[img][i·S + p][jj·S + q][c] over this block's pixels
// [z·kchunk, min(Npix, (z+1)·kchunk)). dyh: [Npix][Mp] packed dy, xp: [N][Hp][Wp][Cp] packed x; for BF16 Cp is a
// multiple of 64 (cuda/conv2d.go wgradCp), which the B-linear source needs.
template <int BM, bool TC, bool BF, class E>
__device__ __forceinline__ void conv_wgrad(const E* dyh, const E* xp, float* out, float* part, unsigned* tickets,
                                           int Cout, int Mp, int Cin, int Cp, int K, int S, int Hp, int Wp, int OH,
                                           int OW, int Npix, int kchunk, int mode) {
  constexpr int BK = IgElem<TC, BF>::BK, T = TC ? IG_TC_THREADS : IG_F32_THREADS(BM), EC = 16 / (int)sizeof(E);
  constexpr int TPR = T / BK, CA = BM / (EC * TPR), CB = IG_BN / (EC * TPR);
  const int tid = threadIdx.x, r = tid / TPR, c0 = tid % TPR;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * IG_BN;
  const int KK = K * K, Ncol = KK * Cp;
  const int k0 = blockIdx.z * kchunk, k1 = min(Npix, k0 + kchunk);
  const int ksteps = (k1 - k0 + BK - 1) / BK;

  constexpr bool BLIN = BF;  // the BF16 loop's B chunks are consecutive (ig_bf16_mnmajor)
  WSrc<E, CA, CB, TPR, BK, BLIN> src;
  const IntDiv dCp(Cp);
  IG_UNROLL
  for (int j = 0; j < (BLIN ? 1 : CB); j++) {
    const int col = n0 + EC * (BLIN ? CB * c0 : c0 + TPR * j), tap = dCp.div(col), c = col - tap * Cp, p = tap / K,
              q = tap - p * K;
    src.boff[j] = col < Ncol ? (unsigned)((p * Wp + q) * Cp + c) : 0u;
  }
  src.start(k0 + r, k1, dyh, Mp, m0 + EC * c0 < Mp ? m0 + EC * c0 : 0, xp, Hp, Wp, S, Cp, OH, OW);

  const bool split = gridDim.z > 1;
  const WStore st{split ? part : out, Cout, Cin, Cp, KK, split ? CONV_PART : mode};
  IgLoop<TC, BF>::template mnmajor<BM>(src, ksteps, Cout, Ncol, st);
  if (split && splitk_last(tickets)) {
    conv_splitk_finish(part, out, (long long)Cout * Cin * KK, BM * IG_BN, mode, [&](int e, long long& i, int& m) {
      m = m0 + e / IG_BN;
      const int n = n0 + e % IG_BN, tap = dCp.div(n), c = n - tap * Cp;
      if (m >= Cout || n >= Ncol || c >= Cin) return false;
      i = ((long long)m * Cin + c) * KK + tap;
      return true;
    }, ConvSetSum{});
  }
}

#define CONV_WGRAD_ENTRY(NAME, BM, TC, BF)                                                                     \
  extern "C" __global__ void __launch_bounds__(TC ? IG_TC_THREADS : IG_F32_THREADS(BM), IG_MIN_BLOCKS(BM, TC)) \
      NAME(const IgElem<TC, BF>::T* dyh, const IgElem<TC, BF>::T* xp, float* out, float* part, unsigned* tickets, \
           int Cout, int Mp, int Cin, int Cp, int K, int S, int Hp, int Wp, int OH, int OW, int Npix, int kchunk,     \
           int mode) {                                                                                             \
    conv_wgrad<BM, TC, BF>(dyh, xp, out, part, tickets, Cout, Mp, Cin, Cp, K, S, Hp, Wp, OH, OW, Npix, kchunk,    \
                           mode);                                                                                  \
  }                                                                                                              \
  EMU_REGISTER(NAME)

#ifndef CONV_SPLIT_MODULE
CONV_WGRAD_ENTRY(conv2d_wgrad_f32_m128, 128, false, false)
CONV_WGRAD_ENTRY(conv2d_wgrad_f32_m64, 64, false, false)
#endif  // CONV_SPLIT_MODULE
#if defined(CONV_SPLIT_MODULE) && !HAVE_MMA_TF32
// The compute_70 build of the split modules: their entry points with empty bodies (never launched: package cuda
// refuses TF32 and BF16 below compute capability 8.0, where the compute_80 modules replace them).
#undef CONV_WGRAD_ENTRY
#define CONV_WGRAD_ENTRY(NAME, BM, TC, BF)                                                                          \
  extern "C" __global__ void NAME(const float*, const float*, float*, float*, unsigned*, int, int, int, int, int,  \
                                  int, int, int, int, int, int, int, int) {}
#ifdef CONV_WGRAD_TF32_MODULE
#undef CONV_WGRAD_TF32_ENTRIES
#define CONV_WGRAD_TF32_ENTRIES 1
#endif
#endif
#if CONV_WGRAD_TF32_ENTRIES
CONV_WGRAD_ENTRY(conv2d_wgrad_tf32_m128, 128, true, false)
CONV_WGRAD_ENTRY(conv2d_wgrad_tf32_m64, 64, true, false)
#endif
#if CONV_BF16_ENTRIES
CONV_WGRAD_ENTRY(conv2d_wgrad_bf16_m128, 128, true, true)
CONV_WGRAD_ENTRY(conv2d_wgrad_bf16_m64, 64, true, true)
#endif

#ifndef CONV_SPLIT_MODULE
// ---- bias gradient -------------------------------------------------------------------------------------------------
// db[o] += Σ_{img, pix} dy[img, o, pix]: block o (CONV_BIAS_THREADS threads) strides over the pixels of each image,
// then a fixed-order block sum.
#define CONV_BIAS_THREADS 256
extern "C" __global__ void __launch_bounds__(CONV_BIAS_THREADS)
    conv2d_bias_grad_f32(const float* dy, float* db, int N, int Cout, int OHW) {
  __shared__ float sh[32];
  const int o = blockIdx.x;
  float acc = 0.0f;
  for (int img = 0; img < N; img++) {
    const float* row = dy + ((long long)img * Cout + o) * OHW;
    for (int i = threadIdx.x; i < OHW; i += CONV_BIAS_THREADS) acc += row[i];
  }
  acc = block_sum_f32(acc, sh);
  if (threadIdx.x == 0) db[o] += acc;
}
EMU_REGISTER(conv2d_bias_grad_f32)
#endif  // CONV_SPLIT_MODULE
