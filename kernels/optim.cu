// optim.cu -- the optimizer over the flat parameter buffer: AdamW and the EMA of the weights. Launched by
// cuda/optim.go.
#include "common.cuh"

// AdamW (torch.optim.AdamW), elementwise over n parameters; the host forms decay = LR·WeightDecay and the bias
// corrections rc1 = 1/(1−β1^step), rc2 = 1/(1−β2^step) in float64. Unfused it is:
//   g' = gscale·g;  m = β1·m + (1−β1)·g';  v = β2·v + (1−β2)·g'²
//   p  = p − decay·p − lr·(m·rc1)/(√(v·rc2) + eps)
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long long n, float lr, float beta1,
                                     float beta2, float eps, float decay, float gscale, float rc1, float rc2) {
  for (long long i = global_index(); i < n; i += global_stride()) {
    const float gi = gscale * g[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i];
    p[i] = pi - decay * pi - lr * (mi * rc1) / (sqrtf(vi * rc2) + eps);
  }
}
EMU_REGISTER(adamw_f32)

// EMA of the weights: e[i] = decay·e[i] + (1−decay)·p[i].
extern "C" __global__ void ema_f32(float* e, const float* p, float decay, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) e[i] = decay * e[i] + (1.0f - decay) * p[i];
}
EMU_REGISTER(ema_f32)
