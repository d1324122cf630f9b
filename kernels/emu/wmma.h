// wmma.h -- the part of CUDA's warp matrix API (nvcuda::wmma, <mma.h>) that the kernels use, for the CPU emulator:
// TF32 fragments of shape 16x16x8 with FP32 accumulators, fill_fragment, load_matrix_sync, store_matrix_sync,
// mma_sync and __float_to_tf32. Kernels include <mma.h> under nvcc and this file otherwise (see kernels/conv2d.cu);
// it needs kernels/emu/emu.h first.
//
// Model. On a GPU a fragment is spread over the 32 lanes of a warp in an unspecified layout, so a program may only
// touch its elements uniformly (x[t] for every t, the same function on each). Here every lane holds the WHOLE tile, in
// row-major order: any program that is legal on the GPU computes the same values, and the elementwise loops over
// x[0..num_elements) see every element once per lane, as they do across the warp. The collective functions begin with
// __syncwarp(), so a warp that calls one divergently (some lanes only) fails the launch as it would misbehave on a GPU,
// and they check the documented preconditions: a 256-bit aligned pointer and ldm a multiple of 16 bytes.
//
// Numerics. __float_to_tf32 rounds to 10 mantissa bits, to nearest with ties away from zero (cvt.rna.tf32.f32).
// mma_sync reads only the TF32 bits of its A and B elements (the low 13 mantissa bits are ignored, as the tensor cores
// ignore them) and accumulates the exact products in FP32, one k at a time; the hardware's order of the FP32 additions
// is unspecified, so conformance tolerances must allow for any order.
#pragma once
#ifndef __CUDACC__
#ifndef EMU_CUDA_SHIM
#error "kernels/emu/wmma.h needs kernels/emu/emu.h first"
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class T>
struct storage {
  typedef T type;
};
template <>
struct storage<precision::tf32> {
  typedef float type;
};
template <class Use, int M, int N, int K>
struct dims {
  static const int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static const int cols = std::is_same<Use, matrix_a>::value ? K : N;
};

static inline void check(const char* fn, const void* p, unsigned ldm, unsigned elem_bytes) {
  if ((uintptr_t)p % 32 != 0) ::emu::trap(fn);  // the pointer must be 256-bit aligned
  if ((ldm * elem_bytes) % 16 != 0) ::emu::trap(fn);  // ldm must be a multiple of 16 bytes
}

static inline float tf32_bits(float v) {  // the TF32 part of v: the low 13 mantissa bits cleared
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}
}  // namespace detail

// fragment<Use, M, N, K, T, Layout>: x[num_elements] holds the tile row-major (see the file comment).
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  typedef typename detail::storage<T>::type element_type;
  static const int rows = detail::dims<Use, M, N, K>::rows;
  static const int cols = detail::dims<Use, M, N, K>::cols;
  enum { num_elements = rows * cols };
  element_type x[num_elements];
};

// __float_to_tf32: round to nearest (ties away from zero) at 10 mantissa bits; NaN and infinity pass unchanged.
static inline float __float_to_tf32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) {
    u += 0x1000u;  // half of the last kept bit; a carry into the exponent is the correct rounding up
    u &= 0xffffe000u;
  }
  std::memcpy(&v, &u, 4);
  return v;
}

template <class Use, int M, int N, int K, class T, class L, class V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  __syncwarp();
  for (int i = 0; i < f.num_elements; i++) f.x[i] = (typename fragment<Use, M, N, K, T, L>::element_type)v;
}

// Matrix A or B: element (r, c) of the tile is p[r·ldm + c] (row_major) or p[c·ldm + r] (col_major).
template <class Use, int M, int N, int K, class T, class L>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value,
                "load_matrix_sync without a layout argument is for matrix_a/matrix_b fragments");
  __syncwarp();
  detail::check("wmma::load_matrix_sync: pointer not 256-bit aligned or ldm not a multiple of 16 bytes", p, ldm, 4);
  typedef fragment<Use, M, N, K, T, L> F;
  for (int r = 0; r < F::rows; r++)
    for (int c = 0; c < F::cols; c++)
      f.x[r * F::cols + c] = std::is_same<L, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

// Accumulator: element (r, c) is p[r·ldm + c] (mem_row_major) or p[c·ldm + r] (mem_col_major).
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                                    layout_t layout) {
  __syncwarp();
  detail::check("wmma::load_matrix_sync: pointer not 256-bit aligned or ldm not a multiple of 16 bytes", p, ldm, 4);
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++)
      f.x[r * N + c] = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K>
static inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                                     layout_t layout) {
  __syncwarp();
  detail::check("wmma::store_matrix_sync: pointer not 256-bit aligned or ldm not a multiple of 16 bytes", p, ldm, 4);
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++) (layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.x[r * N + c];
}

// d = a·b + c (d may be c). A and B are read as TF32, products are exact in FP32 and summed in FP32.
template <int M, int N, int K, class LA, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                            const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
                            const fragment<matrix_b, M, N, K, precision::tf32, LB>& b,
                            const fragment<accumulator, M, N, K, float>& c) {
  __syncwarp();
  float out[M * N];
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; k++) acc += detail::tf32_bits(a.x[i * K + k]) * detail::tf32_bits(b.x[k * N + j]);
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof out);
}

}  // namespace wmma
}  // namespace nvcuda

#endif  // __CUDACC__
