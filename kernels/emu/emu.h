// emu.h -- a CUDA-on-CPU shim: with it, kernels/*.cu compile unchanged under g++ and run with CUDA semantics.
//
// Model. A launch runs the blocks of the grid on a small pool of OS threads (blocks of one grid may run in parallel,
// so atomics are real atomics). The threads of one block are fibers on ONE OS thread, each with its own mmap'd stack,
// and they switch only at synchronisation points (__syncthreads*, __syncwarp, warp shuffles, ballot/any/all). Between
// those points a thread runs alone, which is a legal schedule of a CUDA block; code that relies on anything else (e.g.
// warp-synchronous programming without __syncwarp) is a bug on the GPU too.
//
// Mapping of CUDA features:
//   __shared__ (static)        thread_local at block scope: one copy per OS thread = per running block. This is why
//                              fibers never move between OS threads. A block sees what the previous block on its OS
//                              thread left there, except in the reverse and random schedules (DDPM_EMU_ORDER, see
//                              emu_runtime.h), which fill all of it with 0xFF bytes (NaN as floats) at block start.
//   dynamic shared memory      `extern __shared__ T x[]` cannot be expressed in C++ without knowing the name, so kernels
//                              write DYNAMIC_SHARED(T, x) (kernels/common.cuh), which is that declaration under nvcc
//                              and `T* x = (T*)emu::dynamic_shared()` here.
//   threadIdx/blockIdx/...     macros reading the current fiber / block (thread-local pointers).
//   __syncthreads[_count|_and|_or], __syncwarp, __shfl*_sync, __ballot_sync, __any_sync, __all_sync, __activemask
//                              the fiber yields to the block's scheduler, which releases a barrier when every thread
//                              of the block (or every non-exited lane named in the mask) has arrived. Barrier misuse --
//                              a thread exits while others wait, threads wait at different __syncthreads sites, or no
//                              thread can run -- aborts the launch with an error naming the kernel (never a hang).
//   atomics                    GCC __atomic builtins (float atomicAdd via compare-and-swap).
//   __ldg, float4, math        plain loads, plain structs, <cmath>.
// After each kernel, EMU_REGISTER(name) registers a launcher that unpacks the driver's void** params array by the
// kernel's signature (see emu_runtime.h); under nvcc it expands to nothing.
//
// This header and emu_runtime.h are meant to be included in exactly ONE translation unit of a program (cuda/emu_cgo.cpp
// in the default build, kernels/emu/driver/kernels.cpp in the emulated CUDA driver), before the kernel sources; all
// their internal state has internal linkage.
#pragma once
#ifndef __CUDACC__

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define EMU_CUDA_SHIM 1

// ---- qualifiers -------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __shared__ thread_local
#define __constant__
#define __launch_bounds__(...)

// ---- vector types -----------------------------------------------------------------------------------------------
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) double2 { double x, y; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
static inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

// ---- runtime state visible to kernels -------------------------------------------------------------------------------
namespace emu {
struct Fiber;
struct Block;
// emu_shared_begin marks the start of this translation unit's thread-local storage: the top-level asm is emitted
// before any variable, so its section comes first among the object's TLS sections, and the static __shared__ arrays
// (thread_local, above) and the two pointers below all lie after it. The scheduler poisons [emu_shared_begin, end of
// the module's TLS block) at block start in the reverse and random schedules (emu_runtime.h, poison_static_shared).
asm(".section .tbss.emu_shared_begin,\"awT\",@nobits\n"
    ".globl emu_shared_begin\n.hidden emu_shared_begin\n.type emu_shared_begin,@tls_object\n"
    ".size emu_shared_begin,0\nemu_shared_begin:\n.text\n");
extern "C" __thread char emu_shared_begin[] __attribute__((visibility("hidden")));
// The fiber running now and the block it belongs to. Both are per OS thread; from a fiber's point of view they never
// change (the scheduler sets them before resuming it), so a compiler that caches them across a switch is still right.
static __thread Fiber* tl_fiber;
static __thread Block* tl_block;
const uint3& fiber_tid(const Fiber* f);
const uint3& block_bid(const Block* b);
const dim3& block_dim(const Block* b);
const dim3& grid_dim(const Block* b);
void* dynamic_shared();

enum BarKind { BAR_PLAIN, BAR_COUNT, BAR_AND, BAR_OR };
int syncthreads(const char* site, int pred, BarKind kind);

enum WarpOp { W_SYNC, W_IDX, W_UP, W_DOWN, W_XOR, W_BALLOT, W_ANY, W_ALL };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t val, int arg, int width);
unsigned active_mask();
[[noreturn]] void trap(const char* why);

template <class T>
static inline uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
static inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace emu

#define threadIdx (::emu::fiber_tid(::emu::tl_fiber))
#define blockIdx (::emu::block_bid(::emu::tl_block))
#define blockDim (::emu::block_dim(::emu::tl_block))
#define gridDim (::emu::grid_dim(::emu::tl_block))
#define warpSize 32

#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define EMU_SITE __FILE__ ":" EMU_STR(__LINE__)

// ---- barriers and warp intrinsics -------------------------------------------------------------------------------
#define __syncthreads() ((void)::emu::syncthreads(EMU_SITE, 0, ::emu::BAR_PLAIN))
#define __syncthreads_count(p) ::emu::syncthreads(EMU_SITE, (p) ? 1 : 0, ::emu::BAR_COUNT)
#define __syncthreads_and(p) ::emu::syncthreads(EMU_SITE, (p) ? 1 : 0, ::emu::BAR_AND)
#define __syncthreads_or(p) ::emu::syncthreads(EMU_SITE, (p) ? 1 : 0, ::emu::BAR_OR)
static inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_op(::emu::W_SYNC, mask, 0, 0, 32); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline unsigned __activemask() { return ::emu::active_mask(); }
static inline unsigned __ballot_sync(unsigned mask, int pred) {
  return (unsigned)::emu::warp_op(::emu::W_BALLOT, mask, pred != 0, 0, 32);
}
static inline int __any_sync(unsigned mask, int pred) { return (int)::emu::warp_op(::emu::W_ANY, mask, pred != 0, 0, 32); }
static inline int __all_sync(unsigned mask, int pred) { return (int)::emu::warp_op(::emu::W_ALL, mask, pred != 0, 0, 32); }
template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::W_IDX, mask, ::emu::to_bits(v), src, width));
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::W_UP, mask, ::emu::to_bits(v), (int)delta, width));
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::W_DOWN, mask, ::emu::to_bits(v), (int)delta, width));
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::W_XOR, mask, ::emu::to_bits(v), lane_mask, width));
}
static inline void __trap() { ::emu::trap("__trap() called"); }

// ---- loads --------------------------------------------------------------------------------------------------------
template <class T>
static inline T __ldg(const T* p) { return *p; }

// ---- atomics (device-wide; blocks run on several OS threads) --------------------------------------------------------
#define EMU_ATOMIC_INT(T)                                                                                     \
  static inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }                \
  static inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }                \
  static inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }                \
  static inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }                  \
  static inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }                \
  static inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }              \
  static inline T atomicCAS(T* a, T cmp, T v) {                                                               \
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                       \
    return cmp;                                                                                               \
  }                                                                                                           \
  static inline T atomicMax(T* a, T v) {                                                                      \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                             \
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {  \
    }                                                                                                         \
    return old;                                                                                               \
  }                                                                                                           \
  static inline T atomicMin(T* a, T v) {                                                                      \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                             \
    while (old > v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {  \
    }                                                                                                         \
    return old;                                                                                               \
  }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC_INT(unsigned long long)
EMU_ATOMIC_INT(long long)
#undef EMU_ATOMIC_INT

// Floating-point atomics: compare-and-swap on the bit pattern, as CUDA documents for pre-native atomicAdd(double).
#define EMU_ATOMIC_FLOAT(T, U)                                                                                \
  static inline T atomicAdd(T* a, T v) {                                                                      \
    U* ua = reinterpret_cast<U*>(a);                                                                          \
    U old = __atomic_load_n(ua, __ATOMIC_RELAXED), nw;                                                        \
    do {                                                                                                      \
      nw = emu::to_bits<T>(emu::from_bits<T>(old) + v);                                                       \
    } while (!__atomic_compare_exchange_n(ua, &old, nw, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));           \
    return emu::from_bits<T>(old);                                                                            \
  }                                                                                                           \
  static inline T atomicExch(T* a, T v) {                                                                     \
    return emu::from_bits<T>(__atomic_exchange_n(reinterpret_cast<U*>(a), (U)emu::to_bits<T>(v), __ATOMIC_RELAXED)); \
  }
EMU_ATOMIC_FLOAT(float, uint32_t)
EMU_ATOMIC_FLOAT(double, uint64_t)
#undef EMU_ATOMIC_FLOAT

// ---- math ---------------------------------------------------------------------------------------------------------
// <cmath> supplies expf, logf, sqrtf, tanhf, fmaf, erff, ... in the global namespace. Below are the CUDA-only ones.
// The fast intrinsics __expf, __logf, __sinf, __cosf, __powf come from glibc, which defines them as the full-precision
// functions; the others are below. All are computed at full precision here; their GPU error bounds are looser, and the
// conformance tolerances account for that.
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
static inline void sincosf_(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
#define sincosf(x, s, c) sincosf_((x), (s), (c))
static inline float __int_as_float(int i) { return emu::from_bits<float>((uint32_t)i); }
static inline int __float_as_int(float f) { return (int)(uint32_t)emu::to_bits(f); }
static inline float __uint_as_float(unsigned u) { return emu::from_bits<float>(u); }
static inline unsigned __float_as_uint(float f) { return (unsigned)emu::to_bits(f); }
static inline double __longlong_as_double(long long i) { return emu::from_bits<double>((uint64_t)i); }
static inline long long __double_as_longlong(double d) { return (long long)emu::to_bits(d); }
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
static inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
// CUDA's integer min/max overloads (device code calls min(a, b) on ints without std::).
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// ---- registration ---------------------------------------------------------------------------------------------------
namespace emu {
// Argument kinds as the Go driver encodes them: 'p' device pointer, 'i' signed int, 'u' unsigned int, 'f' float.
template <class A>
constexpr char arg_kind() {
  static_assert(std::is_pointer<A>::value || std::is_arithmetic<A>::value,
                "kernel arguments must be device pointers or scalars (cu copies 8 bytes per argument)");
  static_assert(sizeof(A) == 4 || sizeof(A) == 8, "kernel scalar arguments must be 4 or 8 bytes");
  return std::is_pointer<A>::value ? 'p'
         : std::is_floating_point<A>::value ? 'f'
         : std::is_signed<A>::value ? 'i'
                                    : 'u';
}
typedef void (*Thunk)(void (*fn)(), void** params);
int register_kernel(const char* name, void (*fn)(), Thunk thunk, int nargs, const char* kinds, const int* sizes);

template <class... A>
struct Unpack {
  template <size_t... I>
  static void call(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<A>::type*>(p[I])...);
  }
  static void thunk(void (*fn)(), void** p) {
    call(reinterpret_cast<void (*)(A...)>(fn), p, std::index_sequence_for<A...>{});
  }
};
template <class... A>
int register_signature(const char* name, void (*fn)(A...)) {
  static const char kinds[] = {arg_kind<A>()..., 0};
  static const int sizes[] = {(int)sizeof(A)..., 0};
  return register_kernel(name, reinterpret_cast<void (*)()>(fn), &Unpack<A...>::thunk, (int)sizeof...(A), kinds,
                         sizes);
}
}  // namespace emu

#define EMU_REGISTER(name) static const int emu_registered_##name = ::emu::register_signature(#name, &name);

#endif  // __CUDACC__
