// elementwise.cu -- elementwise ops over flat float32 arrays: add, axpy, scale, fill, SiLU forward and backward.
// All are grid-stride loops over n elements, launched by cuda/elementwise.go with blocks of 256 threads.
#include "common.cuh"

// y[i] = a[i] + b[i] for i < n. y may alias a or b (each element is read before it is written, by one thread).
extern "C" __global__ void add_f32(const float* a, const float* b, float* y, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) y[i] = a[i] + b[i];
}
EMU_REGISTER(add_f32)

// y[i] += alpha * x[i] for i < n.
extern "C" __global__ void axpy_f32(float alpha, const float* x, float* y, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) y[i] += alpha * x[i];
}
EMU_REGISTER(axpy_f32)

// x[i] *= alpha for i < n.
extern "C" __global__ void scale_f32(float alpha, float* x, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) x[i] *= alpha;
}
EMU_REGISTER(scale_f32)

// SiLU forward: y[i] = x[i] * sigmoid(x[i]), sigmoid(x) = 1 / (1 + exp(-x)). y may alias x.
// For x -> -inf, exp(-x) overflows to inf and y = x * 0 = -0, the limit; no NaN for finite x.
extern "C" __global__ void silu_fwd_f32(const float* x, float* y, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) y[i] = silu_f32(x[i]);
}
EMU_REGISTER(silu_fwd_f32)

// SiLU backward, accumulating: dx[i] += dy[i] * s * (1 + x[i] * (1 - s)) with s = sigmoid(x[i]),
// the derivative of x*s(x) being s + x*s*(1-s).
extern "C" __global__ void silu_bwd_f32(const float* x, const float* dy, float* dx, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) dx[i] = silu_grad_acc(dx[i], dy[i], x[i]);
}
EMU_REGISTER(silu_bwd_f32)
