// concat.cu -- layout ops: channel concatenation and its backward, the per-(sample, channel) broadcast add and its
// reduction, and the batched 2-D transpose (NCHW <-> N(HW)C) with its backward. Launched by cuda/concat.go.
#include "common.cuh"
#include "warp_reduce.cuh"

#define CONCAT_THREADS 256   // grid-stride kernels
#define CHANSUM_WARPS 8      // channel_sum_f32: one warp per row, 8 rows per block
#define TRANSPOSE_TILE 32    // transpose_f32: 32x32 tiles through shared memory,
#define TRANSPOSE_ROWS 8     //   blocks of 32x8 threads, each thread moving 4 elements

// Concat along channels: a [n, ca, hw], b [n, cb, hw] -> y [n, ca+cb, hw]; one thread per element of y:
//   y[s, c, i] = c < ca ? a[s, c, i] : b[s, c − ca, i]
extern "C" __global__ void __launch_bounds__(CONCAT_THREADS)
    concat_f32(const float* a, const float* b, float* y, int n, int ca, int cb, int hw) {
  const long long per = (long long)(ca + cb) * hw, pa = (long long)ca * hw, pb = (long long)cb * hw;
  for (long long e = global_index(); e < (long long)n * per; e += global_stride()) {
    const long long s = e / per, r = e - s * per;
    y[e] = r < pa ? a[s * pa + r] : b[s * pb + (r - pa)];
  }
}
EMU_REGISTER(concat_f32)

// ConcatBackward: da[s, c, i] += dy[s, c, i] (c < ca),  db[s, c, i] += dy[s, ca + c, i]; either may be null.
extern "C" __global__ void __launch_bounds__(CONCAT_THREADS)
    concat_bwd_f32(const float* dy, float* da, float* db, int n, int ca, int cb, int hw) {
  const long long per = (long long)(ca + cb) * hw, pa = (long long)ca * hw, pb = (long long)cb * hw;
  for (long long e = global_index(); e < (long long)n * per; e += global_stride()) {
    const long long s = e / per, r = e - s * per;
    if (r < pa) {
      if (da) da[s * pa + r] += dy[e];
    } else if (db) {
      db[s * pb + (r - pa)] += dy[e];
    }
  }
}
EMU_REGISTER(concat_bwd_f32)

// AddChannel: y[s, c, i] = x[s, c, i] + p[s·ld + c] for x, y [n, C, hw], p's rows ld ≥ C apart (y may alias x: each
// element is read, then written, by one thread).
extern "C" __global__ void __launch_bounds__(CONCAT_THREADS)
    add_channel_f32(const float* x, const float* p, float* y, long long total, int hw, int C, int ld) {
  for (long long e = global_index(); e < total; e += global_stride()) {
    const long long r = e / hw;  // the row s·C + c
    y[e] = x[e] + p[r / C * ld + r % C];
  }
}
EMU_REGISTER(add_channel_f32)

// ChannelSum: dp[s·ld + c] += Σ_{i<hw} dy[r·hw + i] for rows r = s·C + c < rows; one warp per row, lane l adding
// i = l, l+32, ... and a fixed butterfly across lanes.
extern "C" __global__ void __launch_bounds__(32 * CHANSUM_WARPS)
    channel_sum_f32(const float* dy, float* dp, int rows, int hw, int C, int ld) {
  const int r = blockIdx.x * CHANSUM_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;  // whole warps leave together; no block barrier follows
  const float* row = dy + (long long)r * hw;
  float acc = 0.0f;
  for (int i = lane; i < hw; i += 32) acc += row[i];
  acc = warp_sum_f32(acc);
  if (lane == 0) dp[r / C * ld + r % C] += acc;
}
EMU_REGISTER(channel_sum_f32)

// Batched transpose, x [n, R, Cc] -> y [n, Cc, R]: y[s, j, i] = x[s, i, j] (accumulate = 0) or y[s, j, i] += x[s, i, j]
// (accumulate = 1: TransposeBackward of a [n, r, c] transpose is this with x = dy [n, c, r], R = c, Cc = r). With res
// (accumulate = 0 only; ops.TransposeAdd: the attention block's residual), y[s, j, i] = x[s, i, j] + res[s, j, i]:
// the sum add_f32 would form after the transpose.
// Block (bx, by, s) moves the tile of x rows by·32.. and columns bx·32..: both the global read and the global write
// are row-contiguous, through a shared tile padded to 33 columns so the transposed reads hit distinct banks.
extern "C" __global__ void __launch_bounds__(TRANSPOSE_TILE * TRANSPOSE_ROWS)
    transpose_f32(const float* x, float* y, int R, int Cc, int accumulate, const float* res) {
  __shared__ float tile[TRANSPOSE_TILE][TRANSPOSE_TILE + 1];
  const long long off = (long long)blockIdx.z * R * Cc;
  const int i0 = blockIdx.y * TRANSPOSE_TILE, j0 = blockIdx.x * TRANSPOSE_TILE;
  for (int r = threadIdx.y; r < TRANSPOSE_TILE; r += TRANSPOSE_ROWS) {
    const int i = i0 + r, j = j0 + threadIdx.x;
    if (i < R && j < Cc) tile[r][threadIdx.x] = x[off + (long long)i * Cc + j];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < TRANSPOSE_TILE; r += TRANSPOSE_ROWS) {
    const int j = j0 + r, i = i0 + threadIdx.x;
    if (i < R && j < Cc) {
      const long long e = off + (long long)j * R + i;
      const float v = tile[threadIdx.x][r];
      y[e] = accumulate ? y[e] + v : res ? v + res[e] : v;
    }
  }
}
EMU_REGISTER(transpose_f32)
