// philox.cuh: the project's counter-based RNG, Philox-4x32-10, as __host__ __device__ C++.
//
// This is the twin of the Go package github.com/ddpmgo/ddpm/rng and returns the same bits for every draw
// (rng's TestHeaderMatchesGo compiles this file with g++ and compares). Keep the two in step: change one, change both.
//
// Draw i of (seed, stream) reads lane i%4 of Philox block i/4:
//   key     = {seed & 0xffffffff, seed >> 32}
//   counter = {block & 0xffffffff, block >> 32, stream, 0}        (block = i >> 2, lane = i & 3)
// philox_uint32 is that word, philox_uniform maps it to (0, 1), philox_normal is lane i%4 of the four Box-Muller
// normals of the block (lanes 0/1: cos/sin of words 0,1; lanes 2/3: cos/sin of words 2,3).
//
// Bit-exact float maths: only integer operations, single float32 +, -, * (round to nearest even, never fused) and
// one correctly rounded sqrt. Under nvcc (device code) every float op is spelled __fadd_rn/__fmul_rn/__fsqrt_rn,
// which the compiler may not contract into FMAs. On the host, compile with -ffp-contract=off (g++/clang) and without
// -ffast-math; x86-64 evaluates float in SSE single precision (FLT_EVAL_METHOD 0). ln and sin/cos are our own
// Cephes-derived polynomials, not the libm/CUDA functions, which differ in the last bits between implementations.
//
// Without nvcc (g++ through the kernels' CPU shim) __host__/__device__/__forceinline__ are defined away here
// unless the includer already defined them.
#ifndef DDPM_PHILOX_CUH
#define DDPM_PHILOX_CUH

#ifndef __CUDACC__
#ifndef __host__
#define __host__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#include <math.h>
#endif

#define PHILOX_FN static __host__ __device__ __forceinline__

// Streams of the project; the same numbers as rng.Stream*. Append, never renumber.
#define PHILOX_STREAM_INIT 1u     // weight initialisation
#define PHILOX_STREAM_TIMESTEP 2u // training timesteps
#define PHILOX_STREAM_NOISE 3u    // training noise eps
#define PHILOX_STREAM_SAMPLER 4u  // sampler noise x_T and z
#define PHILOX_STREAM_SHUFFLE 5u  // data-set order
#define PHILOX_STREAM_FLIP 6u     // horizontal flips
#define PHILOX_STREAM_DROPOUT 7u  // dropout masks
#define PHILOX_STREAM_NLL 8u      // likelihood evaluation (host only so far)

struct philox4x32_t {
  unsigned int x, y, z, w;
};

// ---- float32 operations that are never contracted ----
PHILOX_FN float philox_fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
PHILOX_FN float philox_fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
PHILOX_FN float philox_fsub(float a, float b) { return philox_fadd(a, -b); }
PHILOX_FN float philox_fsqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return sqrtf(a);
#endif
}
// Index of the highest set bit of k (k != 0).
PHILOX_FN int philox_ilog2(unsigned int k) {
#ifdef __CUDA_ARCH__
  return 31 - __clz(k);
#else
  return 31 - __builtin_clz(k);
#endif
}

// ---- Philox-4x32-10 (Random123's philox4x32_R(10, ctr, key)) ----
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

PHILOX_FN void philox_mulhilo(unsigned int a, unsigned int b, unsigned int* hi, unsigned int* lo) {
#ifdef __CUDA_ARCH__
  *hi = __umulhi(a, b);
  *lo = a * b;
#else
  unsigned long long p = (unsigned long long)a * (unsigned long long)b;
  *hi = (unsigned int)(p >> 32);
  *lo = (unsigned int)p;
#endif
}

// One round: ctr = {hi1 ^ ctr.y ^ k0, lo1, hi0 ^ ctr.w ^ k1, lo0}, (hi0, lo0) = M0*ctr.x, (hi1, lo1) = M1*ctr.z.
PHILOX_FN philox4x32_t philox_round(philox4x32_t c, unsigned int k0, unsigned int k1) {
  unsigned int hi0, lo0, hi1, lo1;
  philox_mulhilo(PHILOX_M0, c.x, &hi0, &lo0);
  philox_mulhilo(PHILOX_M1, c.z, &hi1, &lo1);
  philox4x32_t r;
  r.x = hi1 ^ c.y ^ k0;
  r.y = lo1;
  r.z = hi0 ^ c.w ^ k1;
  r.w = lo0;
  return r;
}

// Philox-4x32 with 10 rounds; the key is bumped by (W0, W1) before rounds 2..10.
PHILOX_FN philox4x32_t philox4x32_10(philox4x32_t ctr, unsigned int key0, unsigned int key1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      key0 += PHILOX_W0;
      key1 += PHILOX_W1;
    }
    ctr = philox_round(ctr, key0, key1);
  }
  return ctr;
}

// Block `block` of (seed, stream): the four words behind draws 4*block .. 4*block+3.
PHILOX_FN philox4x32_t philox_block(unsigned long long seed, unsigned int stream, unsigned long long block) {
  philox4x32_t c;
  c.x = (unsigned int)block;
  c.y = (unsigned int)(block >> 32);
  c.z = stream;
  c.w = 0u;
  return philox4x32_10(c, (unsigned int)seed, (unsigned int)(seed >> 32));
}

PHILOX_FN unsigned int philox_lane(philox4x32_t v, unsigned int lane) {
  return lane == 0 ? v.x : lane == 1 ? v.y : lane == 2 ? v.z : v.w;
}

// ---- transforms (see rng/transform.go for the maths) ----

// (0, 1): float((u >> 8) | 1) * 2^-24, exact.
PHILOX_FN float philox_uniform_from_bits(unsigned int u) {
  return philox_fmul((float)((u >> 8) | 1u), 5.9604644775390625e-08f /* 2^-24 */);
}

// ln(k / 2^24) for odd k in [1, 2^24): integer range reduction, then Cephes logf's polynomial.
PHILOX_FN float philox_log_unit(unsigned int k) {
  int e = philox_ilog2(k);
  float m = philox_fmul((float)k, philox_fmul((float)(1u << (23 - e)), 1.1920928955078125e-07f /* 2^-23 */));
  if (m > 1.4142135f) {
    m = philox_fmul(m, 0.5f);
    e++;
  }
  float fe = (float)(e - 24);
  float f = philox_fsub(m, 1.0f);
  float z = philox_fmul(f, f);
  float y = philox_fmul(0.070376836f, f);
  y = philox_fmul(philox_fadd(y, -0.1151461f), f);
  y = philox_fmul(philox_fadd(y, 0.116769984f), f);
  y = philox_fmul(philox_fadd(y, -0.12420141f), f);
  y = philox_fmul(philox_fadd(y, 0.14249323f), f);
  y = philox_fmul(philox_fadd(y, -0.16668057f), f);
  y = philox_fmul(philox_fadd(y, 0.20000714f), f);
  y = philox_fmul(philox_fadd(y, -0.24999994f), f);
  y = philox_fadd(y, 0.3333333f);
  y = philox_fmul(y, f);
  y = philox_fmul(y, z);
  y = philox_fadd(y, philox_fmul(fe, -0.00021219444f));
  y = philox_fsub(y, philox_fmul(0.5f, z));
  float r = philox_fadd(f, y);
  return philox_fadd(r, philox_fmul(fe, 0.693359375f));
}

// sin and cos of 2*pi*k/2^24 for odd k in [1, 2^24): exact quadrant reduction, then Cephes sinf/cosf polynomials.
PHILOX_FN void philox_sincos_2pi(unsigned int k, float* sin_out, float* cos_out) {
  unsigned int q = (k + (1u << 21)) >> 22;
  int d = (int)k - (int)(q << 22);
  float x = philox_fmul(philox_fmul((float)d, 2.384185791015625e-07f /* 2^-22 */), 1.5707964f);
  float z = philox_fmul(x, x);

  float s = philox_fmul(-0.00019515296f, z);
  s = philox_fmul(philox_fadd(s, 0.008332161f), z);
  s = philox_fmul(philox_fadd(s, -0.16666655f), z);
  s = philox_fmul(s, x);
  s = philox_fadd(s, x);

  float c = philox_fmul(2.4433157e-05f, z);
  c = philox_fmul(philox_fadd(c, -0.0013887316f), z);
  c = philox_fmul(philox_fadd(c, 0.041666646f), z);
  c = philox_fmul(c, z);
  c = philox_fsub(c, philox_fmul(0.5f, z));
  c = philox_fadd(c, 1.0f);

  switch (q & 3u) {
    case 0: *sin_out = s; *cos_out = c; break;
    case 1: *sin_out = c; *cos_out = -s; break;
    case 2: *sin_out = -s; *cos_out = -c; break;
    default: *sin_out = -c; *cos_out = s; break;
  }
}

// Box-Muller: r = sqrt(-2 ln u(a)), theta = 2 pi u(b); z0 = r cos theta, z1 = r sin theta.
PHILOX_FN void philox_box_muller(unsigned int a, unsigned int b, float* z0, float* z1) {
  float r = philox_fsqrt(philox_fmul(-2.0f, philox_log_unit((a >> 8) | 1u)));
  float s, c;
  philox_sincos_2pi((b >> 8) | 1u, &s, &c);
  *z0 = philox_fmul(r, c);
  *z1 = philox_fmul(r, s);
}

// ---- per-draw API: the i-th draw of (seed, stream) ----

PHILOX_FN unsigned int philox_uint32(unsigned long long seed, unsigned int stream, unsigned long long i) {
  return philox_lane(philox_block(seed, stream, i >> 2), (unsigned int)(i & 3u));
}

PHILOX_FN float philox_uniform(unsigned long long seed, unsigned int stream, unsigned long long i) {
  return philox_uniform_from_bits(philox_uint32(seed, stream, i));
}

// Integer in [0, n) by multiply-shift, (u * n) >> 32; 1 <= n <= 2^32.
PHILOX_FN unsigned int philox_intn(unsigned long long seed, unsigned int stream, unsigned long long i,
                                   unsigned long long n) {
  return (unsigned int)(((unsigned long long)philox_uint32(seed, stream, i) * n) >> 32);
}

PHILOX_FN float philox_normal(unsigned long long seed, unsigned int stream, unsigned long long i) {
  philox4x32_t v = philox_block(seed, stream, i >> 2);
  unsigned int lane = (unsigned int)(i & 3u);
  float z0, z1;
  if (lane < 2u) {
    philox_box_muller(v.x, v.y, &z0, &z1);
  } else {
    philox_box_muller(v.z, v.w, &z0, &z1);
  }
  return (lane & 1u) ? z1 : z0;
}

// The four normals of block `block` (draws 4*block .. 4*block+3), for kernels where one thread writes four elements.
PHILOX_FN void philox_normal4(unsigned long long seed, unsigned int stream, unsigned long long block, float out[4]) {
  philox4x32_t v = philox_block(seed, stream, block);
  philox_box_muller(v.x, v.y, &out[0], &out[1]);
  philox_box_muller(v.z, v.w, &out[2], &out[3]);
}

#endif  // DDPM_PHILOX_CUH
