// conv2d.cu -- 2-D convolution (NCHW, square kernel K, stride S, zero padding P) as implicit GEMM: the im2col matrix
// is never stored; the GEMM tiles of kernels/gemm_tile.cuh gather it from x (or dy) as they load. Launched by
// cuda/conv2d.go with GEMM_THREADS threads and a grid of GEMM tiles. Each op has an FP32 entry point (_f32) and a
// TF32 tensor-core one (_tf32, wmma 16x16x8 with FP32 accumulation), same arguments and grid.
//
// Shapes: x [N, Cin, H, W], w [Cout, Cin, K, K], y and dy [N, Cout, OH, OW], OH = (H + 2P + E − K)/S + 1 (OW alike),
// where E (ops.ConvShape.PadEnd) pads zeros after x only: E enters through OH and OW, which the launcher passes, and
// every read outside x is 0 (im2col below; the output bounds of the backward-data gather), so no kernel needs E.
// Index names: KK = K·K, CKK = Cin·KK, OHW = OH·OW, HW = H·W; a reduction index k = (c, p, q) means k = c·KK + p·K + q.
#include "common.cuh"
#include "gemm_tile.cuh"
#include "warp_reduce.cuh"

// The convolution geometry, unpacked once per thread.
struct ConvGeom {
  int N, Cin, H, W, Cout, K, S, P, OH, OW;
  __device__ __forceinline__ int KK() const { return K * K; }
  __device__ __forceinline__ int CKK() const { return Cin * K * K; }
  __device__ __forceinline__ int OHW() const { return OH * OW; }
  __device__ __forceinline__ int HW() const { return H * W; }
  // x[img, c, i·S+p−P, j·S+q−P] for reduction index k = (c, p, q) and output pixel pix = i·OW + j; 0 in the padding.
  __device__ __forceinline__ float im2col(const float* x, int img, int k, int pix) const {
    const int c = k / KK(), pq = k - c * KK(), p = pq / K, q = pq - p * K;
    const int i = pix / OW, j = pix - i * OW;
    const int hi = i * S - P + p, wi = j * S - P + q;
    if (hi < 0 || hi >= H || wi < 0 || wi >= W) return 0.0f;
    return __ldg(x + (((long long)img * Cin + c) * H + hi) * W + wi);
  }
};

// ---- forward -------------------------------------------------------------------------------------------------------
// GEMM with M = Cout, N = batch·OHW (column n = img·OHW + pix), K = CKK:
//   y[img, o, pix] = b[o] + Σ_k w[o, k]·im2col(x)[k, (img, pix)]
// i.e. y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·S+p−P, j·S+q−P]. b may be null (no bias).
template <class Core>
__device__ __forceinline__ void conv2d_fwd(const float* x, const float* w, const float* b, float* y, ConvGeom g) {
  const int ckk = g.CKK(), ohw = g.OHW();
  auto la = [&](int o, int k) { return __ldg(w + (long long)o * ckk + k); };
  auto lb = [&](int k, int n) {
    const int img = n / ohw;
    return g.im2col(x, img, k, n - img * ohw);
  };
  auto st = [&](int o, int n, float v) {
    const int img = n / ohw;
    y[((long long)img * g.Cout + o) * ohw + (n - img * ohw)] = v + (b ? b[o] : 0.0f);
  };
  gemm_tile<Core>(g.Cout, g.N * ohw, 0, ckk, true, false, la, lb, st);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv2d_fwd_f32(const float* x, const float* w, const float* b, float* y, int N, int Cin, int H, int W, int Cout,
                   int K, int S, int P, int OH, int OW) {
  conv2d_fwd<GemmCoreFP32>(x, w, b, y, ConvGeom{N, Cin, H, W, Cout, K, S, P, OH, OW});
}
EMU_REGISTER(conv2d_fwd_f32)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv2d_fwd_tf32(const float* x, const float* w, const float* b, float* y, int N, int Cin, int H, int W, int Cout,
                    int K, int S, int P, int OH, int OW) {
  conv2d_fwd<GemmCoreTF32>(x, w, b, y, ConvGeom{N, Cin, H, W, Cout, K, S, P, OH, OW});
}
EMU_REGISTER(conv2d_fwd_tf32)

// ---- backward-data -------------------------------------------------------------------------------------------------
// GEMM with M = Cin, N = batch·HW (column n = img·HW + h·W + v), K = Cout·KK (k = o·KK + p·K + q), accumulating:
//   dx[img, c, h, v] += Σ_{o,p,q} w[o, c, p, q]·dy[img, o, (h+P−p)/S, (v+P−q)/S]
// over the (o, p, q) whose output position is whole (S divides h+P−p and v+P−q) and inside [0, OH) x [0, OW).
// This is the adjoint of the forward map x → y: each dy element returns, through every weight, to the x it read.
template <class Core>
__device__ __forceinline__ void conv2d_bwd_data(const float* w, const float* dy, float* dx, ConvGeom g) {
  const int kk = g.KK(), hw = g.HW(), ohw = g.OHW();
  auto la = [&](int c, int k) {
    const int o = k / kk;
    return __ldg(w + ((long long)o * g.Cin + c) * kk + (k - o * kk));
  };
  auto lb = [&](int k, int n) {
    const int o = k / kk, pq = k - o * kk, p = pq / g.K, q = pq - p * g.K;
    const int img = n / hw, r = n - img * hw, h = r / g.W, v = r - h * g.W;
    const int th = h + g.P - p, tv = v + g.P - q;
    if (th < 0 || tv < 0) return 0.0f;
    const int oi = th / g.S, oj = tv / g.S;
    if (oi * g.S != th || oj * g.S != tv || oi >= g.OH || oj >= g.OW) return 0.0f;
    return __ldg(dy + ((long long)img * g.Cout + o) * ohw + oi * g.OW + oj);
  };
  auto st = [&](int c, int n, float v) {
    const int img = n / hw;
    dx[((long long)img * g.Cin + c) * hw + (n - img * hw)] += v;
  };
  gemm_tile<Core>(g.Cin, g.N * hw, 0, g.Cout * kk, true, false, la, lb, st);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv2d_bwd_data_f32(const float* w, const float* dy, float* dx, int N, int Cin, int H, int W, int Cout, int K,
                        int S, int P, int OH, int OW) {
  conv2d_bwd_data<GemmCoreFP32>(w, dy, dx, ConvGeom{N, Cin, H, W, Cout, K, S, P, OH, OW});
}
EMU_REGISTER(conv2d_bwd_data_f32)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv2d_bwd_data_tf32(const float* w, const float* dy, float* dx, int N, int Cin, int H, int W, int Cout, int K,
                         int S, int P, int OH, int OW) {
  conv2d_bwd_data<GemmCoreTF32>(w, dy, dx, ConvGeom{N, Cin, H, W, Cout, K, S, P, OH, OW});
}
EMU_REGISTER(conv2d_bwd_data_tf32)

// ---- backward-weight -----------------------------------------------------------------------------------------------
// GEMM with M = Cout, N = CKK, K = batch·OHW (k = img·OHW + pix):
//   dw[o, c, p, q] += Σ_{img, pix} dy[img, o, pix]·im2col(x)[(c, p, q), (img, pix)]
// split over blockIdx.z into chunks of kchunk reduction indices. With one chunk (splits = 1) the tile adds straight
// into dw; otherwise chunk z writes its partial sums to part[z·Cout·CKK + o·CKK + (c,p,q)] and
// conv2d_splitk_reduce_f32 adds the partials to dw in chunk order, so the result does not depend on scheduling.
template <class Core>
__device__ __forceinline__ void conv2d_bwd_weight(const float* x, const float* dy, float* dw, float* part, int kchunk,
                                                  ConvGeom g) {
  const int ckk = g.CKK(), ohw = g.OHW();
  const int k0 = blockIdx.z * kchunk, k1 = min(g.N * ohw, k0 + kchunk);
  auto la = [&](int o, int k) {
    const int img = k / ohw;
    return __ldg(dy + ((long long)img * g.Cout + o) * ohw + (k - img * ohw));
  };
  auto lb = [&](int k, int n) {
    const int img = k / ohw;
    return g.im2col(x, img, n, k - img * ohw);
  };
  float* slice = part ? part + (long long)blockIdx.z * g.Cout * ckk : nullptr;
  auto st = [&](int o, int n, float v) {
    if (slice)
      slice[(long long)o * ckk + n] = v;
    else
      dw[(long long)o * ckk + n] += v;
  };
  gemm_tile<Core>(g.Cout, ckk, k0, k1, true, true, la, lb, st);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv2d_bwd_weight_f32(const float* x, const float* dy, float* dw, float* part, int kchunk, int N, int Cin, int H,
                          int W, int Cout, int K, int S, int P, int OH, int OW) {
  conv2d_bwd_weight<GemmCoreFP32>(x, dy, dw, part, kchunk, ConvGeom{N, Cin, H, W, Cout, K, S, P, OH, OW});
}
EMU_REGISTER(conv2d_bwd_weight_f32)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv2d_bwd_weight_tf32(const float* x, const float* dy, float* dw, float* part, int kchunk, int N, int Cin, int H,
                           int W, int Cout, int K, int S, int P, int OH, int OW) {
  conv2d_bwd_weight<GemmCoreTF32>(x, dy, dw, part, kchunk, ConvGeom{N, Cin, H, W, Cout, K, S, P, OH, OW});
}
EMU_REGISTER(conv2d_bwd_weight_tf32)

// dw[i] += Σ_{s < splits} part[s·n + i], s increasing (grid-stride over i < n).
extern "C" __global__ void conv2d_splitk_reduce_f32(const float* part, float* dw, int splits, int n) {
  for (long long i = global_index(); i < n; i += global_stride()) {
    float acc = 0.0f;
    for (int s = 0; s < splits; s++) acc += part[(long long)s * n + i];
    dw[i] += acc;
  }
}
EMU_REGISTER(conv2d_splitk_reduce_f32)

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
