// tc_probe.cu -- probes of the instructions that the tensor-core convolutions (conv2d.cu) build on, each against a
// plain definition: the same kernels run on the emulator (go test ./cuda) and on a GPU of compute capability 8.0 or
// newer (go test -tags cuda ./cuda), so the emulator's reading of the PTX ISA is checked against the hardware there.
// cuda/tc_probe_test.go launches them and computes the expected values. Compiled for compute_80 (kernels/ptx/sm80);
// the compute_70 module has the entry points with empty bodies (the tests skip on devices without tensor cores).
#include "common.cuh"
#include "mma.cuh"

// One m16n8k8 TF32 MMA per warp, fragments placed by the PTX ISA's tables (written out here independently of
// kernels/emu/mma.h): warp w of the grid multiplies A[w] (16x8, row-major), B[w] (8x8, row-major: B[k][n]) and adds
// C[w] (16x8, row-major), writing D[w] = C + tf32(A)·tf32(B) (16x8, row-major). A and B are rounded with
// f32_to_tf32 on the way in. Launched with a multiple of 32 threads per block.
extern "C" __global__ void tc_probe_mma(const float* A, const float* B, const float* C, float* D) {
#if HAVE_MMA_TF32
  const int lane = threadIdx.x % 32;
  const long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const float* a = A + w * 128;
  const float* b = B + w * 64;
  const float* c = C + w * 128;
  float* d = D + w * 128;
  const int group = lane / 4, tig = lane % 4;
  // A: a0 (group, tig), a1 (group + 8, tig), a2 (group, tig + 4), a3 (group + 8, tig + 4).
  const int arow[4] = {group, group + 8, group, group + 8}, acol[4] = {tig, tig, tig + 4, tig + 4};
  // B: b0 (tig, group), b1 (tig + 4, group). C/D: c0 (group, 2·tig), c1 (group, 2·tig + 1), c2, c3 the same + 8 rows.
  const int brow[2] = {tig, tig + 4};
  const int crow[4] = {group, group, group + 8, group + 8}, ccol[4] = {2 * tig, 2 * tig + 1, 2 * tig, 2 * tig + 1};
  uint32_t fa[4], fb[2];
  float fc[4], fd[4];
  for (int i = 0; i < 4; i++) fa[i] = __float_as_uint(f32_to_tf32(a[arow[i] * 8 + acol[i]]));
  for (int i = 0; i < 2; i++) fb[i] = __float_as_uint(f32_to_tf32(b[brow[i] * 8 + group]));
  for (int i = 0; i < 4; i++) fc[i] = c[crow[i] * 8 + ccol[i]];
  mma_tf32_m16n8k8(fd, fa, fb, fc);
  for (int i = 0; i < 4; i++) d[crow[i] * 8 + ccol[i]] = fd[i];
#endif
}
EMU_REGISTER(tc_probe_mma)

// Asynchronous copies with zero fill and three commit groups. Block of n threads, dynamic shared memory 3·n·16 bytes.
// Thread t copies the 16-byte chunk n·g + t of src (floats 4(n·g + t) ...) for group g = 0, 1, 2 into shared chunk
// n·g + t: in full when (t + g) % 3 != 0, else as zeros (src-size 0, with the source pointing at src[0]); one commit
// per group. After wait_group 2, 1 and 0 it reads back its own chunk of group 0, 1 and 2 (each complete by then);
// after a barrier it reads the chunk of thread (t + 1) % n of each group. out has 2·3·4n floats:
//   out[(0·3 + g)·4n + 4t + i]  element i of its own chunk of group g
//   out[(1·3 + g)·4n + 4t + i]  element i of the chunk of thread (t + 1) % n of group g
extern "C" __global__ void tc_probe_cp_async(const float* src, float* out) {
#if HAVE_MMA_TF32
  DYNAMIC_SHARED(float, sh);
  const int n = blockDim.x, t = threadIdx.x;
  for (int g = 0; g < 3; g++) {
    const bool full = (t + g) % 3 != 0;
    cp_async_16(sh + 4 * (n * g + t), full ? src + 4 * (n * g + t) : src, full ? 16 : 0);
    cp_async_commit();
  }
  cp_async_wait<2>();
  for (int i = 0; i < 4; i++) out[(0 * 3 + 0) * 4 * n + 4 * t + i] = sh[4 * (n * 0 + t) + i];
  cp_async_wait<1>();
  for (int i = 0; i < 4; i++) out[(0 * 3 + 1) * 4 * n + 4 * t + i] = sh[4 * (n * 1 + t) + i];
  cp_async_wait<0>();
  for (int i = 0; i < 4; i++) out[(0 * 3 + 2) * 4 * n + 4 * t + i] = sh[4 * (n * 2 + t) + i];
  __syncthreads();
  const int u = (t + 1) % n;
  for (int g = 0; g < 3; g++)
    for (int i = 0; i < 4; i++) out[(1 * 3 + g) * 4 * n + 4 * t + i] = sh[4 * (n * g + u) + i];
#endif
}
EMU_REGISTER(tc_probe_cp_async)

// One m16n8k4 TF32 MMA per warp, as tc_probe_mma: A[w] 16x4 (row-major), B[w] 4x8 (row-major), C[w] and D[w] 16x8;
// a0 (group, tig), a1 (group + 8, tig), b0 (tig, group).
extern "C" __global__ void tc_probe_mma_k4(const float* A, const float* B, const float* C, float* D) {
#if HAVE_MMA_TF32
  const int lane = threadIdx.x % 32;
  const long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const float* a = A + w * 64;
  const float* b = B + w * 32;
  const float* c = C + w * 128;
  float* d = D + w * 128;
  const int group = lane / 4, tig = lane % 4;
  const int crow[4] = {group, group, group + 8, group + 8}, ccol[4] = {2 * tig, 2 * tig + 1, 2 * tig, 2 * tig + 1};
  const uint32_t fa[2] = {__float_as_uint(f32_to_tf32(a[group * 4 + tig])),
                          __float_as_uint(f32_to_tf32(a[(group + 8) * 4 + tig]))};
  const uint32_t fb = __float_as_uint(f32_to_tf32(b[tig * 8 + group]));
  float acc[4];
  for (int i = 0; i < 4; i++) acc[i] = c[crow[i] * 8 + ccol[i]];
  mma_tf32_m16n8k4_acc(acc, fa, fb);
  for (int i = 0; i < 4; i++) d[crow[i] * 8 + ccol[i]] = acc[i];
#endif
}
EMU_REGISTER(tc_probe_mma_k4)

// ldmatrix.x4 on 32-bit data, one warp, dynamic shared memory 32·16 bytes. Mat holds four 8x4 matrices (Mat[i][r][c]
// at 32i + 4r + c). Row r of matrix i goes to shared row (7·(8i + r)) % 32, and lane 8i + r gives that address;
// out[4·lane + i] = register i of the lane (expected: Mat[i][lane / 4][lane % 4]).
extern "C" __global__ void tc_probe_ldmatrix(const float* Mat, float* out) {
#if HAVE_MMA_TF32
  DYNAMIC_SHARED(float, sh);
  const int lane = threadIdx.x;
  const int srow = (7 * lane) % 32;
  for (int c = 0; c < 4; c++) sh[4 * srow + c] = Mat[4 * lane + c];
  __syncwarp();
  uint32_t d[4];
  ldmatrix_x4(d, sh + 4 * srow);
  for (int i = 0; i < 4; i++) out[4 * lane + i] = __uint_as_float(d[i]);
#endif
}
EMU_REGISTER(tc_probe_ldmatrix)

// The K-major recipe of kernels/igemm.cuh on one warp: A (16x8, row-major) and B given as Bt[n][k] (8x8) in shared
// memory as rows of 8 floats (16-byte chunks 0 and 1), rounded to TF32 on the way in; ldmatrix.x4 gives a0..a3 from
// the 8x4 blocks (rows 0-7, chunk 0), (rows 8-15, chunk 0), (rows 0-7, chunk 1), (rows 8-15, chunk 1), and
// ldmatrix.x2-like use of .x4 gives b0, b1 from (n 0-7, chunk 0), (n 0-7, chunk 1) (the other two blocks repeat them);
// D = C + A·B (16x8, row-major) through mma m16n8k8. Dynamic shared memory (16 + 8)·8·4 bytes.
extern "C" __global__ void tc_probe_ldmatrix_mma(const float* A, const float* Bt, const float* C, float* D) {
#if HAVE_MMA_TF32
  DYNAMIC_SHARED(float, sh);
  float* As = sh;           // [16][8]
  float* Bs = sh + 16 * 8;  // [8][8]
  const int lane = threadIdx.x, group = lane / 4, tig = lane % 4, q = lane / 8, rr = lane % 8;
  for (int e = lane; e < 128; e += 32) As[e] = f32_to_tf32(A[e]);
  for (int e = lane; e < 64; e += 32) Bs[e] = f32_to_tf32(Bt[e]);
  __syncwarp();
  uint32_t fa[4], fb[4];
  ldmatrix_x4(fa, As + (rr + 8 * (q & 1)) * 8 + 4 * (q >> 1));
  ldmatrix_x4(fb, Bs + rr * 8 + 4 * (q & 1));
  const int crow[4] = {group, group, group + 8, group + 8}, ccol[4] = {2 * tig, 2 * tig + 1, 2 * tig, 2 * tig + 1};
  float acc[4];
  for (int i = 0; i < 4; i++) acc[i] = C[crow[i] * 8 + ccol[i]];
  mma_tf32_m16n8k8_acc(acc, fa, fb);
  for (int i = 0; i < 4; i++) D[crow[i] * 8 + ccol[i]] = acc[i];
#endif
}
EMU_REGISTER(tc_probe_ldmatrix_mma)

// One m16n8k16 bf16 MMA per warp, fragments placed by the PTX ISA's table (written out here independently of
// kernels/emu/mma.h): A[w] 16x16 and B[w] 16x8 (row-major), C[w] and D[w] 16x8; A and B converted to bfloat16 with
// cvt.rn.bf16x2.f32 (bf16x2) on the way in. Lane (group, tig): a0 = (group, 2tig, 2tig + 1), a1 = (group + 8, same),
// a2 = (group, 2tig + 8, 2tig + 9), a3 = (group + 8, same); b0 = (2tig, 2tig + 1; group), b1 = (2tig + 8, 2tig + 9;
// group); the lower k in the low half.
extern "C" __global__ void tc_probe_mma_bf16(const float* A, const float* B, const float* C, float* D) {
#if HAVE_MMA_TF32
  const int lane = threadIdx.x % 32;
  const long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const float* a = A + w * 256;
  const float* b = B + w * 128;
  const float* c = C + w * 128;
  float* d = D + w * 128;
  const int group = lane / 4, tig = lane % 4;
  const int arow[4] = {group, group + 8, group, group + 8}, acol[4] = {2 * tig, 2 * tig, 2 * tig + 8, 2 * tig + 8};
  const int brow[2] = {2 * tig, 2 * tig + 8};
  const int crow[4] = {group, group, group + 8, group + 8}, ccol[4] = {2 * tig, 2 * tig + 1, 2 * tig, 2 * tig + 1};
  uint32_t fa[4], fb[2];
  float fc[4], fd[4];
  for (int i = 0; i < 4; i++) fa[i] = bf16x2(a[arow[i] * 16 + acol[i]], a[arow[i] * 16 + acol[i] + 1]);
  for (int i = 0; i < 2; i++) fb[i] = bf16x2(b[brow[i] * 8 + group], b[(brow[i] + 1) * 8 + group]);
  for (int i = 0; i < 4; i++) fc[i] = c[crow[i] * 8 + ccol[i]];
  mma_bf16_m16n8k16(fd, fa, fb, fc);
  for (int i = 0; i < 4; i++) d[crow[i] * 8 + ccol[i]] = fd[i];
#endif
}
EMU_REGISTER(tc_probe_mma_bf16)

// cvt.rn.bf16x2.f32 and f32_to_bf16 side by side, one thread per pair: out[2i] = bf16x2(in[2i], in[2i + 1]) (its
// bits), out[2i + 1] = f32_to_bf16(in[2i]) (bits of the FP32 value), for i < n.
extern "C" __global__ void tc_probe_cvt_bf16(const float* in, unsigned* out, int n) {
#if HAVE_MMA_TF32
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[2 * i] = bf16x2(in[2 * i], in[2 * i + 1]);
  out[2 * i + 1] = __float_as_uint(f32_to_bf16(in[2 * i]));
#endif
}
EMU_REGISTER(tc_probe_cvt_bf16)

// ldmatrix.x4 and ldmatrix.x4.trans on 16-bit data, one warp, dynamic shared memory 32·16 bytes. Mat holds four 8x8
// matrices of 16-bit elements (Mat[i][r][c] at 64i + 8r + c, as uint16_t), row r of matrix i stored at shared row
// (7·(8i + r)) % 32, whose address lane 8i + r gives. out[8·lane + i] = register i of the lane after ldmatrix.x4
// (expected: elements (lane / 4, 2(lane % 4)) low, (lane / 4, 2(lane % 4) + 1) high of matrix i), out[8·lane + 4 + i]
// after ldmatrix.x4.trans (expected: (2(lane % 4), lane / 4) low, (2(lane % 4) + 1, lane / 4) high).
extern "C" __global__ void tc_probe_ldmatrix_b16(const uint16_t* Mat, uint32_t* out) {
#if HAVE_MMA_TF32
  DYNAMIC_SHARED(uint16_t, sh16);
  const int lane = threadIdx.x;
  const int srow = (7 * lane) % 32;
  for (int c = 0; c < 8; c++) sh16[8 * srow + c] = Mat[8 * lane + c];
  __syncwarp();
  uint32_t d[4], e[4];
  ldmatrix_x4(d, sh16 + 8 * srow);
  ldmatrix_x4_trans(e, sh16 + 8 * srow);
  for (int i = 0; i < 4; i++) out[8 * lane + i] = d[i], out[8 * lane + 4 + i] = e[i];
#endif
}
EMU_REGISTER(tc_probe_ldmatrix_b16)

// The BF16 recipes of kernels/igemm.cuh on one warp, D = C + bf16(A)·bf16(B) (A 16x16, B 16x8, C and D 16x8, all
// row-major) through ldmatrix on bfloat16 tiles and mma m16n8k16. A and B are rounded to bfloat16 (f32_to_bf16) on
// their way into shared memory, as the packing kernels do. mn = 0, K-major (ig_bf16_kmajor): As[m][k] (16 rows of 16)
// and Bs[n][k] (8 rows of 16), ldmatrix.x4 of the 8x8 blocks (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15),
// (m 8-15, k 8-15) and (n 0-7, k 0-7), (n 0-7, k 8-15) (the other two repeat them). mn = 1, MN-major
// (ig_bf16_mnmajor): As[k][m] (16 rows of 16) and Bs[k][n] (16 rows of 8), ldmatrix.x4.trans of (k 0-7, m 0-7),
// (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15) and (k 0-7, n 0-7), (k 8-15, n 0-7). Dynamic shared memory
// (256 + 128)·2 bytes.
extern "C" __global__ void tc_probe_ldmatrix_mma_bf16(const float* A, const float* B, const float* C, float* D,
                                                      int mn) {
#if HAVE_MMA_TF32
  DYNAMIC_SHARED(uint16_t, sh16);
  uint16_t* As = sh16;        // 16 x 16
  uint16_t* Bs = sh16 + 256;  // 8 x 16 (K-major) or 16 x 8 (MN-major)
  const int lane = threadIdx.x, group = lane / 4, tig = lane % 4, q = lane / 8, rr = lane % 8;
  auto bf = [](float x) { return (uint16_t)(__float_as_uint(f32_to_bf16(x)) >> 16); };
  for (int e = lane; e < 256; e += 32) {
    const int m = e / 16, k = e % 16;
    As[mn ? k * 16 + m : e] = bf(A[e]);
  }
  for (int e = lane; e < 128; e += 32) {
    const int k = e / 8, n = e % 8;
    Bs[mn ? e : n * 16 + k] = bf(B[e]);
  }
  __syncwarp();
  uint32_t fa[4], fb[4];
  if (mn) {
    ldmatrix_x4_trans(fa, As + (8 * (q >> 1) + rr) * 16 + 8 * (q & 1));
    ldmatrix_x4_trans(fb, Bs + (8 * (q & 1) + rr) * 8);
  } else {
    ldmatrix_x4(fa, As + (rr + 8 * (q & 1)) * 16 + 8 * (q >> 1));
    ldmatrix_x4(fb, Bs + rr * 16 + 8 * (q & 1));
  }
  const int crow[4] = {group, group, group + 8, group + 8}, ccol[4] = {2 * tig, 2 * tig + 1, 2 * tig, 2 * tig + 1};
  float acc[4];
  for (int i = 0; i < 4; i++) acc[i] = C[crow[i] * 8 + ccol[i]];
  mma_bf16_m16n8k16_acc(acc, fa, fb);
  for (int i = 0; i < 4; i++) D[crow[i] * 8 + ccol[i]] = acc[i];
#endif
}
EMU_REGISTER(tc_probe_ldmatrix_mma_bf16)
