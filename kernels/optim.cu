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

// The clipping factor on the device, so that the host need not read the gradient norm every step. scalars holds
// [‖G‖², loss_0 … loss_{A−1}] (SumSquares and the A micro-batch losses); with gnorm = √‖G‖²/A (the norm of the mean
// gradient) it writes, in double as the host's train.ClipScale,
//   ctl[0] = clip/A,  clip = max_norm > 0 ? min(1, max_norm/(gnorm + 1e-6)) : 1     (AdamW's GradScale)
//   ctl[1] = 1 if this step is to be skipped, else 0: ‖G‖² or a loss is NaN/Inf; with sticky ≠ 0 it stays 1 once set
//            (a run that stops on a non-finite loss keeps the weights of the last good step)
//   ctl[2] += 1 for each non-finite step (the count the host reads with the metrics)
// One thread.
extern "C" __global__ void clip_scale_f32(const float* scalars, float* ctl, int A, double max_norm, int sticky) {
  if (global_index() != 0) return;
  bool bad = !isfinite(scalars[0]);
  for (int k = 0; k < A; k++) bad = bad || !isfinite(scalars[1 + k]);
  const double gnorm = sqrt((double)scalars[0]) / (double)A;
  double clip = 1.0;
  if (max_norm > 0.0) clip = fmin(1.0, max_norm / (gnorm + 1e-6));
  ctl[0] = (float)(clip / (double)A);
  ctl[1] = (bad || (sticky && ctl[1] != 0.0f)) ? 1.0f : 0.0f;
  if (bad) ctl[2] += 1.0f;
}
EMU_REGISTER(clip_scale_f32)

// adamw_f32 with GradScale read from the device (ctl[0], written by clip_scale_f32); does nothing when ctl[1] ≠ 0
// (a skipped step).
extern "C" __global__ void adamw_dev_f32(float* p, const float* g, float* m, float* v, long long n, float lr,
                                         float beta1, float beta2, float eps, float decay, const float* ctl, float rc1,
                                         float rc2) {
  if (ctl[1] != 0.0f) return;
  const float gscale = ctl[0];
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
EMU_REGISTER(adamw_dev_f32)

// ema_f32, doing nothing when ctl[1] ≠ 0 (a skipped step).
extern "C" __global__ void ema_dev_f32(float* e, const float* p, float decay, long long n, const float* ctl) {
  if (ctl[1] != 0.0f) return;
  for (long long i = global_index(); i < n; i += global_stride()) e[i] = decay * e[i] + (1.0f - decay) * p[i];
}
EMU_REGISTER(ema_dev_f32)
